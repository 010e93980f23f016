"""Issue 14 (hardening), the contract's part: pixel range and finiteness of fit and predict data, PatchCore's
degenerate cases (one-feature bank, other image size, empty batch), settings checked by name, and model files
that are data (checksum, clear errors, a crafted pickle runs nothing). Each test failed before its fix."""
import os, json, warnings
from pathlib import Path

import pytest
import torch

from adtutor.core import AnomalyModel, MeanImage, MODEL_FORMAT, iter_batches, gaussian_blur
from adtutor.train import precompute


def raises(exc, fn, *words):
    with pytest.raises(exc) as e: fn()
    for w in words: assert w in str(e.value), f'{w!r} not in error message: {e.value}'
    return e.value


@pytest.fixture(scope='module')
def imgs():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)


# --- 1. pixel range -----------------------------------------------------------------------------------------------
def test_predict_uint8_is_refused_with_the_fix(imgs):
    x, y = imgs
    m = MeanImage().fit(x)
    raises(ValueError, lambda: m.predict((y * 255).to(torch.uint8)), 'images', 'uint8', '/ 255')

def test_predict_float_0_255_names_the_fix(imgs):
    x, y = imgs
    m = MeanImage().fit(x)
    raises(ValueError, lambda: m.predict(y * 255), 'images', '/ 255')

def test_fit_float_0_255_is_refused(imgs):
    x, _ = imgs
    raises(ValueError, lambda: MeanImage().fit(x * 255), 'MeanImage.fit', 'train_data', '/ 255')

def test_fit_uint8_dataset_is_refused(imgs):
    x, _ = imgs
    data = [{'image': (t * 255).to(torch.uint8), 'path': f'img{i}.png'} for i, t in enumerate(x)]
    raises(ValueError, lambda: MeanImage().fit(data), 'train_data', 'uint8', '/ 255')

def test_normalised_images_get_their_own_hint(imgs):
    x, y = imgs
    m = MeanImage().fit(x)
    raises(ValueError, lambda: m.predict((y - 0.45) / 0.225), 'unnormalised')


# --- 2. NaN / inf -------------------------------------------------------------------------------------------------
def _with_nan(x, i=2, value=float('nan')):
    x = x.clone(); x[i, 0, 3, 3] = value; return x

def test_fit_with_nan_names_the_file(imgs):
    x, _ = imgs
    data = [{'image': t, 'path': f'/data/good/{i:03d}.png'} for i, t in enumerate(_with_nan(x))]
    raises(ValueError, lambda: MeanImage().fit(data), '/data/good/002.png', 'NaN')

def test_fit_with_inf_tensor_names_the_image(imgs):
    x, _ = imgs
    raises(ValueError, lambda: MeanImage().fit(_with_nan(x, 1, float('inf'))), 'train_data', 'image 1')

def test_predict_with_nan_is_refused(imgs):
    x, y = imgs
    m = MeanImage().fit(x)
    raises(ValueError, lambda: m.predict(_with_nan(y, 0)), 'images', 'NaN')

def test_trained_methods_data_path_is_checked(imgs):
    x, _ = imgs
    data = [{'image': t, 'path': f'f{i}.png'} for i, t in enumerate(_with_nan(x))]
    raises(ValueError, lambda: precompute(data, lambda b: b.mean((1, 2, 3))), 'f2.png')

def test_padim_nan_does_not_suggest_eps(imgs):
    from adtutor.padim import cholesky_factors
    cov = torch.eye(3)[None].repeat(2, 1, 1); cov[1, 0, 0] = float('nan')
    e = raises(ValueError, lambda: cholesky_factors(cov), 'NaN')
    assert 'eps' not in str(e)


# --- 3. degenerate cases and settings -----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def patchcore(imgs):
    from adtutor.patchcore import PatchCore
    return PatchCore(weights=None).fit(imgs[0])

def test_patchcore_one_feature_bank_scores_are_not_zero(imgs):
    from adtutor.patchcore import PatchCore
    x, y = imgs
    m = PatchCore(weights=None, coreset_ratio=1e-9).fit(x[:1])
    assert m.memory_bank_size() == 1
    s = m.predict(y).scores
    assert (s > 0).all() and s[0] != s[1]
    d, _, _ = m.patch_scores(y)
    assert torch.allclose(s, d.flatten(1).amax(1))   # nothing to re-weight with: the max patch distance

def test_patchcore_other_image_size_is_refused(patchcore):
    raises(ValueError, lambda: patchcore.predict(torch.rand(1, 3, 64, 64)), '(32, 32)', '(64, 64)', 'PatchCore')

