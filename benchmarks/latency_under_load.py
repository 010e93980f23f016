"""Single-image latency of PatchCore on a quiet and on a loaded 2-core machine, with adtutor's thread policy (one thread
for a small batch on the CPU) and without it (all threads). Writes benchmarks/results/latency_under_load.{json,md}.

    python benchmarks/latency_under_load.py [--data builtin|mvtec] [--category pcb] [--calls 40]

"Loaded": another process keeps one core busy (a 1-thread numpy matrix-product loop), as a second job on a shared
machine does. Figures are what this machine measured in this run; nothing is typed in.
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

import numpy as np
import torch

from adtutor import core
from adtutor.core import atomic_write_json, atomic_write_text, env_info
from adtutor.data import get_data
from adtutor.patchcore import PatchCore

ROOT = Path(__file__).resolve().parents[1]
BUSY = ("import os; os.environ['OMP_NUM_THREADS'] = '1'\n"
        "import numpy as np\na = np.random.rand(400, 400)\nwhile True: a = (a @ a) / 400")


def latencies(model, images, calls: int) -> np.ndarray:
    model.predict(images[0])                       # warm-up
    out = []
    for i in range(calls):
        x = images[i % len(images)]
        t0 = time.perf_counter(); model.predict(x); out.append((time.perf_counter() - t0) * 1000)
    return np.array(out)


def summary(ms: np.ndarray) -> dict:
    return {'median_ms': float(np.median(ms)), 'p90_ms': float(np.percentile(ms, 90)), 'max_ms': float(ms.max()), 'calls': len(ms)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default='builtin'); ap.add_argument('--category', default=None)
    ap.add_argument('--calls', type=int, default=40)
    a = ap.parse_args(argv)
    train, test = get_data(a.data, a.category)
    model = PatchCore().fit(train)
    images = [test[i]['image'][None] for i in range(min(20, len(test)))]
    batch = torch.stack([test[i]['image'] for i in range(min(32, len(test)))])
    rows = []
    for load in ('quiet', 'loaded'):
        busy = subprocess.Popen([sys.executable, '-c', BUSY]) if load == 'loaded' else None
        try:
            time.sleep(1.0 if busy else 0)
            for policy, small in (('one thread for batch 1 (default)', core.SMALL_BATCH), ('all threads', 0)):
                core.SMALL_BATCH = small
                rows.append({'load': load, 'policy': policy, 'threads': torch.get_num_threads(), **summary(latencies(model, images, a.calls))})
            core.SMALL_BATCH = 2
            t0 = time.perf_counter(); model.predict(batch); b = (time.perf_counter() - t0) * 1000 / len(batch)
            rows.append({'load': load, 'policy': f'batch {len(batch)}, all threads', 'threads': torch.get_num_threads(),
                         'median_ms': b, 'p90_ms': None, 'max_ms': None, 'calls': 1})
        finally:
            if busy: busy.kill(); busy.wait()
    env = env_info()
    rec = {'written': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'data': a.data, 'category': train.category,
           'model': 'PatchCore (defaults)', 'backbone': model.backbone_info.get('name'), 'weights': model.backbone_info.get('weights'),
           'image_size': list(images[0].shape[-2:]), 'seed': 0, 'cpus': os.cpu_count(), 'git_commit': env.get('git_commit'),
           'load_average_at_start': os.getloadavg()[0], 'rows': rows}
    out = ROOT / 'benchmarks' / 'results'
    atomic_write_json(out / 'latency_under_load.json', rec)
    f = lambda v: '–' if v is None else f'{v:.1f}'
    md = ['# Single-image latency under load (PatchCore)', '',
          f"Written by `benchmarks/latency_under_load.py` at {rec['written']} (commit {rec['git_commit']}): {rec['data']}/{rec['category']}, "
          f"{rec['backbone']} ({rec['weights']}), {rec['image_size'][0]} px, seed 0, {rec['cpus']} CPU cores, load average "
          f"{rec['load_average_at_start']:.1f} when it started. 'loaded': a second process keeps one core busy.", '',
          '| machine | policy | median ms | p90 ms | max ms |', '|---|---|---|---|---|']
    md += [f"| {r['load']} | {r['policy']} | {f(r['median_ms'])} | {f(r['p90_ms'])} | {f(r['max_ms'])} |" for r in rows]
    atomic_write_text(out / 'latency_under_load.md', '\n'.join(md) + '\n')
    print('\n'.join(md))


if __name__ == '__main__': main()
