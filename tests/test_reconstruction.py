"Tests of the reconstruction family: autoencoder (SSIM), DFR / FRE, DRAEM, RIAD, DSR (maths against references, contract, exact resume, clear errors)."
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adtutor.core import AnomalyModel


def _imgs(n, size=64, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _round_trip(model, x, tmp_path):
    model.save(tmp_path / 'm.pt')
    loaded = AnomalyModel.load(tmp_path / 'm.pt')
    a, b = model.predict(x), loaded.predict(x)
    assert type(loaded) is type(model) and loaded.config == model.config and loaded.fit_stats == model.fit_stats
    assert torch.equal(a.maps, b.maps) and torch.equal(a.scores, b.scores)
    return loaded


class Killed(Exception): pass


def _kill_after(k):
    def cb(e, h, m):
        if e == k: raise Killed
    return cb


def _resumes_exactly(make, data, tmp_path, epochs=3, kill_at=1):
    "Training killed after `kill_at` epochs and restarted from its checkpoint ends bit-identical to an uninterrupted run."
    full = make().fit(data, progress=False)
    ck = tmp_path / 'ck'
    with pytest.raises(Killed): make().fit(data, progress=False, checkpoint_dir=ck, on_epoch_end=_kill_after(kill_at))
    resumed = make().fit(data, progress=False, checkpoint_dir=ck)
    sa, sb = full.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert full.history.epochs['loss'].tolist() == resumed.history.epochs['loss'].tolist()


# --- autoencoder ---------------------------------------------------------------------------------------------
from adtutor.autoencoder import ssim_map, ssim, symmetric_pad, ConvAE, AutoEncoder, residual_map, random_flips


@pytest.mark.parametrize('shape', [(40, 52), (64, 64)])
def test_ssim_equals_skimage(shape):
    from skimage.metrics import structural_similarity
    rng = np.random.default_rng(1)
    a = rng.random((3,) + shape); b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
    mean_ref, map_ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              data_range=1.0, channel_axis=0, full=True)
    ours = ssim_map(torch.tensor(a)[None], torch.tensor(b)[None])[0].numpy()
    assert np.allclose(ours, map_ref.mean(0), atol=1e-8)                       # full map, borders included
    assert abs(ours[5:-5, 5:-5].mean() - mean_ref) < 1e-10                      # skimage's mean leaves out 5-pixel borders


def test_ssim_properties():
    x = _imgs(2, 32)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert float(ssim(x, (x + 0.05).clamp(0, 1)).mean()) > float(ssim(x, x.flip(-1)).mean())
    p = symmetric_pad(torch.arange(4.).view(1, 1, 1, 4).expand(1, 1, 4, 4), 2)
    assert p[0, 0, 0].tolist() == [1, 0, 0, 1, 2, 3, 3, 2]
    with pytest.raises(ValueError, match='smaller than the SSIM window'): ssim_map(_imgs(1, 8), _imgs(1, 8))
    with pytest.raises(ValueError, match='same shape'): ssim_map(_imgs(1, 32), _imgs(1, 16))


def test_conv_ae_shapes():
    for size in (32, 64, 128):
        net = ConvAE(3, 20, size)
        assert net.encoder(_imgs(2, size)).shape == (2, 20, 1, 1) and net(_imgs(2, size)).shape == (2, 3, size, size)
    with pytest.raises(ValueError, match='multiple of 16'): ConvAE(size=40)


def test_residuals_and_flips():
    x = _imgs(2, 32)
    assert torch.allclose(residual_map(x, x, 'l2'), torch.zeros(2, 32, 32)) and residual_map(x, x, 'ssim').abs().max() < 1e-5
    with pytest.raises(ValueError, match="'ssim' or 'l2'"): residual_map(x, x, 'l1')
    f = random_flips(x)
    assert f.shape == x.shape and torch.allclose(f.sum((1, 2, 3)), x.sum((1, 2, 3)))   # the same pixels, moved


