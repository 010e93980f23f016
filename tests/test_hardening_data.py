"""Issue 14 (hardening), the data loaders: masks stored beside images, crops that cut defects away, an MVTec-layout
test split whose normal folder is not `good`, 16-bit and transparent PNGs, bad sizes. Synthetic folders only."""
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import adtutor.data as D
from adtutor.data import Folder, MVTecAD, Transform, read_image


def img(p, size=(40, 30), value=None, seed=0):
    "A small noisy photo-like image (many distinct values), written with PIL."
    p = Path(p); p.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.RandomState(seed).randint(0, 255, (size[1], size[0], 3), dtype=np.uint8) if value is None else \
        np.full((size[1], size[0], 3), value, np.uint8)
    Image.fromarray(a).save(p)
    return p

def mask(p, size=(40, 30), box=(10, 5, 30, 20)):
    a = np.zeros(size[::-1], np.uint8)
    if box: a[box[1]:box[3], box[0]:box[2]] = 255
    p = Path(p); p.parent.mkdir(parents=True, exist_ok=True); Image.fromarray(a).save(p)
    return p

def magnetic_tile(root, n_free=6, n_def=3, kinds=('Blowhole', 'Crack')):
    "The Magnetic-Tile layout: MT_<kind>/Imgs/<stem>.jpg with its mask <stem>.png beside it (all-black masks for MT_Free)."
    for i in range(n_free):
        img(root / f'MT_Free/Imgs/exp1_num_{i}.jpg', seed=i); mask(root / f'MT_Free/Imgs/exp1_num_{i}.png', box=None)
    for k in kinds:
        for i in range(n_def):
            img(root / f'MT_{k}/Imgs/exp2_num_{i}.jpg', seed=10 + i); mask(root / f'MT_{k}/Imgs/exp2_num_{i}.png')
    return root

MT = dict(normal_dir='MT_Free/Imgs', abnormal_dir=['MT_Blowhole/Imgs', 'MT_Crack/Imgs'], size=32, crop=None)


# ---------------------------------------------------------------------------------------------- 1. masks beside images
def test_split_images_masks_same_stem_and_suffix(tmp_path):
    a, am = img(tmp_path / 'a.jpg'), mask(tmp_path / 'a.png')                # same stem, the binary one is the mask
    b, bm = img(tmp_path / 'b.png'), mask(tmp_path / 'b_mask.png')           # mask suffix
    c, cg = img(tmp_path / 'c.png'), mask(tmp_path / 'c_gt.bmp')
    d = img(tmp_path / 'd.png')                                              # no mask
    orphan = mask(tmp_path / 'e_mask.png')                                   # a mask whose image is missing
    images, pairs, skipped = D.split_images_masks(sorted(tmp_path.iterdir()))
    assert images == [a, b, c, d] and pairs == {a: am, b: bm, c: cg}
    assert [p for p, _ in skipped] == [am, bm, cg, orphan] and all(why for _, why in skipped)

def test_split_images_masks_keeps_two_photos_with_one_stem(tmp_path):
    a1, a2 = img(tmp_path / 'a.jpg', seed=1), img(tmp_path / 'a.png', seed=2)   # two photos, neither binary: both images
    images, pairs, skipped = D.split_images_masks([a1, a2])
    assert images == [a1, a2] and not pairs and not skipped

