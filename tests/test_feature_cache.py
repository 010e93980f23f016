"""The feature cache: a model fitted and evaluated with the cache (cold and warm) gives bit-identical results to one
without it; concurrent writers and damaged files never give wrong features."""
import os, sys, subprocess, textwrap
from pathlib import Path

import numpy as np
import pytest, torch

from adtutor import feature_cache as FC
from adtutor.backbones import FeatureExtractor


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('ADTUTOR_FEATURE_CACHE_DIR', str(tmp_path / 'fc'))
    monkeypatch.setenv('ADTUTOR_FEATURE_CACHE', '1')
    return tmp_path / 'fc'


def _images(n, seed=0, size=96):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _fit_predict(monkeypatch, on: bool):
    from adtutor.padim import PaDiM
    monkeypatch.setenv('ADTUTOR_FEATURE_CACHE', '1' if on else '0')
    before = dict(FC.STATS)
    m = PaDiM().fit(_images(8)); p = m.predict(_images(3, seed=1))
    return p, {k: FC.STATS[k] - before[k] for k in before}


def test_bitwise_identical_with_and_without_cache(cache, monkeypatch):
    off, s_off = _fit_predict(monkeypatch, False)
    cold, s_cold = _fit_predict(monkeypatch, True)
    warm, s_warm = _fit_predict(monkeypatch, True)
    for p in (cold, warm):
        assert torch.equal(p.scores, off.scores) and torch.equal(p.maps, off.maps)
    assert s_off == {'extracted': 11, 'cached': 0} and s_cold == {'extracted': 11, 'cached': 0}
    assert s_warm == {'extracted': 0, 'cached': 11}


def test_damaged_entry_is_a_miss(cache):
    fx = FeatureExtractor('tf_efficientnet_lite0', ('blocks.2',))
    x = _images(2)
    ref = FC.cached_features(fx, x)
    files = sorted(cache.glob('*/*.npz')); assert len(files) == 2
    files[0].write_bytes(b'not an npz')                 # damaged
    (files[1].parent / '.x.npz.123.tmp').write_bytes(b'half')   # an interrupted write's leftover is not an entry
    again = FC.cached_features(fx, x)
    assert torch.equal(again['blocks.2'], ref['blocks.2']) and FC.cache_size(cache)[0] == 2


def test_concurrent_writers(cache, tmp_path):
    "Two processes fill the same entries at once; every entry ends up whole and correct."
    script = textwrap.dedent('''
        import torch, sys
        from adtutor.backbones import FeatureExtractor
        from adtutor.feature_cache import cached_features
        fx = FeatureExtractor('tf_efficientnet_lite0', ('blocks.2', 'blocks.4'))
        x = torch.rand(6, 3, 96, 96, generator=torch.Generator().manual_seed(0))
        for _ in range(3): out = cached_features(fx, x)
        torch.save(out, sys.argv[1])
    ''')
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    procs = [subprocess.Popen([sys.executable, '-c', script, str(tmp_path / f'o{i}.pt')], env=env) for i in range(2)]
    assert all(p.wait(300) == 0 for p in procs)
    a, b = (torch.load(tmp_path / f'o{i}.pt') for i in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert FC.cache_size(cache)[0] == 6


def test_size_limit(cache):
    fx = FeatureExtractor('tf_efficientnet_lite0', ('blocks.2',))
    FC.cached_features(fx, _images(6))
    n, size = FC.cache_size(cache)
    removed = FC.prune(cache, limit=size // 3)
    assert removed >= 4 and FC.cache_size(cache)[1] <= 0.9 * size // 3 + 1
