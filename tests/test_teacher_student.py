"Tests of the teacher-student family: STFPM and Reverse Distillation (contract, maths, exact resume, clear errors)."
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adtutor.core import AnomalyModel, combine_maps, gaussian_blur
from adtutor.backbones import FeatureExtractor, find_weights, default_layers, prune_unused
from adtutor.teacher_student import cosine_maps, cosine_loss
from adtutor.stfpm import STFPM
from adtutor.reverse_distillation import ReverseDistillation, OCBE, Decoder, rd_loss


def _imgs(n, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Killed(Exception): pass


def _kill_after(k):
    def cb(e, h, m):
        if e == k: raise Killed
    return cb


def test_prune_keeps_features():
    layers = default_layers('tf_efficientnet_lite0', 'pyramid')
    assert layers == ('blocks.1', 'blocks.2', 'blocks.4')
    full = FeatureExtractor('tf_efficientnet_lite0', layers)
    pruned = prune_unused(FeatureExtractor('tf_efficientnet_lite0', layers))
    x = _imgs(2)
    a, b = full(x), pruned(x)
    assert all(torch.equal(a[k], b[k]) for k in layers)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(pruned) < n(full) / 2
    assert [v.shape[-1] for v in b.values()] == [16, 8, 4]  # strides 4, 8, 16
    with pytest.raises(ValueError, match='unknown backbone'): default_layers('convnext_tiny', 'pyramid')


def test_cosine_maths():
    t = {'a': torch.randn(2, 5, 4, 4), 'b': torch.randn(2, 7, 2, 2)}
    s = {'a': torch.randn(2, 5, 4, 4), 'b': torch.randn(2, 7, 2, 2)}
    m = cosine_maps(t, s)
    assert torch.allclose(m[0], 1 - F.cosine_similarity(t['a'], s['a'], dim=1), atol=1e-6)
    assert torch.allclose(cosine_loss(t, s), m[0].mean() + m[1].mean())
    assert float(cosine_loss(t, {k: 3 * v for k, v in t.items()})) < 1e-6  # scale-invariant
    assert all(torch.equal(a, b) for a, b in zip(cosine_maps(list(t.values()), list(s.values())), m))  # lists match by position
    with pytest.raises(ValueError, match='must match'): cosine_maps([t['a']], [])
    c = combine_maps(m, (8, 8), 'product')
    up = [F.interpolate(v[:, None], size=(8, 8), mode='bilinear', align_corners=False)[:, 0] for v in m]
    assert c.shape == (2, 8, 8) and torch.allclose(c, up[0] * up[1]) and torch.allclose(combine_maps(m, (8, 8), 'sum'), up[0] + up[1])


def test_stfpm_contract_and_roundtrip(tmp_path):
    x = _imgs(6)
    m = STFPM(epochs=2, batch_size=4, seed=1).fit(x, progress=False)
    p = m.predict(_imgs(3, 80, seed=2))
    assert p.scores.shape == (3,) and p.maps.shape == (3, 80, 80) and torch.equal(p.scores, p.maps.flatten(1).amax(1))
    assert (p.maps >= 0).all()
    fs = m.fit_stats
    assert fs['epochs_run'] == 2 and len(fs['epoch_seconds']) == 2 and fs['backbone']['weights'].startswith('imagenet:')
    assert m.config['combine'] == 'product' and m.blur_sigma == 0  # STFPM: product of the levels, no smoothing
    # the teacher is untouched by training, the student moved
    fresh = STFPM(seed=1)
    assert _same_state(m.extractor, fresh.extractor) and not _same_state(m.student, fresh.student)
    m.save(tmp_path / 'm.pt')
    m2 = AnomalyModel.load(tmp_path / 'm.pt')
    q = m2.predict(_imgs(3, 80, seed=2))
    assert type(m2) is STFPM and torch.equal(p.maps, q.maps) and m2.info()['weights'] == m.info()['weights']
    assert m2.fit_stats == m.fit_stats and m2.config == m.config
    # the same seed gives the same student initialisation, without touching the global RNG
    torch.manual_seed(5); r = torch.rand(1)
    torch.manual_seed(5); STFPM(seed=3); assert torch.equal(r, torch.rand(1))
    assert _same_state(STFPM(seed=3).student, STFPM(seed=3).student)


def test_stfpm_resume_exact(tmp_path):
    x = _imgs(8)
    a = STFPM(epochs=3, batch_size=4, seed=0).fit(x, progress=False)
    b = STFPM(epochs=3, batch_size=4, seed=0)
    with pytest.raises(Killed): b.fit(x, progress=False, checkpoint_dir=tmp_path, on_epoch_end=_kill_after(1))
    c = STFPM(epochs=3, batch_size=4, seed=0).fit(x, progress=False, checkpoint_dir=tmp_path)
    assert _same_state(a, c) and a.history.steps['loss'].tolist() == c.history.steps['loss'].tolist()
    assert c.history.meta['resumed_at'] == [1]


def test_rd_shapes_and_maths():
    chans = [24, 40, 112]
    f = [torch.randn(2, 24, 16, 16), torch.randn(2, 40, 8, 8), torch.randn(2, 112, 4, 4)]
    z = OCBE(chans, 224)(f)
    assert z.shape == (2, 224, 2, 2)
    d = Decoder(chans, 224)(z, [v.shape[-2:] for v in f])
    assert [v.shape for v in d] == [v.shape for v in f]
    # sizes that are not multiples of 32 still line up
    g = [torch.randn(1, 24, 13, 13), torch.randn(1, 40, 7, 7), torch.randn(1, 112, 4, 4)]
    assert [v.shape for v in Decoder(chans, 224)(OCBE(chans, 224)(g), [v.shape[-2:] for v in g])] == [v.shape for v in g]
    assert float(rd_loss(f, f)) < 1e-6 and float(rd_loss(f, f, 'position')) < 1e-6
    flat = 1 - F.cosine_similarity(f[0].flatten(1), d[0].flatten(1), dim=1)
    assert torch.allclose(rd_loss(f[:1], d[:1]), flat.mean())
    assert torch.allclose(cosine_maps(f, d)[2], 1 - F.cosine_similarity(f[2], d[2], dim=1))


def test_rd_contract_roundtrip_and_ablation(tmp_path):
    x = _imgs(6)
    m = ReverseDistillation(epochs=2, batch_size=4).fit(x, progress=False)
    p = m.predict(_imgs(2, 72, seed=3))
    assert p.maps.shape == (2, 72, 72) and torch.equal(p.scores, p.maps.flatten(1).amax(1))
    assert m.history.epochs['loss'].iloc[-1] < m.history.epochs['loss'].iloc[0]
    m.save(tmp_path / 'rd.pt')
    m2 = AnomalyModel.load(tmp_path / 'rd.pt')
    assert type(m2) is ReverseDistillation and torch.equal(m2.predict(_imgs(2, 72, seed=3)).maps, p.maps)
    nb = ReverseDistillation(epochs=1, batch_size=4, bottleneck=False).fit(x, progress=False)
    assert nb.predict(_imgs(1)).maps.shape == (1, 64, 64)
    sm = m.level_maps(_imgs(1))
    assert [v.shape[-1] for v in sm] == [16, 8, 4]
    # predict = the scale maps summed (anomalib's ADD) and blurred with sigma 4, as before the lab kit
    x = _imgs(2, 72, seed=3)
    assert m.combine == 'sum' and m.blur_sigma == 4
    assert torch.equal(m.predict(x).maps, gaussian_blur(combine_maps(m.level_maps(x), (72, 72), 'sum'), 4.0))


def _quick_data():
    "Quick real data (MVTec bottle via ADTUTOR_DATA) or the built-in set; skip when neither is there."
    from adtutor.data import get_data
    if os.environ.get('ADTUTOR_DATA') and Path(os.environ['ADTUTOR_DATA'], 'mvtec_ad', 'bottle').is_dir():
        return get_data('mvtec', 'bottle', size=128, crop=112, quick=True, n_train_quick=8, n_test_quick=2, cache=True)
    try: return get_data('builtin', size=128, crop=112, quick=True, n_train_quick=8, n_test_quick=2, cache=True)
    except (ImportError, FileNotFoundError) as e: pytest.skip(f'no quick data: set ADTUTOR_DATA or build the built-in set ({e})')


def test_rd_resume_exact_on_quick_data(tmp_path):
    "The key test on a real method and real images (112 px): straight 3 epochs == 1 epoch, kill, resume to 3."
    train, test = _quick_data()
    a = ReverseDistillation(epochs=3, batch_size=4).fit(train, progress=False)
    b = ReverseDistillation(epochs=3, batch_size=4)
    with pytest.raises(Killed): b.fit(train, progress=False, checkpoint_dir=tmp_path, on_epoch_end=_kill_after(1))
    c = ReverseDistillation(epochs=3, batch_size=4).fit(train, progress=False, checkpoint_dir=tmp_path)
    assert _same_state(a, c) and a.history.steps['loss'].tolist() == c.history.steps['loss'].tolist()
    x = torch.stack([test[i]['image'] for i in range(2)])
    assert torch.equal(a.predict(x).maps, c.predict(x).maps)


def test_errors():
    with pytest.raises(ValueError, match="combine must be one of"): STFPM(combine='add')
    with pytest.raises(ValueError, match="combine must be one of"): ReverseDistillation(combine='add')
    with pytest.raises(ValueError, match='blur_sigma must be >= 0'): ReverseDistillation(blur_sigma=-1)
    with pytest.raises(TypeError, match="did you mean 'blur_sigma'"): ReverseDistillation(sigma=2)
    with pytest.raises(ValueError, match='three layers'): ReverseDistillation(layers=['blocks.2', 'blocks.4'])
    with pytest.raises(TypeError, match="did you mean 'epochs'"): STFPM(epoch=3)
    with pytest.raises(RuntimeError, match='not fitted'): ReverseDistillation().predict(_imgs(1))
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'): STFPM(epochs=1, batch_size=2).fit(_imgs(2), progress=False).predict(torch.rand(3, 64, 64))


@pytest.mark.skipif(find_weights('wide_resnet50_2') is not None, reason='wide_resnet50_2 weights are installed here')
def test_paper_backbone_without_weights_is_a_clear_error():
    for cls in (STFPM, ReverseDistillation):
        with pytest.raises(FileNotFoundError, match='no ImageNet weights for wide_resnet50_2.*download'):
            cls(backbone='wide_resnet50_2')
    assert default_layers('wide_resnet50_2', 'pyramid') == ('layer1', 'layer2', 'layer3')
