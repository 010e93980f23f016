#!/usr/bin/env python
"""Training throughput and inference speed of the one-class family (Deep SVDD, SimpleNet, and the other labs of
nbs/one_class as they are added), at their lab defaults, on the built-in data (pcb, resize 256 -> crop 224) or on
real MVTec AD (--data mvtec --category bottle).

For each method: a fit of `--epochs` epochs (the per-epoch figures come from the training history, so a short fit
measures the same s/epoch as the full schedule), training images/s (images seen per second of training, feature
precomputation excluded, as fit_loop times it), fit seconds (everything), inference ms/image at batch 16 and at
batch 1, and peak RSS. Run it alone:

    flock /tmp/adtutor-heavy.lock python benchmarks/one_class_speed.py            # built-in pcb
    flock /tmp/adtutor-heavy.lock python benchmarks/one_class_speed.py --data mvtec --category bottle

Writes benchmarks/results/one_class_speed_<data>.json and .md (atomically).
"""
from __future__ import annotations
import argparse, datetime, os, time
from pathlib import Path

import numpy as np
import torch

from adtutor.core import ResourceMonitor, atomic_write_json, atomic_write_text, env_info, repo_root, seed_everything
from adtutor.data import get_data

RESULTS = (repo_root() or Path(__file__).resolve().parents[1]) / 'benchmarks' / 'results'


def methods(epochs: int) -> dict:
    "name -> (class, kwargs for a short fit at the lab defaults) for every one-class lab this checkout has."
    import importlib
    table = {'deep_svdd': ('adtutor.deep_svdd', 'DeepSVDD', dict(ae_epochs=epochs, ae_lr_milestone=0, epochs=epochs, lr_milestone=0)),
             'simplenet': ('adtutor.simplenet', 'SimpleNet', dict(epochs=epochs)),
             'cutpaste': ('adtutor.cutpaste', 'CutPaste', dict(epochs=epochs)),
             'patch_svdd': ('adtutor.patch_svdd', 'PatchSVDD', dict(epochs=epochs)),
             'fcdd': ('adtutor.fcdd', 'FCDD', dict(epochs=epochs))}
    out = {}
    for name, (mod, cls, kw) in table.items():
        try: out[name] = (getattr(importlib.import_module(mod), cls), kw)
        except ImportError: print(f'{name}: not in this checkout, skipped')
    return out


def measure(name, cls, kw, train, test) -> dict:
    seed_everything(0)
    model = cls(**kw)
    with ResourceMonitor() as mon: model.fit(train, progress=False)
    h = model.history.epochs
    per_epoch = float(h.seconds.median())
    phases = {}
    if getattr(model, 'ae_history', None) is not None:
        phases['ae_seconds_per_epoch'] = float(model.ae_history.epochs.seconds.median())
    x16 = torch.stack([test[i]['image'] for i in range(min(16, len(test)))])
    model.predict(x16[:2])   # warm-up
    t = []
    for _ in range(3):
        t0 = time.perf_counter(); model.predict(x16); t.append(time.perf_counter() - t0)
    t1 = []
    for i in range(5):
        t0 = time.perf_counter(); model.predict(x16[i:i + 1]); t1.append(time.perf_counter() - t0)
    return dict(method=name, cls=cls.__name__, config={k: v for k, v in model.config.items() if isinstance(v, (int, float, str, bool, type(None)))},
                n_train=len(train), epochs_timed=len(h), seconds_per_epoch=per_epoch, train_images_per_s=len(train) / per_epoch,
                **phases, fit_seconds=mon.seconds, fit_peak_rss_mb=mon.peak_mb,
                infer_ms_per_image_batch16=1000 * float(np.median(t)) / len(x16), infer_ms_batch1=1000 * float(np.median(t1)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default='builtin'); ap.add_argument('--category', default=None)
    ap.add_argument('--epochs', type=int, default=3, help='epochs per training phase for the timing fit')
    ap.add_argument('--only', nargs='*', help='method names to run (default: all)')
    ap.add_argument('--out', default=str(RESULTS), help='folder for the results (default: benchmarks/results)')
    a = ap.parse_args(argv)
    train, test = get_data(a.data, a.category, 256, 224)
    load_start = os.getloadavg()[0]  # the machine's load beside this run: timings taken on a busy machine are upper bounds
    rows = []
    for name, (cls, kw) in methods(a.epochs).items():
        if a.only and name not in a.only: continue
        r = measure(name, cls, kw, train, test); rows.append(r)
        print(f"{name:10s} {r['seconds_per_epoch']:7.2f} s/epoch  {r['train_images_per_s']:7.1f} img/s  "
              f"infer {r['infer_ms_per_image_batch16']:6.1f} ms/img (batch 16), {r['infer_ms_batch1']:6.1f} ms (batch 1)", flush=True)
    stem = f'one_class_speed_{a.data}'
    meta = {**env_info(), 'data': a.data, 'category': train.category, 'image_size': 224, 'torch_threads': torch.get_num_threads(),
            'load_average_start_end': [round(load_start, 2), round(os.getloadavg()[0], 2)],
            'timestamp': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
    atomic_write_json(Path(a.out) / f'{stem}.json', dict(meta=meta, rows=rows))
    lines = [f'# One-class family: training and inference speed ({a.data}/{train.category}, 224 px, {len(train)} training images)', '',
             f'Written by `benchmarks/one_class_speed.py` on {meta["timestamp"]} ({meta["cpus"]} CPUs, {meta["torch_threads"]} torch threads, '
             f'git {meta["git_commit"]}; 1-minute load average at start/end {meta["load_average_start_end"][0]}/{meta["load_average_start_end"][1]}: '
             f'above the torch thread count, other jobs shared the CPUs and the times are upper bounds). Per-epoch figures are medians over a {a.epochs}-epoch fit; feature precomputation is in fit seconds only.', '',
             '| method | s/epoch | training images/s | AE pretraining s/epoch | fit s (timing run) | inference ms/image (batch 16) | ms (batch 1) | peak RSS MiB |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        ae = f"{r['ae_seconds_per_epoch']:.2f}" if 'ae_seconds_per_epoch' in r else '–'
        lines.append(f"| {r['method']} | {r['seconds_per_epoch']:.2f} | {r['train_images_per_s']:.1f} | {ae} | {r['fit_seconds']:.1f} | "
                     f"{r['infer_ms_per_image_batch16']:.1f} | {r['infer_ms_batch1']:.1f} | {r['fit_peak_rss_mb']:.0f} |")
    atomic_write_text(Path(a.out) / f'{stem}.md', '\n'.join(lines) + '\n')
    print('wrote', Path(a.out) / f'{stem}.md')


if __name__ == '__main__':
    main()
