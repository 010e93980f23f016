"""Data layer: every loader on small fake layouts (counts, labels, masks, errors), downloads (adtutor.download) on local archives,
the disk cache, and the real MVTec AD bottle category when ADTUTOR_DATA provides it."""
import json, os, tarfile, warnings, zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import adtutor.data as D
from adtutor.data import (AnomalyDataset, BTAD, DATASETS, Folder, MPDD, MVTec3D, MVTecAD, Transform, VisA, load_dataset,
                          read_image, read_mask)
from adtutor.download import (DOWNLOADS, download_dataset, download_mpdd, download_mvtec, extract, fetch, file_hash)
from conftest import MVTEC as REAL, needs_bottle

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- helpers
def img(p, size=(40, 30), mode='RGB', value=128):
    p = Path(p); p.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(p)
    return p

def mask(p, size=(40, 30), box=(10, 5, 30, 20), value=255):
    a = np.zeros(size[::-1], np.uint8); a[box[1]:box[3], box[0]:box[2]] = value
    p = Path(p); p.parent.mkdir(parents=True, exist_ok=True); Image.fromarray(a).save(p)
    return p

def mvtec_layout(root, cat='bottle', n_train=4, defects=('crack', 'scratch'), n_def=2, n_good=3, suffix='_mask'):
    for i in range(n_train): img(root / cat / f'train/good/{i:03d}.png', value=i)
    for i in range(n_good): img(root / cat / f'test/good/{i:03d}.png')
    for d in defects:
        for i in range(n_def):
            img(root / cat / f'test/{d}/{i:03d}.png'); mask(root / cat / f'ground_truth/{d}/{i:03d}{suffix}.png')
    return root

def raises(exc, fn, *words):
    with pytest.raises(exc) as e: fn()
    for w in words: assert w in str(e.value), f'{w!r} not in message: {e.value}'
    return str(e.value)

def marker_ok(item_mask, x):
    "The magenta-painted pixels of the transformed image coincide with the transformed mask, up to the border band."
    from scipy import ndimage
    painted = ((x[0] + x[2]) / 2 - x[1] > 0.5).numpy()
    gt = item_mask.numpy().astype(bool)
    band = ndimage.binary_dilation(gt, iterations=2) & ~ndimage.binary_erosion(gt, iterations=2)
    return painted.any() and not ((painted ^ gt) & ~band).any()

def nearest_ref(a, tr):
    "Independent reference of Transform.mask: PIL's nearest source index (accumulated s/2 + i*s, truncated), then the crop."
    def src(n_out, n_in):
        s = n_in / n_out; v, out = s / 2, []
        for _ in range(n_out): out.append(int(v)); v += s
        return np.array(out)
    (h, w) = (tr.size, tr.size) if isinstance(tr.size, int) else tr.size
    r = a[src(h, a.shape[0])][:, src(w, a.shape[1])]
    if tr.crop:
        ch, cw = (tr.crop, tr.crop) if isinstance(tr.crop, int) else tr.crop
        top, left = int(round((h - ch) / 2)), int(round((w - cw) / 2)); r = r[top:top + ch, left:left + cw]
    return (r > 0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- MVTec AD layout
def test_mvtec_counts_labels_masks(tmp_path):
    mvtec_layout(tmp_path)
    (tmp_path / 'bottle/train/good/.DS_Store').write_bytes(b'\0'); (tmp_path / 'bottle/test/crack/._000.png').write_bytes(b'\0')
    (tmp_path / 'bottle/test/notes.txt').write_text('stray file')
    tr, te = MVTecAD(tmp_path, 'bottle', 'train', 32, None), MVTecAD(tmp_path, 'bottle', 'test', 32, None)
    assert len(tr) == 4 and tr.labels.sum() == 0
    assert len(te) == 7 and te.labels.sum() == 4 and sorted(set(te.defects)) == ['crack', 'good', 'scratch']
    for s in te.samples:
        if s.label: assert s.mask.name == f'{s.path.stem}_mask.png' and s.mask.parent.name == s.defect
        else: assert s.mask is None
    it = te[[i for i, s in enumerate(te.samples) if s.label][0]]
    assert it['image'].shape == (3, 32, 32) and it['image'].dtype == torch.float32 and 0 <= it['image'].min() <= it['image'].max() <= 1
    assert it['mask'].shape == (32, 32) and it['mask'].dtype == torch.uint8 and it['mask'].sum() > 0 and it['label'] == 1
    good = te[[i for i, s in enumerate(te.samples) if not s.label][0]]
    assert good['mask'].sum() == 0 and good['defect'] == 'good'
    assert te.has_masks and te.summary().loc['crack', 'masks'] == 2

def test_mvtec_mask_without_suffix_is_found(tmp_path):
    mvtec_layout(tmp_path, suffix='')
    assert MVTecAD(tmp_path, 'bottle', 'test', 32, None).has_masks

def test_mvtec_errors(tmp_path):
    raises(FileNotFoundError, lambda: MVTecAD(tmp_path / 'nope', 'bottle'), 'does not exist', 'ADTUTOR_DATA')
    raises(FileNotFoundError, lambda: MVTecAD(tmp_path, 'bottle'), "'bottle' not found", str(tmp_path))
    mvtec_layout(tmp_path)
    raises(FileNotFoundError, lambda: MVTecAD(tmp_path, 'botle'), "Did you mean 'bottle'")
    raises(ValueError, lambda: MVTecAD(tmp_path, 'bottle', 'val'), "'train' or 'test'")
    (tmp_path / 'bottle/ground_truth/crack/001_mask.png').unlink()
    raises(FileNotFoundError, lambda: MVTecAD(tmp_path, 'bottle', 'test'), '1 defective', '001.png', 'ground_truth')
    mvtec_layout(tmp_path / 'b', n_train=0)
    (tmp_path / 'b/bottle/train/good/.DS_Store').parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / 'b/bottle/train/good/.DS_Store').write_bytes(b'\0')
    raises(ValueError, lambda: MVTecAD(tmp_path / 'b', 'bottle', 'train'), 'holds no images', 'train/good')
    (tmp_path / 'c/bottle/test').mkdir(parents=True)
    raises(FileNotFoundError, lambda: MVTecAD(tmp_path / 'c', 'bottle', 'train'), 'train', 'missing')
    (tmp_path / 'c/bottle/test/good').mkdir(); (tmp_path / 'c/bottle/test/good/.DS_Store').write_bytes(b'')
    raises(ValueError, lambda: MVTecAD(tmp_path / 'c', 'bottle', 'test'), 'test set', 'holds no images', 'test/good/')