def test_image_size_check_survives_save_load(patchcore, tmp_path):
    m = AnomalyModel.load(patchcore.save(tmp_path / 'pc.pt'))
    raises(ValueError, lambda: m.predict(torch.rand(1, 3, 64, 64)), '(32, 32)')

class _Brightness(AnomalyModel):
    "A size-free toy method: the map is the pixel brightness."
    def learn(self, train_data): list(iter_batches(train_data))
    def anomaly_map(self, x): return x.mean(1)

def test_image_size_is_recorded_and_only_fixed_size_methods_refuse_others(imgs):
    m = _Brightness().fit(imgs[0])
    assert m.fit_stats['image_size'] == [32, 32] and not m.fixed_input_size
    assert m.predict(torch.rand(1, 3, 48, 40)).maps.shape == (1, 48, 40)   # regression guard: no check without the flag

def test_empty_batch_gives_empty_prediction(patchcore):
    p = patchcore.predict(torch.rand(0, 3, 32, 32))
    assert p.scores.shape == (0,) and p.maps.shape == (0, 32, 32)

def test_negative_blur_sigma_is_refused():
    raises(ValueError, lambda: MeanImage(blur_sigma=-1), 'blur_sigma', '-1')
    raises(ValueError, lambda: gaussian_blur(torch.rand(1, 8, 8), -0.5), 'blur_sigma')

@pytest.mark.parametrize('kw,name', [(dict(proj_dim=-1), 'proj_dim'), (dict(target_dim=-1), 'target_dim'),
                                     (dict(target_dim=0), 'target_dim'), (dict(batch_size=0), 'batch_size')])
def test_patchcore_settings_are_checked_by_name(kw, name):
    from adtutor.patchcore import PatchCore
    raises(ValueError, lambda: PatchCore(weights=None, **kw), name)

def test_batch_size_zero_is_refused_everywhere(imgs):
    raises(ValueError, lambda: list(iter_batches(imgs[0], 0)), 'batch_size')
    from adtutor.padim import PaDiM
    raises(ValueError, lambda: PaDiM(weights=None, batch_size=0), 'batch_size')


# --- 4. model files are data --------------------------------------------------------------------------------------
@pytest.fixture
def saved(imgs, tmp_path):
    m = MeanImage().fit(imgs[0])
    return m, m.save(tmp_path / 'mean.pt')

def _corrupt_tensor_bytes(path: Path, tensor: torch.Tensor):
    "Flip bytes inside the stored data of `tensor` (found by its raw bytes in the zip archive)."
    raw, data = bytearray(path.read_bytes()), tensor.numpy().tobytes()
    i = raw.find(data[:64]); assert i > 0
    raw[i + 40:i + 44] = b'\x00\x00\xc0\x7f'   # a NaN where a pixel mean was
    path.write_bytes(bytes(raw))

def test_corrupted_tensor_bytes_are_detected(saved):
    m, f = saved
    _corrupt_tensor_bytes(f, m.mean)
    raises(ValueError, lambda: AnomalyModel.load(f), str(f), 'MeanImage', MODEL_FORMAT, 'damaged')

def test_unknown_class_and_missing_key_name_class_and_version(saved):
    m, f = saved
    blob = torch.load(f, weights_only=True)
    blob['class'] = 'adtutor.nothing.Here'; torch.save(blob, f)
    raises(ValueError, lambda: AnomalyModel.load(f), 'adtutor.nothing.Here', MODEL_FORMAT)
    blob = torch.load(m.save(f), weights_only=True); del blob['config']; torch.save(blob, f)
    raises(ValueError, lambda: AnomalyModel.load(f), 'config', 'MeanImage', MODEL_FORMAT)

def test_crafted_pickle_runs_nothing(saved, tmp_path):
    _, f = saved
    marker = tmp_path / 'ran.txt'
    class Evil:
        def __reduce__(self): return (os.system, (f'echo pwned > {marker}',))
    blob = torch.load(f, weights_only=True); blob['fit_stats'] = Evil()
    bad = tmp_path / 'evil.pt'; torch.save(blob, bad)
    assert not marker.exists()
    raises(ValueError, lambda: AnomalyModel.load(bad), str(bad))
    assert not marker.exists(), 'loading the file ran code'

def test_old_format_without_checksum_loads_with_a_warning(saved):
    m, f = saved
    blob = torch.load(f, weights_only=True); blob['format'] = 'adtutor-model-2'; blob.pop('sha256', None); torch.save(blob, f)
    with pytest.warns(UserWarning, match='checksum'): m2 = AnomalyModel.load(f)
    assert torch.equal(m2.mean, m.mean)