def test_autoencoder_contract(tmp_path):
    m = AutoEncoder(size=32, latent_dim=8, epochs=2, batch_size=4, seed=0).fit(_imgs(6), progress=False)
    p = m.predict(_imgs(3, 64, seed=1))
    assert p.maps.shape == (3, 64, 64) and p.scores.shape == (3,) and torch.isfinite(p.maps).all()
    assert m.fit_stats['epochs_run'] == 2 and m.history is not None
    _round_trip(m, _imgs(2, 64, seed=2), tmp_path)
    with pytest.raises(ValueError, match="'ssim' or 'l2'"): AutoEncoder(loss='l1')
    with pytest.raises(TypeError, match="did you mean 'latent_dim'"): AutoEncoder(latent=3)


def test_autoencoder_resumes_exactly(tmp_path):
    _resumes_exactly(lambda: AutoEncoder(loss='l2', size=32, latent_dim=8, epochs=3, batch_size=4, augment=True, seed=0),
                     _imgs(8), tmp_path)


# --- DFR / FRE ----------------------------------------------------------------------------------------------
from adtutor.dfr import regional_features, pca_dim, FeatureCAE, DFR, TiedAE, FRE


def test_pca_dim_matches_sklearn():
    from sklearn.decomposition import PCA
    g = torch.Generator().manual_seed(0)
    v = torch.randn(400, 16, generator=g) @ torch.randn(16, 16, generator=g)
    for var in (0.3, 0.6, 0.9, 0.999):
        assert pca_dim(v, var) == PCA(n_components=var).fit(v.numpy()).n_components_
    with pytest.raises(ValueError, match='between 0 and 1'): pca_dim(v, 90)


def test_regional_features_and_cae():
    f = {'a': torch.randn(2, 4, 16, 16), 'b': torch.randn(2, 6, 8, 8)}
    r = regional_features(f, (16, 16))
    assert r.shape == (2, 10, 16, 16) and torch.equal(r[:, :4], f['a'])
    cae = FeatureCAE(10, 3)
    assert cae(r).shape == r.shape and cae.encode(r).shape == (2, 3, 16, 16)


def test_dfr_contract(tmp_path):
    m = DFR(epochs=1, batch_size=2, stride=8, seed=0).fit(_imgs(4), progress=False)
    assert int(m.latent_dim) >= 1 and m.cae.latent_dim == int(m.latent_dim)
    p = m.predict(_imgs(2, 64, seed=1))
    assert p.maps.shape == (2, 64, 64) and torch.isfinite(p.scores).all()
    loaded = _round_trip(m, _imgs(2, 64, seed=3), tmp_path)
    assert int(loaded.latent_dim) == int(m.latent_dim)                      # the code size is learned, and restored
    assert DFR(latent_dim=5).cae.latent_dim == 5                           # a fixed code size skips the PCA
    with pytest.raises(ValueError, match='between 0 and 1'): DFR(variance=2)


def test_fre_tied_and_contract(tmp_path):
    ae = TiedAE(12, 3)
    v = torch.randn(5, 12)
    assert torch.allclose(ae(v), F.linear(F.linear(v, ae.weight, ae.encoder_bias), ae.weight.t(), ae.decoder_bias))
    m = FRE(image_size=64, latent_dim=4, epochs=2, batch_size=4, seed=0).fit(_imgs(4), progress=False)
    p = m.predict(_imgs(3, 64, seed=1))
    maps_small, scores = m.anomaly_map(_imgs(3, 64, seed=1))
    assert p.maps.shape == (3, 64, 64) and torch.allclose(p.scores, maps_small.flatten(1).sum(1))   # score = sum of the map
    _round_trip(m, _imgs(2, 64, seed=2), tmp_path)
    with pytest.raises(ValueError, match='image_size=32'): m.predict(_imgs(1, 32))


def test_dfr_resumes_exactly(tmp_path):
    _resumes_exactly(lambda: DFR(epochs=3, batch_size=2, stride=8, seed=0), _imgs(4), tmp_path)


# --- DRAEM --------------------------------------------------------------------------------------------------
from adtutor.draem import (fade, perlin_noise, perlin_mask, rotate, anomaly_sources, augment_source, AUGMENTS, synthesize,
                           ReconstructiveNet, DiscriminativeNet, focal_loss, DRAEM)