def test_bad_images_and_masks(tmp_path):
    mvtec_layout(tmp_path, n_train=1)
    g = tmp_path / 'bottle/train/good'
    img(g / 'gray1.png', mode='L'); img(g / 'gray2.png', mode='L'); img(g / 'rgba.png', mode='RGBA', value=(128, 128, 128, 255)); img(g / 'pal.png', mode='P')
    img(g / 'g16.png', mode='I;16', value=1000)
    (g / 'zcorrupt.png').write_bytes(b'\x89PNG not really')
    ds = MVTecAD(tmp_path, 'bottle', 'train', 16, None)
    by = {Path(s.path).name: i for i, s in enumerate(ds.samples)}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        for n in ['gray1.png', 'gray2.png', 'rgba.png', 'pal.png', 'g16.png']:
            x = ds[by[n]]['image']; assert x.shape == (3, 16, 16) and 0 <= x.min() and x.max() <= 1
    msgs = [str(m.message) for m in w]
    assert sum('are L,' in m for m in msgs) == 1, msgs        # one note per folder (and mode), not per image
    assert all(str(g) in m for m in msgs) and len(msgs) == 4   # L, RGBA, P, I;16
    raises(ValueError, lambda: ds[by['zcorrupt.png']], 'zcorrupt.png', 'corrupt')
    # wrong-size mask: error names both files and both sizes; check() collects every problem
    mask(tmp_path / 'bottle/ground_truth/crack/000_mask.png', size=(20, 20))
    te = MVTecAD(tmp_path, 'bottle', 'test', 16, None)
    i = next(i for i, s in enumerate(te.samples) if s.path.name == '000.png' and s.defect == 'crack')
    raises(ValueError, lambda: te[i], '20x20', '40x30', '000_mask.png', 'crack/000.png')
    probs = te.check(verbose=False)
    assert len(probs) == 1 and '20x20' in probs[0]
    assert len(MVTecAD(tmp_path, 'bottle', 'train', 16, None).check(verbose=False)) == 1
    # a mask of the wrong size is tolerated only when asked
    assert te.__class__(tmp_path, 'bottle', 'test', 16, None, check_masks=False)[i]['mask'].shape == (16, 16)

def test_read_mask_binarises(tmp_path):
    a = np.zeros((10, 12), np.uint8); a[2:5, 3:7] = 1; a[6:8, 1:3] = 7   # class map, not 0/255
    Image.fromarray(a).save(tmp_path / 'm.png')
    m = np.asarray(read_mask(tmp_path / 'm.png'))
    assert set(np.unique(m)) == {0, 255} and (m > 0).sum() == (a > 0).sum()
    raises(FileNotFoundError, lambda: read_mask(tmp_path / 'x.png', image_path='img.png'), 'x.png', 'img.png')
    raises(FileNotFoundError, lambda: read_image(tmp_path / 'none.png'), 'none.png')


