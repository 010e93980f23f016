"Tests of the distribution-map family across modules: DFM, DFKDE and the flows (save/load, invertibility through the package API, maths, errors)."
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from adtutor.core import AnomalyModel
from conftest import needs_bottle
from adtutor.dfm import DFM, fit_pca, gaussian_nll, reconstruction_error, pooled_features
from adtutor.dfkde import DFKDE, kde_log_density, scott_bandwidth
from adtutor.flows import (AffineCoupling, CouplingBlock, block_from_freia, sequence_flow, fc_subnet, conv_subnet, alternating,
                           flow_nll, train_on_features)
from adtutor.fastflow import FastFlow
from adtutor.cflow import CFlow, positional_encoding_2d, position_codes, fibers
from adtutor.differnet import DifferNet
from adtutor.csflow import CSFlow, CrossScaleFlow
from adtutor.uflow import UFlow, uflow_graph, log_nfa


def _imgs(n, size=64, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _round_trip(model, x, tmp_path):
    p1 = model.predict(x)
    path = model.save(tmp_path / f'{type(model).__name__}.pt')
    loaded = AnomalyModel.load(path)
    p2 = loaded.predict(x)
    assert type(loaded) is type(model) and loaded.config == model.config and loaded.fit_stats == model.fit_stats
    assert torch.equal(p1.scores, p2.scores) and torch.equal(p1.maps, p2.maps)
    assert p1.maps.shape == (len(x), *x.shape[-2:]) and torch.isfinite(p1.maps).all() and torch.isfinite(p1.scores).all()
    return loaded


# a tiny, fast setting of every flow model (64-pixel images, 1-2 epochs); what is tested is the plumbing, not accuracy
FLOW_MODELS = {
    'fastflow': lambda: FastFlow(flow_steps=2, epochs=2, batch_size=4, input_size=64),
    'cflow': lambda: CFlow(coupling_blocks=2, condition_vector=16, fiber_batch_size=64, epochs=1),
    'differnet': lambda: DifferNet(scales=[64, 32], coupling_blocks=2, fc_internal=32, epochs=2, batch_size=4, train_views=2, test_views=2),
    'csflow': lambda: CSFlow(input_size=64, coupling_blocks=2, hidden_channels=16, epochs=2, batch_size=4),
    'uflow': lambda: UFlow(flow_steps=2, epochs=2, batch_size=4, input_size=64),
}


@pytest.mark.parametrize('name', list(FLOW_MODELS))
def test_flow_models_fit_save_load(name, tmp_path):
    model = FLOW_MODELS[name]().fit(_imgs(8), progress=False)
    assert model.fit_stats['epochs_run'] == model.config['epochs'] and model.fit_stats['backbone']['name'] == 'tf_efficientnet_lite0'
    assert len(model.history) == model.config['epochs']
    _round_trip(model, _imgs(3, seed=1), tmp_path)


@pytest.mark.parametrize('name', list(FLOW_MODELS))
def test_flow_models_are_deterministic(name):
    "Same seed, same data: the same model (initialisation, permutations, data order)."
    a, b = FLOW_MODELS[name]().fit(_imgs(6), progress=False), FLOW_MODELS[name]().fit(_imgs(6), progress=False)
    x = _imgs(2, seed=3)
    assert torch.equal(a.predict(x).maps, b.predict(x).maps)


def test_flow_training_resumes_exactly(tmp_path):
    "A run killed after epoch 1 and restarted with the same checkpoint folder ends where an uninterrupted run ends."
    class Killed(Exception): pass
    def kill(e, h, m):
        if e == 1: raise Killed
    full = FastFlow(flow_steps=2, epochs=3, batch_size=4, input_size=64).fit(_imgs(8), progress=False)
    with pytest.raises(Killed):
        FastFlow(flow_steps=2, epochs=3, batch_size=4, input_size=64).fit(_imgs(8), progress=False, checkpoint_dir=tmp_path, on_epoch_end=kill)
    resumed = FastFlow(flow_steps=2, epochs=3, batch_size=4, input_size=64).fit(_imgs(8), progress=False, checkpoint_dir=tmp_path)
    x = _imgs(2, seed=5)
    assert torch.equal(full.predict(x).maps, resumed.predict(x).maps)


def test_flows_invertible_through_package_api():
    "Every flow the labs build inverts exactly and its log-determinant matches the full Jacobian on a tiny input."
    torch.manual_seed(0)
    x = torch.randn(3, 6)
    for flow in (sequence_flow(6, 3, fc_subnet(2, zero_init=False)),
                 sequence_flow(6, 3, fc_subnet(2, zero_init=False), cond_dims=(4,), permute_soft=True)):
        c = [torch.randn(3, 4)] if flow.conditions[0] is not None else None
        z, lj = flow(x, c=c)
        assert torch.allclose(flow(z, c=c, rev=True)[0], x, atol=1e-5)
        for i in range(3):
            J = torch.func.jacrev(lambda v: flow(v[None], c=None if c is None else [c[0][i:i + 1]])[0][0])(x[i])
            assert abs(float(torch.linalg.slogdet(J.detach())[1]) - float(lj[i].detach())) < 1e-4
    fm = sequence_flow((4, 5, 5), 4, alternating(conv_subnet(3, 1.0), conv_subnet(1, 1.0)))
    xm = torch.randn(2, 4, 5, 5)
    assert torch.allclose(fm(fm(xm)[0], rev=True)[0], xm, atol=1e-5)
    cs = CrossScaleFlow(6, n_blocks=2, hidden=8)
    with torch.no_grad():
        for b in cs.blocks: b.sub1.gamma.fill_(0.5); b.sub2.gamma.fill_(-0.3)
    xs = [torch.randn(2, 6, 8, 8), torch.randn(2, 6, 4, 4), torch.randn(2, 6, 2, 2)]
    zs, lj = cs(xs)
    back, ljr = cs(zs, rev=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(xs, back)) and torch.allclose(lj, -ljr, atol=1e-5)
    g = uflow_graph([(4, 8, 8), (8, 4, 4), (16, 2, 2)], steps=2)
    xu = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    zu, _ = g(xu)
    assert sum(z[0].numel() for z in zu) == sum(v[0].numel() for v in xu)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g(zu, rev=True)[0], xu))