def test_perlin_noise():
    g = torch.Generator().manual_seed(0)
    n = perlin_noise((64, 96), (4, 6), g)
    assert n.shape == (64, 96) and float(n.abs().max()) <= 1
    assert torch.allclose(n[::16, ::16], torch.zeros(4, 6), atol=1e-6)                       # zero on the lattice
    assert torch.equal(perlin_noise((32, 32), (2, 2), torch.Generator().manual_seed(5)),
                       perlin_noise((32, 32), (2, 2), torch.Generator().manual_seed(5)))
    rough = lambda r: float(torch.stack([perlin_noise((64, 64), r, g) for _ in range(5)]).diff(dim=-1).abs().mean())
    assert rough((2, 2)) < rough((8, 8)) < rough((32, 32))
    t = torch.linspace(0, 1, 101)
    assert fade(t).diff().min() >= 0 and abs(float(fade(torch.tensor(0.5))) - 0.5) < 1e-7
    with pytest.raises(ValueError, match='multiple of res'): perlin_noise((30, 30), (4, 4))


def test_perlin_mask_and_rotate():
    g = torch.Generator().manual_seed(1)
    ms = torch.stack([perlin_mask(64, g) for _ in range(30)])
    assert set(ms.unique().tolist()) <= {0., 1.} and 0.01 < float(ms.mean()) < 0.4
    assert torch.allclose(rotate(torch.eye(8), 90).flip(-1), torch.eye(8), atol=1e-5)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(rotate(x, 0.), x, atol=1e-6) and torch.allclose(rotate(rotate(x, 90.), -90.), x, atol=1e-5)
    with pytest.raises(ValueError, match='multiple of 32'): perlin_mask(48)


def test_anomaly_sources(tmp_path):
    from PIL import Image
    b, desc = anomaly_sources('builtin', 32, n=11, seed=0)
    assert b.shape == (11, 3, 32, 32) and 0 <= float(b.min()) and float(b.max()) <= 1 and 'no DTD' in desc
    assert torch.equal(b, anomaly_sources('builtin', 32, n=11, seed=0)[0])
    p, pdesc = anomaly_sources('perlin', 32, n=2, seed=0)
    assert p.shape == (2, 3, 32, 32) and 'perlin' in pdesc
    for i in range(3): Image.fromarray((np.random.default_rng(i).random((40, 50, 3)) * 255).astype(np.uint8)).save(tmp_path / f'{i}.png')
    f, fdesc = anomaly_sources(str(tmp_path), 32, n=2, seed=0)
    assert f.shape == (2, 3, 32, 32) and '2 of its 3 images' in fdesc
    with pytest.raises(FileNotFoundError, match='no images found'): anomaly_sources(str(tmp_path / 'none'), 32, 2)


