"""adtutor.evaluation: one tidy record per run, saved atomically, loaded into tables."""
import json, math, subprocess, sys, warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset, DataLoader

from adtutor.core import MeanImage
from adtutor.evaluation import evaluate, save_record, load_records, results_table
from adtutor.metrics import all_metrics, METRIC_KEYS, UndefinedMetricWarning


class Tiny(Dataset):
    "Small in-memory test set: flat grey images; defective ones carry a bright square that the mask marks."
    name, category = 'tiny', 'squares'
    def __init__(self, n_good=6, n_bad=6, size=32, seed=0, train=False):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n_good + (0 if train else n_bad)):
            bad = i >= n_good
            img = 0.5 + 0.02 * torch.randn(3, size, size, generator=g)
            mask = torch.zeros(size, size, dtype=torch.uint8)
            if bad:
                y, x = torch.randint(2, size - 10, (2,), generator=g).tolist(); s = 3 + i % 5
                img[:, y:y + s, x:x + s] += 0.4; mask[y:y + s, x:x + s] = 1
            self.items.append({'image': img.clamp(0, 1), 'mask': mask, 'label': int(bad),
                               'defect': 'square' if bad else 'good', 'path': f'img_{i:03d}.png'})
    def __len__(self): return len(self.items)
    def __getitem__(self, i): return self.items[i]


@pytest.fixture(scope='module')
def fitted():
    return MeanImage(blur_sigma=1.0).fit(Tiny(n_good=8, train=True, seed=1))


def test_record_contents(fitted):
    test = Tiny()
    rec, preds = evaluate(fitted, test, settings=dict(data='tiny', category=None, seed=3, quick=True, epochs=0), batch_size=4,
                          progress=False, return_predictions=True)
    expect = set(METRIC_KEYS) | {'fit_seconds', 'fit_peak_rss_mb', 'infer_ms_per_image', 'images_per_second', 'infer_peak_rss_mb',
                                 'latency_ms_batch1', 'params', 'extra_params_mb', 'memory_bank', 'method', 'dataset', 'category',
                                 'backbone', 'weights', 'weights_sha256', 'image_size', 'seed', 'data', 'quick', 'epochs',
                                 'n_train', 'n_test', 'n_test_defective', 'config', 'git_commit', 'torch', 'numpy',
                                 'timestamp', 'status', 'fpr_limit'}
    assert expect <= set(rec), expect - set(rec)
    assert rec['status'] == 'ok' and rec['method'] == 'MeanImage'
    assert (rec['dataset'], rec['category'], rec['image_size'], rec['seed']) == ('tiny', 'squares', 32, 3)
    assert (rec['n_train'], rec['n_test'], rec['n_test_defective']) == (8, 12, 6)
    assert json.loads(rec['config']) == {'blur_sigma': 1.0}
    assert rec['fit_seconds'] == fitted.fit_stats['fit_seconds'] and rec['infer_ms_per_image'] > 0 and rec['latency_ms_batch1'] > 0
    assert rec['params'] == 0 and rec['extra_params_mb'] == 0
    # the metrics are those of the predictions, and the squares are easy to find
    ref = all_metrics(preds['scores'], preds['labels'], preds['maps'], preds['masks'])
    assert all(rec[k] == ref[k] for k in METRIC_KEYS)
    assert rec['image_auroc'] == 1.0 and rec['aupro'] > 0.9
    assert set(preds) >= {'scores', 'maps', 'labels', 'masks', 'defects', 'paths'} and preds['maps'].shape == (12, 32, 32)
    json.dumps(rec)   # JSON-able as is


def test_record_is_deterministic_in_metrics(fitted):
    a = evaluate(fitted, Tiny(), progress=False, latency_images=0)
    b = evaluate(fitted, DataLoader(Tiny(), batch_size=5), batch_size=7, progress=False, latency_images=0)
    assert all(a[k] == b[k] for k in METRIC_KEYS) and a['latency_ms_batch1'] is None


def test_no_defects_gives_nan_with_warning(fitted):
    with pytest.warns(UndefinedMetricWarning):
        rec = evaluate(fitted, Tiny(n_bad=0), progress=False, latency_images=0)
    assert rec['status'] == 'ok' and math.isnan(rec['image_auroc']) and math.isnan(rec['aupro']) and rec['n_test_defective'] == 0