def test_hand_block_equals_freia():
    import FrEIA.modules as Fm
    np.random.seed(0); torch.manual_seed(0)
    sub = fc_subnet(2, zero_init=False)
    fb = Fm.AllInOneBlock([(7,)], subnet_constructor=sub, affine_clamping=2.0)
    with torch.no_grad(): fb.global_scale.add_(0.3); fb.global_offset.normal_()
    mine = block_from_freia(fb, sub)
    x = torch.randn(4, 7)
    (y, ), lj = fb([x])
    y2, lj2 = mine(x)
    assert torch.allclose(y, y2, atol=1e-6) and torch.allclose(lj, lj2, atol=1e-5)
    assert torch.allclose(mine(y2, rev=True)[0], x, atol=1e-5)


def test_flow_nll_is_gaussian_nll():
    z = torch.randn(5, 3, 2, 2)
    ref = -torch.distributions.Normal(0, 1).log_prob(z).flatten(1).sum(1)
    assert torch.allclose(flow_nll(z, torch.zeros(5)), ref, atol=1e-5)
    assert torch.allclose(flow_nll(z, torch.ones(5), per_dim=True), (ref - 1) / 12, atol=1e-5)


def test_dfm_maths_and_round_trip(tmp_path):
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 2, 8) + 1
    mean, comp, var = fit_pca(x, 8)
    assert torch.allclose(comp @ comp.T, torch.eye(len(comp)), atol=1e-4)
    ref = -torch.distributions.MultivariateNormal(mean, torch.cov(x.T)).log_prob(x)
    assert torch.allclose(gaussian_nll((x - mean) @ comp.T, var), ref, rtol=1e-3, atol=1e-3)
    assert reconstruction_error(x, mean, comp).max() < 1e-3            # all components: nothing lost
    assert pooled_features(torch.ones(1, 2, 14, 14), 4).shape[-2:] == (4, 4)
    for score in ('nll', 'fre'):
        _round_trip(DFM(score=score).fit(_imgs(6)), _imgs(2, seed=1), tmp_path)
    with pytest.raises(ValueError, match='fitted on feature vectors'):
        DFM().fit(_imgs(4)).predict(_imgs(1, size=96))