# ---------------------------------------------------------------------------------------------- MPDD, MVTec 3D-AD
def test_mpdd(tmp_path, monkeypatch):
    mvtec_layout(tmp_path / 'mpdd', 'tubes', defects=('anomalous',), n_def=3)
    te = MPDD(tmp_path / 'mpdd', 'tubes', 'test', 32, None)
    assert len(te) == 6 and te.labels.sum() == 3 and te.has_masks
    monkeypatch.setenv('ADTUTOR_DATA', str(tmp_path))
    ds = load_dataset('mpdd', 'tubes', 'train', 32, None)
    assert type(ds) is MPDD and len(ds) == 4 and ds.root == tmp_path / 'mpdd'
    raises(FileNotFoundError, lambda: load_dataset('mpdd', 'tube'), "Did you mean 'tubes'")

def test_mvtec3d(tmp_path):
    c = tmp_path / 'bagel'
    for i in range(3): img(c / f'train/good/rgb/{i:03d}.png'); img(c / f'train/good/xyz/{i:03d}.tiff')
    for i in range(2): img(c / f'validation/good/rgb/{i:03d}.png')
    img(c / 'test/good/rgb/000.png'); mask(c / 'test/good/gt/000.png', box=(0, 0, 0, 0))
    for d in ('crack', 'hole'):
        for i in range(2): img(c / f'test/{d}/rgb/{i:03d}.png'); mask(c / f'test/{d}/gt/{i:03d}.png'); img(c / f'test/{d}/xyz/{i:03d}.tiff')
    tr, va, te = (MVTec3D(tmp_path, 'bagel', s, 32, None) for s in ('train', 'validation', 'test'))
    assert len(tr) == 3 and len(va) == 2 and len(te) == 5 and te.labels.sum() == 4
    assert all(s.path.parent.name == 'rgb' for s in te.samples)
    assert all(s.mask.parent.name == 'gt' and s.mask.name == s.path.name for s in te.samples if s.label)
    assert te[[i for i, s in enumerate(te.samples) if s.label][0]]['mask'].sum() > 0
    (c / 'test/hole/gt/001.png').unlink()
    raises(FileNotFoundError, lambda: MVTec3D(tmp_path, 'bagel', 'test'), 'no mask', 'hole/gt/001.png')
    (c / 'test/hole/rgb').rename(c / 'test/hole/RGB_')
    raises(FileNotFoundError, lambda: MVTec3D(tmp_path, 'bagel', 'test'), 'hole/rgb', 'missing')


# ---------------------------------------------------------------------------------------------- BTAD
def btad_layout(root, cat='01', ext='.bmp', mext='.png'):
    for i in range(4): img(root / cat / f'train/ok/{i:04d}{ext}')
    for i in range(2): img(root / cat / f'test/ok/{i:04d}{ext}')
    for i in range(3): img(root / cat / f'test/ko/{i:04d}{ext}'); mask(root / cat / f'ground_truth/ko/{i:04d}{mext}')
    return root

def test_btad(tmp_path):
    btad_layout(tmp_path); btad_layout(tmp_path, '03', '.bmp', '.bmp')
    for cat in ('01', '03'):
        tr, te = BTAD(tmp_path, cat, 'train', 32, None), BTAD(tmp_path, cat, 'test', 32, None)
        assert len(tr) == 4 and len(te) == 5 and te.labels.sum() == 3 and set(te.defects) == {'good', 'ko'} and te.has_masks
        assert te[4]['mask'].sum() > 0 and te[0]['mask'].sum() == 0
    assert DATASETS['btech'] is BTAD
    (tmp_path / '01/ground_truth/ko/0002.png').unlink()
    raises(FileNotFoundError, lambda: BTAD(tmp_path, '01', 'test'), 'no mask', '0002', 'ground_truth/ko')
    (tmp_path / '03/test/ko').rename(tmp_path / '03/test/bad')
    raises(FileNotFoundError, lambda: BTAD(tmp_path, '03', 'test'), 'test/ko', 'missing', 'bad')
    raises(FileNotFoundError, lambda: BTAD(tmp_path, '02'), "'02' not found")


# ---------------------------------------------------------------------------------------------- VisA
def visa_layout(root, cat='candle', n_train=4, n_test_good=2, n_anom=3):
    rows = [(cat, 'train', 'normal', f'{cat}/Data/Images/Normal/{i:04d}.JPG', '') for i in range(n_train)]
    rows += [(cat, 'test', 'normal', f'{cat}/Data/Images/Normal/{n_train + i:04d}.JPG', '') for i in range(n_test_good)]
    rows += [(cat, 'test', 'anomaly', f'{cat}/Data/Images/Anomaly/{i:03d}.JPG', f'{cat}/Data/Masks/Anomaly/{i:03d}.png') for i in range(n_anom)]
    for r in rows:
        img(root / r[3], size=(60, 40))
        if r[4]: mask(root / r[4], size=(60, 40), value=3)   # class maps, not 0/255
    (root / 'split_csv').mkdir(parents=True, exist_ok=True)
    with open(root / 'split_csv/1cls.csv', 'a' if (root / 'split_csv/1cls.csv').exists() else 'w') as f:
        if f.tell() == 0: f.write('object,split,label,image,mask\n')
        for r in rows: f.write(','.join(r) + '\n')
    return root