def test_without_masks_only_image_metrics(fitted):
    class NoMask(Tiny):
        def __getitem__(self, i): return {k: v for k, v in self.items[i].items() if k != 'mask'}
    rec = evaluate(fitted, NoMask(), progress=False, latency_images=0)
    assert rec['image_auroc'] == 1.0 and math.isnan(rec['pixel_auroc']) and math.isnan(rec['aupro'])


def test_bad_inputs(fitted):
    with pytest.raises(RuntimeError, match='not fitted'): evaluate(MeanImage(), Tiny(), progress=False)
    with pytest.raises(ValueError, match='no labels'): evaluate(fitted, torch.rand(4, 3, 32, 32), progress=False)
    with pytest.raises(TypeError, match='AnomalyModel'): evaluate(object(), Tiny(), progress=False)
    with pytest.warns(UserWarning, match="settings\\['method'\\]"):
        rec = evaluate(fitted, Tiny(), settings=dict(method='PatchCore'), progress=False, latency_images=0)
    assert rec['method'] == 'MeanImage' and rec['settings_method'] == 'PatchCore'


def test_save_load_roundtrip(fitted, tmp_path):
    rec = evaluate(fitted, Tiny(), settings=dict(seed=0), progress=False, latency_images=0)
    save_record(rec, tmp_path / 'runs' / 'a' / 'record.json')
    save_record({**rec, 'seed': 1, 'aupro': float('nan'), 'method': 'Other'}, tmp_path / 'runs' / 'b.json')
    save_record({**rec, 'status': 'failed'}, tmp_path / 'runs' / 'c.json')
    text = (tmp_path / 'runs' / 'b.json').read_text()
    assert 'NaN' not in text and '"aupro": null' in text          # strict JSON
    (tmp_path / 'runs' / 'broken.json').write_text('{oops')
    (tmp_path / 'runs' / '.attempt-1').mkdir(); save_record(rec, tmp_path / 'runs' / '.attempt-1' / 'record.json')
    with pytest.warns(UserWarning, match='broken.json'): df = load_records(tmp_path / 'runs')
    assert len(df) == 3 and df['aupro'].isna().sum() == 1                      # hidden folders skipped
    assert df.loc[df['seed'] == 0, 'image_auroc'].iloc[0] == rec['image_auroc']
    assert len(load_records([tmp_path / 'runs' / 'b.json'])) == 1
    with pytest.raises(FileNotFoundError, match='no record'): load_records(tmp_path / 'nowhere')
    with pytest.raises(TypeError): save_record([1, 2], tmp_path / 'x.json')
    assert not list(tmp_path.rglob('*.tmp'))
    tab = results_table(df)
    assert list(tab.columns) == ['MeanImage', 'Other'] and list(tab.index) == ['squares', 'mean']
    assert tab.loc['squares', 'MeanImage'] == f"{rec['image_auroc'] * 100:.1f} / {rec['pixel_auroc'] * 100:.1f}"


def test_results_table_layout():
    rows = [('A', 'x', 0, 0.9, 0.8, 'ok'), ('A', 'x', 1, 0.8, 0.7, 'ok'), ('A', 'y', 0, 0.5, 0.5, 'ok'),
            ('B', 'x', 0, 1.0, 0.9, 'ok'), ('B', 'y', 0, 0.1, 0.1, 'failed')]
    df = pd.DataFrame([dict(method=m, category=c, seed=s, image_auroc=a, pixel_auroc=b, status=st) for m, c, s, a, b, st in rows])
    t = results_table(df)
    assert t.loc['x', 'A'] == '85.0 / 75.0' and t.loc['y', 'A'] == '50.0 / 50.0'
    assert t.loc['y', 'B'] == '– / –' and t.loc['mean', 'B'] == '– / –'       # failed runs are left out
    assert t.loc['mean', 'A'] == '67.5 / 62.5'
    assert results_table(df, 'image_auroc', digits=2).loc['x', 'B'] == '100.00'
    with pytest.raises(KeyError, match='aupro'): results_table(df, ('aupro',))


def test_lazy_top_level_evaluate():
    code = ('import sys, adtutor; assert "torch" not in sys.modules, "import adtutor must stay light"; '
            'from adtutor.evaluation import evaluate; assert adtutor.evaluate is evaluate')
    subprocess.run([sys.executable, '-c', code], check=True)
