"""Peak memory and time of the memory-bank methods with a large training set: 2 000 images at 224 px.

Images are smooth random images generated on the fly by a Dataset (deterministic per index, so the images themselves
never occupy memory at once); the content does not matter for memory, only the count and the size. Each method runs
in its own child process; we report fit time, the peak resident set size during fit, the process's size before
fit (baseline), and what the method keeps (memory bank / statistics).

  * PatchCore (Lite0, blocks.2 + blocks.4, 152-d): all 2000 x 784 = 1.57 M patch features are held in one
    preallocated float32 matrix (953 MB) plus their 128-d projection for the coreset (803 MB); the coreset ratio is
    --coreset (default 0.01, so that the greedy search takes minutes rather than half an hour on 2 cores: the
    memory does not depend on it, apart from the kept bank);
  * SPADE keeps every pixel feature of every training image (953 MB) plus the global descriptors;
  * PaDiM keeps only per-position statistics (float64 sums while fitting).

    flock /tmp/adtutor-heavy.lock .venv/bin/python benchmarks/memory_bank_scaling.py [--n 2000] [--methods patchcore spade padim]
    .venv/bin/python benchmarks/memory_bank_scaling.py --coreset-only     # bank construction alone, random features, ~30 s

Writes benchmarks/results/memory_bank_scaling.{json,md}.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, tempfile, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'benchmarks' / 'results'


def child(method: str, n: int, size: int, coreset: float, out: str):
    import torch
    from torch.utils.data import Dataset
    from adtutor.core import rss_bytes, env_info
    class Smooth(Dataset):
        def __len__(self): return n
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            x = torch.nn.functional.avg_pool2d(torch.rand(1, 3, size // 8, size // 8, generator=g), 3, 1, 1)
            return {'image': torch.nn.functional.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)[0]}
    if method == 'patchcore':
        from adtutor.patchcore import PatchCore; m = PatchCore(coreset_ratio=coreset, batch_size=32)
    elif method == 'spade':
        from adtutor.spade import SPADE; m = SPADE(batch_size=32)
    else:
        from adtutor.padim import PaDiM; m = PaDiM(batch_size=32)
    base = rss_bytes() / 2**20
    m.fit(Smooth())
    kept = sum(b.numel() * b.element_size() for name, b in m.named_buffers() if not name.startswith('extractor.')) / 2**20
    r = {'method': method, 'n_images': n, 'image_size': size, 'baseline_rss_mb': base, 'fit_peak_rss_mb': m.fit_stats['fit_peak_rss_mb'],
         'fit_peak_above_baseline_mb': m.fit_stats['fit_peak_rss_mb'] - base, 'fit_seconds': m.fit_stats['fit_seconds'],
         'kept_buffers_mb': kept, 'loadavg_end': os.getloadavg(),
         **{k: v for k, v in m.fit_stats.items() if k in ('n_patch_features', 'memory_bank', 'features_seconds', 'coreset_seconds', 'pixel_bank_mb')}}
    if method == 'patchcore': r['coreset_ratio'] = coreset
    r['env'] = {k: v for k, v in env_info().items() if k in ('torch', 'cpus', 'git_commit')}
    Path(out).write_text(json.dumps(r, indent=1))


def coreset_only(n: int, picks: int):
    "Memory of PatchCore's bank construction alone (preallocated features, projection, greedy coreset) for n images x 784 patches."
    import torch, time
    from adtutor.core import ResourceMonitor, rss_bytes, atomic_write_json
    from adtutor.memory_bank_fast import projected_coreset
    N = n * 784
    base = rss_bytes() / 2**20
    with ResourceMonitor() as m:
        X = torch.empty(N, 152)
        g = torch.Generator().manual_seed(0)
        for i in range(0, N, 65536): X[i:i + 65536] = torch.randn(min(65536, N - i), 152, generator=g)
        t = time.perf_counter(); idx = projected_coreset(X, picks); tc = time.perf_counter() - t
        bank = X[idx].contiguous()
    r = {'what': f'PatchCore memory-bank construction for {n} images x 784 patches (random 152-d features, no backbone)',
         'n_features': N, 'features_mb': N * 152 * 4 / 2**20, 'projection_mb': N * 128 * 4 / 2**20, 'baseline_rss_mb': round(base),
         'peak_rss_mb': round(m.peak_mb), 'peak_above_baseline_mb': round(m.peak_mb - base), 'coreset_picks': picks,
         'coreset_s': round(tc, 1), 'seconds': round(m.seconds, 1), 'loadavg': os.getloadavg(),
         'command': f'python benchmarks/memory_bank_scaling.py --coreset-only --n {n} --picks {picks}'}
    print(json.dumps(r))
    atomic_write_json(RESULTS / f'memory_bank_coreset_{n}_images.json', r)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=2000); ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--coreset', type=float, default=0.01)
    ap.add_argument('--methods', nargs='+', default=['patchcore', 'spade', 'padim'])
    ap.add_argument('--child'); ap.add_argument('--out')
    ap.add_argument('--coreset-only', action='store_true', help='measure only the bank construction on random features (fast)')
    ap.add_argument('--picks', type=int, default=1500)
    a = ap.parse_args()
    if a.child: return child(a.child, a.n, a.size, a.coreset, a.out)
    if a.coreset_only: return coreset_only(a.n, a.picks)
    from adtutor.core import atomic_write_json, atomic_write_text
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.methods:
            out = Path(tmp) / f'{m}.json'
            subprocess.run([sys.executable, __file__, '--child', m, '--n', str(a.n), '--size', str(a.size), '--coreset', str(a.coreset),
                            '--out', str(out)], check=True, env=dict(os.environ, MALLOC_MMAP_THRESHOLD_='1048576'))
            rows.append(json.loads(out.read_text())); print(rows[-1], flush=True)
    res = {'benchmark': 'memory_bank_scaling', 'time': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
           'backbone': 'tf_efficientnet_lite0', 'machine': '2 CPU cores (shared), 24 GiB RAM', 'results': rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / 'memory_bank_scaling.json', res)
    md = ['# Memory-bank methods with 2 000 training images at 224 px (tf_efficientnet_lite0, blocks.2 + blocks.4)', '',
          '| method | images | fit s | peak RSS MiB | above baseline MiB | kept MiB | notes |', '|---|---|---|---|---|---|---|']
    for r in rows:
        note = f"{r.get('n_patch_features')} patch features -> {r.get('memory_bank')} (coreset {r.get('coreset_ratio')}); coreset {r.get('coreset_seconds', 0):.0f} s" if r['method'] == 'patchcore' else ''
        md.append(f"| {r['method']} | {r['n_images']} | {r['fit_seconds']:.0f} | {r['fit_peak_rss_mb']:.0f} | {r['fit_peak_above_baseline_mb']:.0f} | {r['kept_buffers_mb']:.0f} | {note} |")
    atomic_write_text(RESULTS / 'memory_bank_scaling.md', '\n'.join(md) + '\n')
    print('\n'.join(md))


if __name__ == '__main__':
    main()