def test_visa_reads_official_split(tmp_path):
    visa_layout(tmp_path); visa_layout(tmp_path, 'pcb1', 2, 1, 1)
    img(tmp_path / 'candle/Data/Images/Normal/9999.JPG', size=(60, 40))   # on disk but not in the csv: not used
    tr, te = VisA(tmp_path, 'candle', 'train', 32, None), VisA(tmp_path, 'candle', 'test', 32, None)
    assert len(tr) == 4 and tr.labels.sum() == 0 and len(te) == 5 and te.labels.sum() == 3
    assert set(te.defects) == {'good', 'anomaly'} and te.has_masks
    m = te[[i for i, s in enumerate(te.samples) if s.label][0]]['mask']
    assert set(m.unique().tolist()) == {0, 1}                               # class map 3 binarised
    assert len(VisA(tmp_path, 'pcb1', 'test', 32, None)) == 2

def test_visa_errors(tmp_path):
    raises(FileNotFoundError, lambda: VisA(tmp_path, 'candle'), '1cls.csv', 'download_visa')
    visa_layout(tmp_path)
    raises(FileNotFoundError, lambda: VisA(tmp_path, 'capsules'), "'capsules' is not in", 'candle')
    (tmp_path / 'candle/Data/Masks/Anomaly/001.png').unlink()
    raises(FileNotFoundError, lambda: VisA(tmp_path, 'candle', 'test'), 'no mask', '001.png')
    (tmp_path / 'candle/Data/Images/Normal/0000.JPG').unlink()
    raises(FileNotFoundError, lambda: VisA(tmp_path, 'candle', 'train'), '1 image(s) listed', '0000.JPG')
    bad = tmp_path / 'bad.csv'
    bad.write_text('object,split,label,image,mask\ncandle,train,anomaly,candle/Data/Images/Anomaly/000.JPG,x.png\n')
    raises(ValueError, lambda: VisA(tmp_path, 'candle', 'train', split_csv=bad), 'line 2', 'normal images only')
    bad.write_text('obj,set,lab,img\n')
    raises(ValueError, lambda: VisA(tmp_path, 'candle', split_csv=bad), 'expected columns')

def test_visa_prepared_mvtec_layout(tmp_path):
    mvtec_layout(tmp_path, 'candle', defects=('bad',), suffix='')
    te = VisA(tmp_path, 'candle', 'test', 32, None)
    assert len(te) == 5 and te.has_masks and set(te.defects) == {'good', 'bad'}


# ---------------------------------------------------------------------------------------------- your own folder
def folder_layout(root, n_good=10, defects=('scratch', 'dent'), n_def=2, masks='masks', suffix='_mask'):
    for i in range(n_good): img(root / f'good/{i:02d}.jpg', value=i)
    for d in defects:
        for i in range(n_def):
            img(root / f'defect/{d}/{d}{i}.jpg')
            if masks: mask(root / masks / d / f'{d}{i}{suffix}.png')
    (root / 'good/.DS_Store').write_bytes(b'\0'); (root / 'defect/Thumbs.db').write_bytes(b'\0')
    return root

KW = dict(normal_dir='good', abnormal_dir='defect', size=32, crop=None)

def test_folder_held_out_split(tmp_path):
    folder_layout(tmp_path)
    tr, te = Folder(tmp_path, split='train', mask_dir='masks', **KW), Folder(tmp_path, split='test', mask_dir='masks', **KW)
    assert len(tr) == 8 and len(te) == 2 + 4 and te.labels.sum() == 4
    normals = {s.path for s in tr.samples} | {s.path for s in te.samples if not s.label}
    assert len(normals) == 10 and not {s.path for s in tr.samples} & {s.path for s in te.samples}   # disjoint, complete
    assert [s.path for s in Folder(tmp_path, split='test', **KW, mask_dir='masks').samples] == [s.path for s in te.samples]
    other = Folder(tmp_path, split='test', mask_dir='masks', seed=1, **KW)
    assert {s.path for s in other.samples if not s.label} != {s.path for s in te.samples if not s.label}
    assert sorted(set(te.defects)) == ['dent', 'good', 'scratch'] and te.has_masks
    for s in te.samples:
        if s.label: assert s.mask.name == f'{s.path.stem}_mask.png'
    assert len(Folder(tmp_path, split='train', test_fraction=0.5, **KW)) == 5
    # adding images keeps most of the held-out set (hash ranking, not a reshuffle)
    for i in range(10, 12): img(tmp_path / f'good/{i:02d}.jpg')
    te2 = Folder(tmp_path, split='test', mask_dir='masks', **KW)
    assert len({s.path for s in te2.samples if not s.label} & {s.path for s in te.samples if not s.label}) >= 1