def test_folder_magnetic_tile_layout_never_takes_masks_as_images(tmp_path):
    magnetic_tile(tmp_path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        tr = Folder(tmp_path, split='train', **MT)
    assert all(p.suffix == '.jpg' for p in tr.paths) and len(tr) == 6 - 1      # 20 % of 6 normals held out
    assert any('MT_Free/Imgs' in str(x.message) and 'mask' in str(x.message) for x in w), [str(x.message) for x in w]
    te = Folder(tmp_path, split='test', **MT)
    assert all(p.suffix == '.jpg' for p in te.paths) and te.labels.sum() == 6
    # masks found beside the defective images are used, never the image itself
    assert te.has_masks and all(s.mask.suffix == '.png' and s.mask.stem == s.path.stem for s in te.samples if s.label)
    # generic leaf folder (Imgs): the defect type is the parent folder's name
    assert sorted(set(te.defects)) == ['MT_Blowhole', 'MT_Crack', 'good']
    it = te[int(np.argmax(te.labels))]
    assert it['mask'].sum() > 0

def test_folder_mask_dir_equal_to_image_folder_pairs_properly(tmp_path):
    magnetic_tile(tmp_path, kinds=('Blowhole',))
    te = Folder(tmp_path, split='test', normal_dir='MT_Free/Imgs', abnormal_dir='MT_Blowhole/Imgs', mask_dir='MT_Blowhole/Imgs',
                size=32, crop=None)
    d = [s for s in te.samples if s.label]
    assert len(d) == 3 and all(s.mask != s.path and s.mask.stem == s.path.stem and s.mask.suffix == '.png' for s in d)
    assert all(p.suffix == '.jpg' for p in te.paths)

def test_folder_defect_names_and_found_report(tmp_path, capsys):
    magnetic_tile(tmp_path)
    te = Folder(tmp_path, split='test', defect_names={'MT_Blowhole/Imgs': 'blowhole', 'MT_Crack/Imgs': 'crack'}, **MT)
    assert sorted(set(te.defects)) == ['blowhole', 'crack', 'good']
    rows = te.found(verbose=True)
    out = capsys.readouterr().out
    assert 'MT_Free/Imgs' in out and 'MT_Blowhole/Imgs' in out and 'skipped' in out
    byf = {r['folder']: r for r in rows}
    assert byf['MT_Blowhole/Imgs']['images'] == 3 and byf['MT_Blowhole/Imgs']['masks'] == 3
    assert byf['MT_Free/Imgs']['skipped'] == 6
    with pytest.raises(ValueError, match='defect_names'):
        Folder(tmp_path, split='test', defect_names={'MT_Nope/Imgs': 'x'}, **MT)


# ---------------------------------------------------------------------------------------------- 2. crops that cut defects
def crop_layout(root, n=4):
    for i in range(4): img(root / f'cat/train/good/{i}.png', size=(64, 64), seed=i)
    img(root / 'cat/test/good/0.png', size=(64, 64))
    for i in range(n):   # defects in the outer 12.5 % band (removed by 256 -> 224) or in the centre
        img(root / f'cat/test/edge/{i}.png', size=(64, 64), seed=20 + i)
        mask(root / f'cat/ground_truth/edge/{i}_mask.png', size=(64, 64), box=(0, 0, 4, 4) if i < 2 else (28, 28, 36, 36))
    return root

def test_crop_that_removes_defects_warns_with_counts(tmp_path):
    crop_layout(tmp_path)
    with pytest.warns(UserWarning, match=r'2 of 4 defective'):
        te = MVTecAD(tmp_path, 'cat', 'test', 256, 224)
    loss = te.crop_loss()
    assert loss['all_lost'] == 2 and loss['defective'] == 4 and loss['mean_lost'] == pytest.approx(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        MVTecAD(tmp_path, 'cat', 'test', 256, None)          # no crop: nothing to say
        MVTecAD(tmp_path, 'cat', 'train', 256, 224)          # no masks: nothing to say


# ---------------------------------------------------------------------------------------------- 3. normal test folder not named good
def test_mvtec_normal_test_folder_not_named_good(tmp_path):
    for i in range(3): img(tmp_path / f'cat/train/good/{i}.png', seed=i)
    for i in range(2): img(tmp_path / f'cat/test/0/{i}.png'); img(tmp_path / f'cat/test/1/{i}.png'); mask(tmp_path / f'cat/ground_truth/1/{i}_mask.png')
    with pytest.raises(FileNotFoundError) as e: MVTecAD(tmp_path, 'cat', 'test', 32, None)
    msg = str(e.value)
    assert 'test/0' in msg and 'test/good' in msg and 'good_dir' in msg and 'ground_truth/0' in msg
    te = MVTecAD(tmp_path, 'cat', 'test', 32, None, good_dir='0')
    assert len(te) == 4 and te.labels.sum() == 2 and sorted(set(te.defects)) == ['1', 'good']


# ---------------------------------------------------------------------------------------------- 4. 16-bit and alpha
def test_16bit_png_scaled_by_bit_depth(tmp_path):
    g = np.tile(np.linspace(0, 1, 16), (8, 1))
    for top in (1000, 4000): Image.fromarray((g * top).astype(np.uint16)).save(tmp_path / f'g{top}.png')
    Image.fromarray(np.full((8, 16), 1000, np.uint16)).save(tmp_path / 'flat.png')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        a, b, f = (np.asarray(read_image(tmp_path / n)) for n in ('g1000.png', 'g4000.png', 'flat.png'))
    assert Image.open(tmp_path / 'g1000.png').mode.startswith('I')
    assert a.max() == round(1000 / 65535 * 255) and b.max() == round(4000 / 65535 * 255) and not np.array_equal(a, b)
    assert f.max() == f.min() == round(1000 / 65535 * 255)          # a flat image stays dark, not white

def test_fully_transparent_rgba_keeps_its_colours(tmp_path):
    a = np.zeros((8, 8, 4), np.uint8); a[..., :3] = (200, 100, 50)          # alpha 0 everywhere
    Image.fromarray(a, 'RGBA').save(tmp_path / 'clear.png')
    with pytest.warns(UserWarning, match='alpha'):
        x = np.asarray(read_image(tmp_path / 'clear.png'))
    assert (x == (200, 100, 50)).all()
    a[:, :4, 3] = 255                                                        # half transparent: composited over black
    Image.fromarray(a, 'RGBA').save(tmp_path / 'half.png')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        y = np.asarray(read_image(tmp_path / 'half.png'))
    assert (y[:, :4] == (200, 100, 50)).all() and (y[:, 4:] == 0).all()


# ---------------------------------------------------------------------------------------------- 5. parameter checks
@pytest.mark.parametrize('kw, word', [(dict(size=0), 'size'), (dict(size=-8), 'size'), (dict(size=(32, 0)), 'size'),
                                      (dict(size=32, crop=0), 'crop'), (dict(size=32, crop=-1), 'crop'),
                                      (dict(size=32, crop=64), 'crop'), (dict(size=2.5), 'size')])
def test_bad_size_and_crop_raise_clear_errors(tmp_path, kw, word):
    for i in range(3): img(tmp_path / f'cat/train/good/{i}.png', seed=i)
    with pytest.raises(ValueError, match=word): Transform(**kw)
    kw = {'crop': None, **kw}
    with pytest.raises(ValueError, match=word): MVTecAD(tmp_path, 'cat', 'train', **kw)

def test_quick_subset_size_checked(tmp_path):
    for i in range(3): img(tmp_path / f'cat/train/good/{i}.png', seed=i); img(tmp_path / f'cat/test/good/{i}.png', seed=i)
    assert len(D.get_data(str(tmp_path), 'cat', 32, None, quick=True, n_train_quick=1)[0]) == 1
    with pytest.raises(ValueError, match='n_train_quick'):
        D.get_data(str(tmp_path), 'cat', 32, None, quick=True, n_train_quick=0)