def test_augment_and_synthesize():
    src = anomaly_sources('builtin', 32, n=4, seed=0)[0]
    for name, (f, (lo, hi)) in AUGMENTS.items():
        assert f(src[0], (lo + hi) / 2).shape == (3, 32, 32), name
    g = torch.Generator().manual_seed(0)
    out = augment_source(src[0], g)
    assert out.shape == src[0].shape and 0 <= float(out.min()) and float(out.max()) <= 1
    x = _imgs(6, 32)
    a, m = synthesize(x, src, p_anomaly=1.0, generator=torch.Generator().manual_seed(2))
    assert a.shape == x.shape and m.shape == (6, 1, 32, 32)
    assert bool((((a - x).abs().sum(1, keepdim=True) > 0) <= (m > 0)).all())            # nothing changes outside the mask
    a0, m0 = synthesize(x, src, p_anomaly=0.0)
    assert torch.equal(a0, x) and not m0.any()
    a1, _ = synthesize(x, src, p_anomaly=1.0, beta=(1.0, 1.0), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(a1, x)                                                          # beta = 1 keeps the original
    with pytest.raises(ValueError, match='one size'): synthesize(x, anomaly_sources('builtin', 64, n=2)[0])


def test_draem_networks_and_focal():
    assert ReconstructiveNet(3, 4)(_imgs(2, 32)).shape == (2, 3, 32, 32)
    assert DiscriminativeNet(6, 4)(torch.rand(2, 6, 64, 64)).shape == (2, 2, 64, 64)
    n = sum(p.numel() for p in ReconstructiveNet(3, 128).parameters()) + sum(p.numel() for p in DiscriminativeNet(6, 64).parameters())
    assert 97.3e6 < n < 97.5e6                                                           # the paper's (and anomalib's) 97.4 M
    lg, tg = torch.randn(2, 2, 8, 8), (torch.rand(2, 8, 8) > 0.7).long()
    assert torch.allclose(focal_loss(lg, tg, gamma=0), F.cross_entropy(lg, tg), atol=1e-6)
    pt = F.softmax(lg, 1).gather(1, tg[:, None])[:, 0]
    assert torch.allclose(focal_loss(lg, tg), (-(1 - pt) ** 2 * pt.log()).mean(), atol=1e-6)


def test_draem_contract(tmp_path):
    m = DRAEM(size=32, recon_width=4, disc_width=4, epochs=2, batch_size=4, n_sources=4, score_window=5, seed=0)
    m.fit(_imgs(6), progress=False)
    p = m.predict(_imgs(3, 64, seed=1))
    assert p.maps.shape == (3, 64, 64) and 0 <= float(p.maps.min()) and float(p.maps.max()) <= 1
    assert 'builtin' in m.fit_stats['anomaly_source_info']
    _round_trip(m, _imgs(2, 64, seed=2), tmp_path)
    with pytest.raises(ValueError, match='multiple of 32'): DRAEM(size=48)
    with pytest.raises(ValueError, match='odd'): DRAEM(score_window=4)


def test_draem_resumes_exactly(tmp_path):
    _resumes_exactly(lambda: DRAEM(size=32, recon_width=4, disc_width=4, epochs=3, batch_size=4, n_sources=4, seed=0),
                     _imgs(8), tmp_path)


# --- RIAD ---------------------------------------------------------------------------------------------------
from adtutor.riad import disjoint_masks, gradient_magnitude, gms_map, msgms_map, UNet, inpaint, riad_loss, RIAD, PREWITT


def test_disjoint_masks():
    m = disjoint_masks(32, 4, 3, torch.Generator().manual_seed(0))
    assert m.shape == (3, 1, 32, 32) and torch.equal(m.sum(0), torch.ones(1, 32, 32))
    cells = m[:, 0, ::4, ::4].sum((1, 2))
    assert int(cells.max() - cells.min()) <= 1                                   # balanced sets of squares
    assert torch.equal(m[:, :, :4, :4], m[:, :, :1, :1].expand(3, 1, 4, 4))      # constant on each square
    with pytest.raises(ValueError, match='multiple of the square size'): disjoint_masks(30, 4)


def test_gms_against_scipy():
    from scipy import ndimage
    x = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lum = x.mean(1).numpy(); k = PREWITT.double().numpy()
    ref = np.stack([np.sqrt(ndimage.correlate(l, k, mode='nearest') ** 2 + ndimage.correlate(l, k.T, mode='nearest') ** 2 + 1e-12) for l in lum])
    assert np.allclose(gradient_magnitude(x).numpy(), ref, atol=1e-10)
    y = x.flip(-1)
    gx, gy = torch.tensor(ref), gradient_magnitude(y)
    assert torch.allclose(gms_map(x, y), (2 * gx * gy + 0.0026) / (gx ** 2 + gy ** 2 + 0.0026))
    assert torch.allclose(msgms_map(x, x), torch.ones(2, 24, 40, dtype=x.dtype), atol=1e-12)
    assert torch.allclose(msgms_map(x, x + 0.3), torch.ones(2, 24, 40, dtype=x.dtype), atol=1e-6)   # blind to exposure


def test_inpaint_never_sees_its_square():
    net = UNet(3, 4).eval()
    x = _imgs(1, 32)
    m = disjoint_masks(32, 8, 3, torch.Generator().manual_seed(1))
    y0, x0 = torch.nonzero(m[1, 0])[0].tolist()
    x2 = x.clone(); x2[..., y0:y0 + 8, x0:x0 + 8] = 1 - x2[..., y0:y0 + 8, x0:x0 + 8]
    with torch.no_grad(): r1, r2 = inpaint(net, x, m), inpaint(net, x2, m)
    assert torch.equal(r1[..., y0:y0 + 8, x0:x0 + 8], r2[..., y0:y0 + 8, x0:x0 + 8]) and not torch.equal(r1, r2)
    assert UNet(3, 4)(_imgs(2, 32)).shape == (2, 3, 32, 32)
    t = riad_loss(x, x)
    assert float(t['loss']) < 1e-5 and set(t) == {'loss', 'gms', 'ssim', 'l2'}


def test_riad_contract(tmp_path):
    m = RIAD(size=32, width=4, square_sizes=[2, 4, 8], epochs=2, batch_size=4, seed=0).fit(_imgs(6), progress=False)
    x = _imgs(2, 64, seed=1)
    p = m.predict(x)
    assert p.maps.shape == (2, 64, 64) and torch.equal(p.maps, m.predict(x).maps)   # masks at test time are seeded: repeatable
    _round_trip(m, _imgs(2, 64, seed=2), tmp_path)
    with pytest.raises(ValueError, match='multiple of 16'): RIAD(size=40)
    with pytest.raises(ValueError, match='at least 2'): RIAD(n_sets=1)


def test_riad_resumes_exactly(tmp_path):
    _resumes_exactly(lambda: RIAD(size=32, width=4, square_sizes=[2, 4], epochs=3, batch_size=4, seed=0), _imgs(8), tmp_path)


# --- DSR ----------------------------------------------------------------------------------------------------
from adtutor.dsr import VectorQuantizer, DiscreteModel, swap_codes, SubspaceRestriction, DSRNets, code_anomalies, DSR


def test_vector_quantizer():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4)
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    q, loss, idx = vq(z)
    d = (z.detach().permute(0, 2, 3, 1).reshape(-1, 1, 4) - vq.codebook.weight.detach()[None]).pow(2).sum(-1)   # exact distances
    assert torch.allclose(d.gather(1, idx.reshape(-1, 1))[:, 0], d.min(1).values, atol=1e-6)   # each position got a nearest code
    assert torch.allclose(q, vq.lookup(idx))
    q.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))                                   # straight-through gradient
    e = vq.lookup(idx).detach()
    assert torch.allclose(loss, F.mse_loss(e, z.detach()) * 1.25)                       # codebook + 0.25 x commitment