def test_folder_masks_by_stem_and_options(tmp_path):
    folder_layout(tmp_path, masks='gt', suffix='')            # masks named like the images, no suffix
    img(tmp_path / 'defect/loose.jpg'); mask(tmp_path / 'gt/loose.png')   # image directly in defect/: type 'defect'
    for i in range(3): img(tmp_path / f'test_good/{i}.png')
    te = Folder(tmp_path, split='test', mask_dir='gt', normal_test_dir='test_good', **KW)
    assert len(te) == 3 + 5 and set(te.defects) == {'good', 'scratch', 'dent', 'defect'} and te.has_masks
    assert len(Folder(tmp_path, split='train', normal_test_dir='test_good', **KW)) == 10   # all normals train
    nomask = Folder(tmp_path, split='test', **KW)
    assert not nomask.has_masks and nomask[len(nomask) - 1]['mask'].sum() == 0
    multi = Folder(tmp_path, split='test', normal_dir='good', abnormal_dir=['defect/scratch', 'defect/dent'], size=32, crop=None)
    assert multi.labels.sum() == 4 and set(multi.defects) == {'good', 'scratch', 'dent'}

def test_folder_masks_inside_or_beside_the_defect_folder(tmp_path):
    for i in range(4): img(tmp_path / f'a/good/{i}.png'); img(tmp_path / f'b/good/{i}.png')
    for i in range(2):
        img(tmp_path / f'a/defect/{i}.png'); mask(tmp_path / f'a/defect/masks/{i}.png')         # mask folder inside defect/
        img(tmp_path / f'b/defect/cut/{i}.png'); mask(tmp_path / f'b/defect/cut/{i}_mask.png')   # masks beside the images
    a = Folder(tmp_path / 'a', split='test', mask_dir='defect/masks', **KW)
    assert a.labels.sum() == 2 and set(a.defects) == {'good', 'defect'} and a.has_masks
    b = Folder(tmp_path / 'b', split='test', mask_dir='defect', **KW)
    assert b.labels.sum() == 2 and set(b.defects) == {'good', 'cut'} and all(s.mask.name.endswith('_mask.png') for s in b.samples if s.label)

def test_folder_errors(tmp_path):
    folder_layout(tmp_path)
    raises(FileNotFoundError, lambda: Folder(tmp_path / 'nope'), 'does not exist', 'root=')
    raises(FileNotFoundError, lambda: Folder(tmp_path, normal_dir='ok'), 'good', 'defect', 'normal_dir=')
    raises(ValueError, lambda: Folder(tmp_path, split='test', normal_dir='good'), 'abnormal_dir=')
    raises(FileNotFoundError, lambda: Folder(tmp_path, split='test', normal_dir='good', abnormal_dir='defects'), 'defects', 'abnormal_dir=')
    raises(FileNotFoundError, lambda: Folder(tmp_path, split='test', mask_dir='mask', **KW), 'mask', 'mask_dir=')
    (tmp_path / 'masks/dent/dent1_mask.png').unlink()
    raises(FileNotFoundError, lambda: Folder(tmp_path, split='test', mask_dir='masks', **KW), '1 defective', 'dent1.jpg', 'mask_dir')
    (tmp_path / 'one/good').mkdir(parents=True); img(tmp_path / 'one/good/0.png')
    raises(ValueError, lambda: Folder(tmp_path / 'one'), 'at least 2', 'normal_test_dir')
    (tmp_path / 'empty/good').mkdir(parents=True); (tmp_path / 'empty/good/.DS_Store').write_bytes(b'')
    raises(ValueError, lambda: Folder(tmp_path / 'empty', test_fraction=0), 'no training images')
    raises(ValueError, lambda: Folder(tmp_path, test_fraction=1.0), 'test_fraction')
    (tmp_path / 'defect2').mkdir()
    raises(ValueError, lambda: Folder(tmp_path, split='test', normal_dir='good', abnormal_dir='defect2'), 'holds no images')

def test_folder_via_load_dataset(tmp_path, monkeypatch):
    folder_layout(tmp_path / 'cardboard')
    tr, te = D.get_data('folder', 'cardboard', 32, None, root=tmp_path, normal_dir='good', abnormal_dir='defect', mask_dir='masks')
    assert len(tr) == 8 and len(te) == 6 and te.root == tmp_path / 'cardboard'
    monkeypatch.setenv('ADTUTOR_DATA', str(tmp_path))
    assert len(load_dataset('folder', 'cardboard', 'test', 32, None, abnormal_dir='defect')) == 6


