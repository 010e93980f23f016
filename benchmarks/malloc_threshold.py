"""Training under glibc's 1 MiB mmap threshold (adtutor's import-time setting) versus inside `malloc_for_training`
(what `adtutor.train.fit_loop` does): seconds per epoch, minor page faults, peak memory, and the losses (which must be
identical: only where the memory comes from changes).

One FastFlow fit (tf_efficientnet_lite0 features, 224 x 224, batch 32, seed 0) on `--images` random images for
`--epochs` epochs, `--threads` torch threads, each setting in a child process of its own, `--repeats` times in
alternation. The 1 MiB side sets MALLOC_MMAP_THRESHOLD_=1048576, which keeps `malloc_for_training` out of the way.
The record names the CPU, the transparent-huge-page mode (it changes the cost of a page fault) and the load average.

    flock /tmp/adtutor-heavy.lock .venv/bin/python benchmarks/malloc_threshold.py

Writes benchmarks/results/malloc_threshold.{json,md}.
"""
from __future__ import annotations
import argparse, json, os, resource, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results'
SETTINGS = {'1 MiB (import-time)': {'MALLOC_MMAP_THRESHOLD_': '1048576'}, 'malloc_for_training': {}}


def child(args):
    "Fit once in this process; print one JSON line."
    import torch
    from adtutor.core import malloc_for_training
    from adtutor.fastflow import FastFlow
    torch.set_num_threads(args.threads)
    x = torch.rand(args.images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    m = FastFlow(backbone='tf_efficientnet_lite0', epochs=args.epochs, batch_size=32, input_size=224, seed=0)
    with malloc_for_training() as active: pass
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    m.fit(x, progress=False)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    fs = m.fit_stats
    print(json.dumps({'malloc_for_training_active': active, 'seconds_per_epoch': fs['seconds_per_epoch'],
                      'epoch_seconds': fs['epoch_seconds'], 'fit_minor_faults': faults, 'fit_peak_rss_mb': fs['fit_peak_rss_mb'],
                      'loss_per_epoch': fs['loss_per_epoch']}))


def run(name, args):
    env = {k: v for k, v in os.environ.items() if k != 'MALLOC_MMAP_THRESHOLD_'}
    env.update(SETTINGS[name], OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, '--child', '--epochs', str(args.epochs), '--images', str(args.images), '--threads', str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def machine():
    from adtutor.core import env_info
    thp = Path('/sys/kernel/mm/transparent_hugepage/enabled')
    e = env_info()
    return {'cpu': e.get('cpu'), 'cpus': e['cpus'], 'torch': e['torch'], 'git_commit': e['git_commit'],
            'transparent_hugepage': thp.read_text().strip() if thp.exists() else None, 'load_average': os.getloadavg()}


def markdown(res):
    m = res['machine']
    lines = [f"# Training memory: 1 MiB mmap threshold vs malloc_for_training",
             '', f"FastFlow (tf_efficientnet_lite0, 224 px, batch 32, seed 0), {res['images']} random images, {res['epochs']} epochs, "
             f"{res['threads']} torch thread(s), {res['repeats']} alternating run(s) per setting. CPU: {m['cpu']} ({m['cpus']} cores); "
             f"transparent huge pages: `{m['transparent_hugepage']}`; load average at the start {m['load_average'][0]:.2f}; "
             f"commit {m['git_commit']}; written by benchmarks/malloc_threshold.py.", '',
             '| setting | s / epoch (median of runs) | minor page faults in fit | fit peak RSS MB |', '|---|---|---|---|']
    for name, runs in res['runs'].items():
        med = lambda k: sorted(r[k] for r in runs)[len(runs) // 2]
        lines.append(f"| {name} | {med('seconds_per_epoch'):.2f} | {med('fit_minor_faults'):,} | {med('fit_peak_rss_mb'):.0f} |")
    lines += ['', f"Speed-up: {res['speedup']:.2f}x per epoch; page faults {res['fault_ratio']:.1f}x fewer; peak memory "
              f"{res['peak_ratio']:.2f}x. Losses identical in every epoch: {res['same_losses']}."]
    return '\n'.join(lines) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--epochs', type=int, default=3); ap.add_argument('--images', type=int, default=64)
    ap.add_argument('--threads', type=int, default=1); ap.add_argument('--repeats', type=int, default=2)
    args = ap.parse_args()
    if args.child: return child(args)
    sys.path.insert(0, str(ROOT))
    from adtutor.core import atomic_write_json, atomic_write_text
    res = {'benchmark': 'malloc_threshold', 'epochs': args.epochs, 'images': args.images, 'threads': args.threads,
           'repeats': args.repeats, 'machine': machine(), 'timestamp': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
           'runs': {name: [] for name in SETTINGS}}
    for _ in range(args.repeats):
        for name in SETTINGS: res['runs'][name].append(run(name, args))
    old, new = (res['runs'][n] for n in SETTINGS)
    if not all(r['malloc_for_training_active'] for r in new) or any(r['malloc_for_training_active'] for r in old):
        sys.exit('malloc_for_training was not active (or not inactive) where expected: not glibc? nothing written')
    med = lambda runs, k: sorted(r[k] for r in runs)[len(runs) // 2]
    res.update(speedup=med(old, 'seconds_per_epoch') / med(new, 'seconds_per_epoch'),
               fault_ratio=med(old, 'fit_minor_faults') / max(1, med(new, 'fit_minor_faults')),
               peak_ratio=med(new, 'fit_peak_rss_mb') / med(old, 'fit_peak_rss_mb'),
               same_losses=all(r['loss_per_epoch'] == old[0]['loss_per_epoch'] for r in old + new))
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / 'malloc_threshold.json', res)
    atomic_write_text(RESULTS / 'malloc_threshold.md', markdown(res))
    print(markdown(res))


if __name__ == '__main__':
    main()