def test_swap_codes():
    g = torch.Generator().manual_seed(0)
    cb = torch.randn(40, 3, generator=g)
    z = torch.randn(2, 3, 4, 4, generator=g)
    q = cb[torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, 3), cb).argmin(1)].view(2, 4, 4, 3).permute(0, 3, 1, 2)
    mask = torch.zeros(2, 1, 16, 16); mask[:, :, :8] = 1
    out, m = swap_codes(z, q, cb, mask, torch.tensor([0.3, 1.0]), g)
    assert m.shape == (2, 1, 4, 4) and torch.equal(out[:, :, 2:], q[:, :, 2:])        # outside the mask: untouched
    inside = out[:, :, :2].permute(0, 2, 3, 1).reshape(-1, 3)
    assert all(bool((cb == v).all(1).any()) for v in inside)                            # swapped vectors are codebook vectors
    near = torch.cdist(z[0, :, :2].permute(1, 2, 0).reshape(-1, 3), cb).argsort(1)[:, :2]   # the nearest 5 % (2 of 40) are never picked
    picked = torch.cdist(out[0, :, :2].permute(1, 2, 0).reshape(-1, 3), cb).argmin(1)
    assert not bool((near == picked[:, None]).any())


def test_dsr_modules():
    dm = DiscreteModel(16, 32, 8)
    x = _imgs(2, 64)
    e = dm.encode(x)
    assert e['q_lo'].shape == (2, 8, 8, 8) and e['q_hi'].shape == (2, 8, 16, 16) and dm.decode(e['q_lo'], e['q_hi']).shape == x.shape
    dm.init_codebooks(x, torch.Generator().manual_seed(0))
    z = dm.encode(x)['z_lo'].permute(0, 2, 3, 1).reshape(-1, 8)
    cb = dm.vq_lo.codebook.weight.detach()
    assert float((cb[:, None] - z[None]).abs().sum(-1).amin(1).max()) < 1e-6          # every code starts at a feature
    assert SubspaceRestriction(8, 4)(e['q_hi']).shape == e['q_hi'].shape
    b = code_anomalies(dm.eval(), x, generator=torch.Generator().manual_seed(1))
    assert b['mask'].shape == (2, 1, 64, 64) and b['q_hi'].shape == e['q_hi'].shape