# ---------------------------------------------------------------------------------------------- entry point
def test_load_dataset_registry_and_errors(tmp_path, monkeypatch):
    assert {'mvtec', 'visa', 'btad', 'mpdd', 'mvtec3d', 'folder'} <= set(DATASETS)
    raises(ValueError, lambda: load_dataset('vsia', 'candle'), "unknown data 'vsia'", 'visa')
    monkeypatch.delenv('ADTUTOR_DATA', raising=False)
    raises(FileNotFoundError, lambda: load_dataset('visa', 'candle'), 'ADTUTOR_DATA is not set')
    monkeypatch.setenv('ADTUTOR_DATA', str(tmp_path))
    raises(FileNotFoundError, lambda: load_dataset('btad', '01'), str(tmp_path / 'btad'), 'does not exist')
    visa_layout(tmp_path / 'visa'); btad_layout(tmp_path / 'btad'); mvtec_layout(tmp_path / 'mvtec_ad')
    assert len(load_dataset('visa', None, 'test', 32, None)) == 5          # default category candle
    assert len(load_dataset('btad', None, 'train', 32, None)) == 4         # default category 01
    assert len(load_dataset('mvtec', None, 'train', 32, None)) == 4        # default category bottle
    assert len(load_dataset(str(tmp_path / 'mvtec_ad'), 'bottle', 'test', 32, None)) == 7
    raises(ValueError, lambda: load_dataset(str(tmp_path / 'mvtec_ad')), 'category is required')
    q_tr, q_te = D.get_data('mvtec', 'bottle', 32, None, quick=True, n_train_quick=2, n_test_quick=1)
    assert len(q_tr) == 2 and len(q_te) == 3 and set(q_te.defects) == {'good', 'crack', 'scratch'}


def test_builtin_is_named_builtin(monkeypatch, tmp_path):
    import sys, types
    mvtec_layout(tmp_path, 'widget')
    fake = types.SimpleNamespace(builtin_root=lambda: tmp_path, DEFAULT_CATEGORY='widget')
    monkeypatch.setitem(sys.modules, 'adtutor.synthetic', fake)
    tr, te = D.get_data('builtin', None, 32, None)
    assert tr.name == te.name == 'builtin' and te.category == 'widget' and len(te) == 7
    assert MVTecAD(tmp_path, 'widget').name == 'mvtec_ad'          # the class keeps its name


# ---------------------------------------------------------------------------------------------- transforms
@pytest.mark.parametrize('tr', [Transform(256, 224), Transform(224, None), Transform((96, 160), None), Transform((120, 200), (100, 160)),
                                Transform(64, 48)])
def test_transform_alignment_on_non_square_images(tmp_path, tr):
    rng = np.random.RandomState(0)
    a = rng.randint(0, 120, (150, 230, 3)).astype(np.uint8)      # never magenta enough to pass for the marker
    m = np.zeros((150, 230), np.uint8); m[40:90, 100:170] = 255; m[100:140, 10:40] = 255
    a[m > 0] = (255, 0, 255)                                   # paint the defect: the image carries its own mask
    Image.fromarray(a).save(tmp_path / 'x.png'); Image.fromarray(m).save(tmp_path / 'x_mask.png')
    ds = AnomalyDataset([D.Sample(tmp_path / 'x.png', 1, 'paint', tmp_path / 'x_mask.png')], tr.size, tr.crop)
    it = ds[0]
    assert it['image'].shape[1:] == tr.out_size == it['mask'].shape
    assert np.array_equal(it['mask'].numpy(), nearest_ref(m, tr))
    assert marker_ok(it['mask'], it['image'])
    shifted = torch.roll(it['mask'], shifts=6, dims=1)          # the check can fail: a 6-pixel shift is caught
    assert not marker_ok(shifted, it['image'])


# ---------------------------------------------------------------------------------------------- caches
def test_disk_cache_identical_hit_and_invalidation(tmp_path, monkeypatch):
    monkeypatch.setenv('ADTUTOR_CACHE', str(tmp_path / 'cache'))
    mvtec_layout(tmp_path / 'd')
    plain = MVTecAD(tmp_path / 'd', 'bottle', 'test', 24, None)
    cached = MVTecAD(tmp_path / 'd', 'bottle', 'test', 24, None, cache='disk')
    ref = [plain[i] for i in range(len(plain))]
    first = [cached[i] for i in range(len(cached))]
    assert len(list((tmp_path / 'cache/decoded').rglob('*.npz'))) == len(plain)
    def no_decode(p): raise AssertionError(f'{p} decoded despite the cache')
    monkeypatch.setattr(D, 'read_image', no_decode)
    second = [cached[i] for i in range(len(cached))]
    for r, a, b in zip(ref, first, second):
        assert torch.equal(r['image'], a['image']) and torch.equal(r['image'], b['image']) and torch.equal(r['mask'], b['mask'])
        assert r['label'] == b['label'] and r['defect'] == b['defect'] and r['path'] == b['path']
    monkeypatch.undo(); monkeypatch.setenv('ADTUTOR_CACHE', str(tmp_path / 'cache'))
    # editing an image misses the cache; a new transform uses new entries
    p = cached.samples[0].path
    img(p, value=250); os.utime(p, ns=(os.stat(p).st_atime_ns, os.stat(p).st_mtime_ns + 10**9))
    assert torch.equal(cached[0]['image'], MVTecAD(tmp_path / 'd', 'bottle', 'test', 24, None)[0]['image'])
    assert not torch.equal(cached[0]['image'], ref[0]['image'])
    MVTecAD(tmp_path / 'd', 'bottle', 'test', 16, None, cache='disk')[0]
    n = len(list((tmp_path / 'cache/decoded').rglob('*.npz')))
    assert n == len(plain) + 2 and D.clear_disk_cache() == n
    raises(ValueError, lambda: MVTecAD(tmp_path / 'd', 'bottle', cache='ram'), 'cache must be')