def test_dfkde_matches_scipy_and_round_trip(tmp_path):
    from scipy.stats import gaussian_kde
    pts = torch.randn(100, 3, dtype=torch.float64)
    q = torch.randn(7, 3, dtype=torch.float64)
    assert np.allclose(kde_log_density(q, pts, scott_bandwidth(pts)).numpy(), gaussian_kde(pts.numpy().T).logpdf(q.numpy().T), atol=1e-8)
    far = kde_log_density(torch.full((1, 3), 1e3, dtype=torch.float64), pts, scott_bandwidth(pts))
    assert torch.isfinite(far).all()                                        # no underflow to -inf
    m = DFKDE(n_pca_components=4).fit(_imgs(10))
    loaded = _round_trip(m, _imgs(3, seed=2), tmp_path)
    p = loaded.predict(_imgs(3, seed=2))
    assert torch.allclose(p.maps.amax((1, 2)), p.maps.amin((1, 2)), rtol=1e-6) and torch.allclose(p.maps[:, 0, 0], p.scores)  # constant maps


def test_cflow_codes_and_fibers():
    pe = positional_encoding_2d(8, 3, 5)
    assert pe.shape == (8, 3, 5) and torch.allclose(pe[:4, 0], pe[:4, 2]) and torch.allclose(pe[4:, :, 0], pe[4:, :, 4])
    f = torch.randn(2, 3, 3, 5)
    fb, codes = fibers(f), position_codes(8, 3, 5, 2)
    assert fb.shape == (30, 3) and codes.shape == (30, 8)
    assert torch.equal(fb[15 + 5 + 2], f[1, :, 1, 2]) and torch.equal(codes[15 + 5 + 2], pe[:, 1, 2])
    with pytest.raises(ValueError, match='multiple of 4'): positional_encoding_2d(6, 2, 2)


def test_uflow_nfa_calm_on_gaussian_noise():
    "Latents that really are standard normal give (almost) no detections: NFA < 1 is rare by construction."
    g = torch.Generator().manual_seed(0)
    zs = [torch.randn(4, 8, 16, 16, generator=g), torch.randn(4, 8, 8, 8, generator=g)]
    assert float((log_nfa(zs, (32, 32)) < 0).float().mean()) < 0.01
    zs[0][:, :, 4:9, 4:9] *= 3                                                # an anomalous blob
    assert bool((log_nfa(zs, (32, 32))[:, 8:18, 8:18] < 0).any())


def test_clear_errors():
    with pytest.raises(ValueError, match='multiple of 16'): UFlow(input_size=100)
    with pytest.raises(ValueError, match='map_mode'): CSFlow(map_mode='all')
    with pytest.raises(ValueError, match='test_views'): DifferNet(test_views=0)
    with pytest.raises(TypeError, match="did you mean 'flow_steps'"): FastFlow(flow_step=2)
    with pytest.raises(ValueError, match='feature_scaling'): DFKDE(feature_scaling='minmax')
    with pytest.raises(ValueError, match='at least 2'): fit_pca(torch.randn(1, 4))


@needs_bottle
def test_flow_memory_benchmark_writes_its_phases(tmp_path):
    "benchmarks/flow_memory.py (adtutor side, quick subset) writes every phase, each peak at least the RSS that ends it."
    import json, subprocess, sys
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / 'benchmarks' / 'flow_memory.py'), '--quick', '--sides', 'adtutor', '--out', str(tmp_path)],
                       capture_output=True, text=True, cwd=root, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / 'flow_memory_fastflow_quick.json').read_text())
    rows = res['adtutor']['phases']
    assert [p['phase'] for p in rows] == ['imports', 'timm import', 'model built', 'before caching', 'features cached', 'training',
                                          'rest of fit', 'predict']
    assert all(p['peak_mb'] >= p['rss_mb'] - 1e-6 for p in rows) and rows[5]['peak_mb'] > rows[4]['rss_mb']   # training allocates
    assert {'data', 'backbone', 'image_size', 'seed'} <= set(res), 'every figure names its data, backbone, image size and seed'
    assert '| features cached |' in (tmp_path / 'flow_memory_fastflow_quick.md').read_text()