def test_dsr_contract(tmp_path):
    m = DSR(size=64, hidden=8, codebook_size=16, code_dim=8, restrict_width=4, detect_width=4, vq_epochs=1, epochs=1,
            upsample_epochs=1, batch_size=4, seed=0).fit(_imgs(4), progress=False)
    assert set(m.histories) == {'vq', 'restrict', 'upsample'} and 'ImageNet' in m.fit_stats['vq_model']
    p = m.predict(_imgs(2, 64, seed=1))
    assert p.maps.shape == (2, 64, 64) and 0 <= float(p.maps.min()) and float(p.maps.max()) <= 1
    _round_trip(m, _imgs(2, 64, seed=2), tmp_path)
    with pytest.raises(ValueError, match='multiple of 32'): DSR(size=48)
    with pytest.raises(ValueError, match="'normal' or 'normal\+synthetic'"): DSR(vq_data='imagenet')


def test_dsr_resumes_exactly(tmp_path):
    _resumes_exactly(lambda: DSR(size=64, hidden=8, codebook_size=16, code_dim=8, restrict_width=4, detect_width=4, vq_epochs=2,
                                 epochs=2, upsample_epochs=0, batch_size=4, seed=0), _imgs(4), tmp_path, kill_at=1)


def _benchmark():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / 'benchmarks' / 'reconstruction_vs_anomalib.py'
    spec = importlib.util.spec_from_file_location('reconstruction_vs_anomalib', path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_reconstruction_benchmark_resumes_from_parts(tmp_path, monkeypatch):
    "benchmarks/reconstruction_vs_anomalib.py reuses a kept (method, side) part only for the same settings, and tables what has both sides."
    bench = _benchmark()
    monkeypatch.setattr(bench, 'PARTS', tmp_path)
    args = bench.argparse.Namespace(methods=['draem'], draem_epochs=2, fre_epochs=220, seed=0, quick=False, fresh=False)
    def result(auroc, secs):
        return {'image_auroc': auroc, 'pixel_auroc': auroc, 'aupro': auroc / 2, 'seconds_per_epoch': secs, 'fit_s': 2 * secs,
                'infer_ms_per_image': secs, 'peak_rss_mb': 100 * secs, 'peak_rss_above_baseline_mb': 50 * secs}
    run = {'time': 't', 'env': {'git_commit': 'abc'}, 'torch_threads': 1, 'baseline_rss_mb': 1, 'loadavg_start': [1, 1, 1], 'loadavg_end': [2, 2, 2]}
    for side, r in (('adtutor', result(0.9, 2.0)), ('anomalib', result(0.8, 5.0))):
        bench.part_path('draem', side, False).write_text(bench.json.dumps(
            {'settings': bench.part_settings('draem', args), 'n_train': 209, 'n_test': 83, 'result': r, 'run': run}))
    assert bench.load_part('draem', 'adtutor', args)['result']['image_auroc'] == 0.9
    assert bench.load_part('fre', 'adtutor', args) is None                                  # never ran
    other = bench.argparse.Namespace(**{**vars(args), 'draem_epochs': 3})
    assert bench.load_part('draem', 'adtutor', other) is None                               # other settings: not reused
    parts = {m: {s: bench.load_part(m, s, args) for s in ('adtutor', 'anomalib')} for m in ('fre', 'draem')}
    res = bench.combine(parts, args)
    assert list(res['results']) == ['draem'] and res['setting']['n_train'] == 209            # fre has no parts: left out
    r = res['results']['draem']
    assert r['epoch_speedup'] == pytest.approx(2.5) and r['peak_memory_ratio'] == pytest.approx(0.4)
    assert r['accuracy_ratio']['image_auroc'] == pytest.approx(0.9 / 0.8)
    md = bench.markdown(res)
    assert '| draem | adtutor | 0.9000 |' in md and '2.50×' in md and 'abc' in md