def test_disk_cache_errors_still_clear(tmp_path, monkeypatch):
    monkeypatch.setenv('ADTUTOR_CACHE', str(tmp_path / 'cache'))
    mvtec_layout(tmp_path)
    (tmp_path / 'bottle/train/good/001.png').write_bytes(b'garbage')
    ds = MVTecAD(tmp_path, 'bottle', 'train', 16, None, cache='disk')
    raises(ValueError, lambda: ds[1], '001.png', 'corrupt')
    (tmp_path / 'bottle/train/good/002.png').unlink()
    raises(FileNotFoundError, lambda: ds[2], '002.png')

def test_memory_cache(tmp_path):
    mvtec_layout(tmp_path)
    ds = MVTecAD(tmp_path, 'bottle', 'train', 16, None, cache=True)
    assert ds[0] is ds[0] and D.quick_subset(ds, 2)._cache == {}


# ---------------------------------------------------------------------------------------------- downloads (local archives only)
def make_tar(tmp_path, name='mvtec_anomaly_detection.tar.xz', top='bottle'):
    src = tmp_path / 'src'; mvtec_layout(src)
    arc = tmp_path / name
    with tarfile.open(arc, 'w:xz' if name.endswith('xz') else 'w') as t: t.add(src / 'bottle', arcname=top)
    return arc

def test_download_verify_extract(tmp_path, capsys):
    arc = make_tar(tmp_path)
    out = download_mvtec(tmp_path / 'out', url=arc.as_uri(), sha256=file_hash(arc), progress=False)
    printed = capsys.readouterr().out
    assert 'CC BY-NC-SA 4.0' in printed and 'Bergmann' in printed
    assert len(MVTecAD(out, 'bottle', 'test')) == 7 and (out / '.mvtec_ad.complete').exists()
    assert not list(out.glob('*.part')) and not (out / arc.name).exists()
    download_mvtec(tmp_path / 'out', url='file:///does/not/matter', progress=False)      # already there: no download
    assert 'already' in capsys.readouterr().out
    out2 = download_mvtec(tmp_path / 'out2', url=arc.as_uri(), md5=file_hash(arc, 'md5'), keep_archive=True, progress=False)
    assert (out2 / arc.name).exists()

def test_checksum_mismatch_is_an_error(tmp_path):
    arc = make_tar(tmp_path)
    msg = raises(ValueError, lambda: download_mvtec(tmp_path / 'out', url=arc.as_uri(), sha256='ab' * 32, progress=False),
                 'sha256 mismatch', 'ab' * 32, file_hash(arc), 'deleted')
    assert not list((tmp_path / 'out').iterdir()) and str(tmp_path / 'out') not in msg
    raises(ValueError, lambda: fetch(arc.as_uri(), tmp_path / 'x.tar', {'md5': '0' * 32}, progress=False), 'md5 mismatch')
    assert not (tmp_path / 'x.tar').exists() and not (tmp_path / 'x.tar.part').exists()
    raises(ConnectionError, lambda: fetch((tmp_path / 'missing.tar').as_uri(), tmp_path / 'y.tar', progress=False), 'missing.tar', 'url=')
    assert not (tmp_path / 'y.tar.part').exists()

def test_zip_with_strip_and_category(tmp_path, monkeypatch):
    src = btad_layout(tmp_path / 'src')
    z = tmp_path / 'btad.zip'
    with zipfile.ZipFile(z, 'w') as f:
        for p in sorted(src.rglob('*')):
            if p.is_file(): f.write(p, 'BTech_Dataset_transformed/' + str(p.relative_to(src)))
    monkeypatch.setenv('ADTUTOR_DATA', str(tmp_path / 'data'))
    root = download_dataset('btad', url=z.as_uri(), sha256=file_hash(z), progress=False)
    assert root == tmp_path / 'data/btad' and len(BTAD(None, '01', 'test')) == 5
    arc = make_tar(tmp_path, 'bottle.tar.xz')
    download_mvtec(tmp_path / 'cat', 'bottle', url=arc.as_uri(), progress=False)             # no published checksum: allowed
    assert len(MVTecAD(tmp_path / 'cat', 'bottle', 'train')) == 4
    raises(ValueError, lambda: download_mvtec(tmp_path / 'cat', 'bottel'), "no per-category download for 'bottel'")

def test_unsafe_or_damaged_archives(tmp_path):
    evil = tmp_path / 'evil.tar'
    (tmp_path / 'payload.txt').write_text('x')
    with tarfile.open(evil, 'w') as t: t.add(tmp_path / 'payload.txt', arcname='../escaped.txt')
    raises(ValueError, lambda: extract(evil, tmp_path / 'dest'), 'outside', '../escaped.txt')
    assert not (tmp_path / 'escaped.txt').exists()
    ez = tmp_path / 'evil.zip'
    with zipfile.ZipFile(ez, 'w') as f: f.writestr('../../escaped2.txt', 'x')
    raises(ValueError, lambda: extract(ez, tmp_path / 'dest'), 'outside')
    (tmp_path / 'junk.tar.xz').write_bytes(b'not an archive at all')
    raises(ValueError, lambda: extract(tmp_path / 'junk.tar.xz', tmp_path / 'dest'), 'junk.tar.xz', 'download it again')

def test_mpdd_and_root_guidance(tmp_path, monkeypatch):
    raises(RuntimeError, lambda: download_mpdd(tmp_path), 'by hand', 'stepanje/MPDD', 'CC BY-NC-SA')
    monkeypatch.delenv('ADTUTOR_DATA', raising=False)
    raises(ValueError, lambda: download_mvtec(), 'root=', 'ADTUTOR_DATA')
    raises(ValueError, lambda: download_dataset('kolektor'), 'unknown dataset')

def test_download_table_is_complete_and_tracked():
    hexlen = {'sha256': 64, 'md5': 32}
    for name, v in DOWNLOADS.items():
        assert v['license'] and v['cite'] and v['page'] and v['source'] and v['url'].startswith('https://'), name
        for algo, n in hexlen.items():
            if v.get(algo): assert len(v[algo]) == n and int(v[algo], 16) >= 0, (name, algo)
        if not v.get('manual'): assert v.get('sha256') or v.get('md5'), f'{name} has no checksum'
    assert DOWNLOADS['mvtec_3d'].get('sha256') is None and len(DOWNLOADS['mvtec_3d']['md5']) == 32   # only an MD5 is known
    assert set(DOWNLOADS['mvtec_ad']['categories']) == set(D.MVTEC_CATEGORIES)
    tracked = json.loads((REPO / 'data' / 'datasets.json').read_text())
    assert tracked['datasets'] == json.loads(json.dumps(DOWNLOADS)), \
        'data/datasets.json differs from adtutor.download.DOWNLOADS: run python -c "from adtutor.download import write_download_table; write_download_table()"'


# ---------------------------------------------------------------------------------------------- real data
@needs_bottle
def test_real_bottle_counts():
    tr, te = MVTecAD(REAL, 'bottle', 'train'), MVTecAD(REAL, 'bottle', 'test')
    assert len(tr) == 209 and tr.labels.sum() == 0
    assert len(te) == 83 and (te.labels == 0).sum() == 20 and te.labels.sum() == 63
    assert te.summary()['images'].to_dict() == {'broken_large': 20, 'broken_small': 22, 'contamination': 21, 'good': 20}
    nonempty = 0
    for s in te.samples:
        if not s.label: assert s.mask is None; continue
        assert s.mask.name == f'{s.path.stem}_mask.png' and s.mask.parent.name == s.defect
        m = np.asarray(Image.open(s.mask))
        assert m.shape == (900, 900) and set(np.unique(m)) <= {0, 255}
        nonempty += int(m.any())
    assert nonempty == 63

@needs_bottle
@pytest.mark.parametrize('tr', [Transform(256, 224), Transform(224, None), Transform((256, 320), None), Transform((240, 320), (224, 288))])
def test_real_bottle_masks_stay_aligned(tr):
    te = MVTecAD(REAL, 'bottle', 'test', tr.size, tr.crop)
    idx = [i for i, s in enumerate(te.samples) if s.label][::16]      # one image of each defect type, spread out
    for i in idx:
        s, it = te.samples[i], te[i]
        raw_img, raw_mask = read_image(s.path), read_mask(s.mask)
        assert torch.equal(it['image'], tr.image(raw_img)) and torch.equal(it['mask'], tr.mask(raw_mask))
        assert np.array_equal(it['mask'].numpy(), nearest_ref(np.asarray(raw_mask), tr))
        assert it['mask'].shape == tr.out_size == it['image'].shape[1:] and it['mask'].sum() > 0
        marked = np.array(raw_img); marked[np.asarray(raw_mask) > 0] = (255, 0, 255)
        x = tr.image(Image.fromarray(marked))
        assert marker_ok(it['mask'], x), f'{s.path}: defect pixels of image and mask disagree under {tr}'
        if it['mask'].sum() > 50: assert not marker_ok(torch.roll(it['mask'], 8, 0), x)   # and a shifted mask is caught
