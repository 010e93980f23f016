#!/usr/bin/env python
"""Data-loading and feature-extraction throughput on real MVTec AD (default: bottle, resize 256 -> center-crop 224).

Measures, on this machine:
  * decode / transform time per image (single thread),
  * loading throughput (images/s) of the whole category (train + test) through a DataLoader, batch 32,
    num_workers 0 and 2, without cache and with the disk cache (cold epoch, then warm epochs),
  * feature-extraction throughput (images/s) at batch 16 and 32 for every backbone whose ImageNet weights are
    on this machine (others are listed as skipped, with the reason),
and peak memory (adtutor.core.ResourceMonitor: RSS of this process; plus, from /proc, RSS of this process and
its DataLoader workers summed, which double-counts pages shared after fork, so it is an upper bound).

Run it alone (2-core machine):  flock /tmp/adtutor-heavy.lock python benchmarks/data_throughput.py
Writes benchmarks/results/data_throughput.json and .md (atomically). Skips cleanly when ADTUTOR_DATA lacks the data.
"""
from __future__ import annotations
import argparse, datetime, os, statistics, sys, tempfile, threading, time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from adtutor.core import ResourceMonitor, atomic_write_json, atomic_write_text, env_info, repo_root
from adtutor.data import MVTecAD, Transform, read_image, read_mask

RESULTS = (repo_root() or Path(__file__).resolve().parents[1]) / 'benchmarks' / 'results'


class TreeRSS:
    "Peak RSS of this process plus its descendants (DataLoader workers), from /proc, sampled every `interval` s (Linux only)."
    def __init__(self, interval=0.05): self.interval, self.peak = interval, 0
    @staticmethod
    def _tree(pid):
        out, todo = [], [pid]
        while todo:
            p = todo.pop(); out.append(p)
            for t in Path(f'/proc/{p}/task').glob('*/children'):
                try: todo += [int(c) for c in t.read_text().split()]
                except OSError: pass
        return out
    def _rss(self):
        total = 0
        for p in self._tree(os.getpid()):
            try: total += int(Path(f'/proc/{p}/statm').read_text().split()[1]) * os.sysconf('SC_PAGE_SIZE')
            except (OSError, IndexError, ValueError): pass
        return total
    def _poll(self):
        while not self._stop.wait(self.interval): self.peak = max(self.peak, self._rss())
    def __enter__(self):
        if not Path(f'/proc/{os.getpid()}/task').is_dir(): self.peak = None; return self
        self._stop = threading.Event(); self.peak = self._rss()
        self._t = threading.Thread(target=self._poll, daemon=True); self._t.start(); return self
    def __exit__(self, *exc):
        if self.peak is None: return
        self._stop.set(); self._t.join(); self.peak = max(self.peak, self._rss())
    @property
    def peak_mb(self): return None if self.peak is None else self.peak / 2**20


def epoch(ds, workers, batch=32):
    "One pass over `ds`; returns (images, seconds, peak MiB main process, peak MiB process tree)."
    loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers)
    n = 0
    with ResourceMonitor() as mon, TreeRSS() as tree:
        for b in loader: n += len(b['image'])
    return n, mon.seconds, mon.peak_mb, tree.peak_mb


def per_image_costs(ds, k):
    "Median decode (PIL open+load+RGB), transform (resize+crop+tensor) and mask read+transform times, ms, single thread."
    dec, trf, msk = [], [], []
    tr = ds.datasets[0].transform
    train, test = ds.datasets[0].samples, [s for s in ds.datasets[1].samples if s.mask is not None]
    samples = train[:k - k // 2] + test[:k // 2]          # half normal training images, half defective ones (with masks)
    for s in samples:
        t0 = time.perf_counter(); im = read_image(s.path); t1 = time.perf_counter()
        tr.image(im); t2 = time.perf_counter()
        dec.append(t1 - t0); trf.append(t2 - t1)
        if s.mask is not None:
            t3 = time.perf_counter(); tr.mask(read_mask(s.mask, im.size)); msk.append(time.perf_counter() - t3)
    ms = lambda v: round(1000 * statistics.median(v), 2) if v else None
    return {'images': len(samples), 'masks': len(msk), 'decode_ms': ms(dec), 'transform_ms': ms(trf), 'mask_read_transform_ms': ms(msk),
            'source_size': list(read_image(samples[0].path).size)}


def loading(root, category, size, crop, workers, repeats, limit):
    def data(cache=False):
        parts = [MVTecAD(root, category, s, size, crop, cache=cache) for s in ('train', 'test')]
        if limit:
            for p in parts: p.samples = p.samples[:limit]
        return ConcatDataset(parts)
    rows = []
    def run(label, ds, w, reps):
        for r in range(reps):
            n, sec, peak, tree = epoch(ds, w)
            rows.append({'pipeline': label, 'num_workers': w, 'epoch': r + 1, 'images': n, 'seconds': round(sec, 3),
                         'images_per_s': round(n / sec, 1), 'peak_rss_mb': round(peak), 'peak_rss_tree_mb': tree and round(tree)})
            print(f'  {label:22s} workers={w} epoch {r + 1}: {n} images in {sec:6.2f} s = {n / sec:6.1f} img/s, '
                  f'peak {peak:.0f} MiB (with workers {tree and round(tree)} MiB)', flush=True)
    ds = data()
    costs = per_image_costs(ds, min(len(ds), 40 if not limit else limit))
    print(f"  per image: decode {costs['decode_ms']} ms, resize+crop {costs['transform_ms']} ms "
          f"mask {costs['mask_read_transform_ms']} ms (source {costs['source_size'][0]}x{costs['source_size'][1]})", flush=True)
    for w in workers: run('decode every epoch', ds, w, repeats)
    with tempfile.TemporaryDirectory(prefix='adtutor-bench-cache-') as cache:
        old = os.environ.get('ADTUTOR_CACHE'); os.environ['ADTUTOR_CACHE'] = cache
        try:
            dc = data('disk')
            run('disk cache, cold', dc, 0, 1)
            for w in workers: run('disk cache, warm', dc, w, repeats)
            entries = list(Path(cache).rglob('*.npz')); size_mb = sum(p.stat().st_size for p in entries) / 2**20
        finally:
            if old is None: os.environ.pop('ADTUTOR_CACHE', None)
            else: os.environ['ADTUTOR_CACHE'] = old
    return rows, costs, {'entries': len(entries), 'size_mb': round(size_mb, 1)}


@torch.inference_mode()
def features(root, category, size, crop, batches, min_images):
    from adtutor.backbones import BACKBONES, FeatureExtractor, find_weights
    ds = MVTecAD(root, category, 'train', size, crop)
    x = torch.stack([ds[i]['image'] for i in range(max(batches))])
    rows, skipped = [], []
    for name in BACKBONES:
        if find_weights(name) is None:
            skipped.append({'backbone': name, 'reason': 'no ImageNet weight file on this machine (see `adtutor-weights list`)'})
            print(f'  {name}: skipped (no weights here)', flush=True); continue
        try: fx = FeatureExtractor(name).eval()
        except Exception as e:
            skipped.append({'backbone': name, 'reason': f'{type(e).__name__}: {e}'}); print(f'  {name}: skipped ({e})'); continue
        shapes = {k: list(v.shape[1:]) for k, v in fx(x[:1]).items()}
        for bs in batches:
            xb = x[:bs]; fx(xb)                                 # warm-up
            iters = max(2, -(-min_images // bs))
            with ResourceMonitor() as mon:
                for _ in range(iters): fx(xb)
            n = iters * bs
            rows.append({'backbone': name, 'weights': fx.info['weights'], 'weights_sha256': fx.info['sha256'],
                         'layers': list(fx.layers), 'feature_shapes': shapes, 'batch': bs, 'images': n,
                         'seconds': round(mon.seconds, 3), 'images_per_s': round(n / mon.seconds, 1),
                         'ms_per_image': round(1000 * mon.seconds / n, 2), 'peak_rss_mb': round(mon.peak_mb)})
            print(f'  {name:22s} batch {bs:2d}: {n / mon.seconds:6.1f} img/s ({1000 * mon.seconds / n:.1f} ms/img), '
                  f'peak {mon.peak_mb:.0f} MiB', flush=True)
        del fx
    return rows, skipped


def markdown(res):
    d, L = res['data'], []
    L += [f"# Data-loading and feature-extraction throughput", '',
          f"MVTec AD `{d['category']}` ({d['images']['train']} train + {d['images']['test']} test images, "
          f"{d['per_image']['source_size'][0]}x{d['per_image']['source_size'][1]} PNG) from `{d['root']}`; pipeline: resize "
          f"{res['pipeline']['resize']} (PIL bilinear, antialiased) then center-crop {res['pipeline']['crop']}; DataLoader batch 32. "
          f"Machine: {res['env']['cpus']} CPUs, torch {res['env']['torch']} with {res['env']['torch_threads']} threads, "
          f"{res['env']['platform']}; load average (1 min) {res['env']['loadavg_1_5_15_start'][0]} at start, "
          f"{res['env']['loadavg_1_5_15_end'][0]} at end (a value above {res['env']['cpus']} means other jobs competed for the CPUs). "
          f"Measured {res['date']} (commit {res['env']['git_commit']}). Source: "
          f"`benchmarks/data_throughput.py`, raw figures in `data_throughput.json`.", '',
          f"Per image, single thread (median over {d['per_image']['images']} images, {d['per_image']['masks']} of them with a mask): PNG decode {d['per_image']['decode_ms']} ms, "
          f"resize + crop + tensor {d['per_image']['transform_ms']} ms, mask read + transform {d['per_image']['mask_read_transform_ms']} ms.", '',
          '## Loading (whole category, train + test, one epoch)', '',
          '| pipeline | workers | epoch | images/s | seconds | peak RSS, MiB (this process) | peak RSS, MiB (with workers) |',
          '|---|---:|---:|---:|---:|---:|---:|']
    for r in res['loading']:
        L.append(f"| {r['pipeline']} | {r['num_workers']} | {r['epoch']} | {r['images_per_s']} | {r['seconds']} | "
                 f"{r['peak_rss_mb']} | {r['peak_rss_tree_mb'] if r['peak_rss_tree_mb'] is not None else 'n/a'} |")
    L += ['', f"Disk cache: {res['disk_cache']['entries']} entries, {res['disk_cache']['size_mb']} MiB "
              "(uint8 arrays after resize + crop; items are bit-identical to the uncached ones, see tests/test_data.py). "
              "\"with workers\" sums the RSS of the DataLoader worker processes, which counts pages shared after fork "
              "more than once: an upper bound.", '',
          '## Feature extraction (frozen backbone, CPU, 224x224 input, torch.inference_mode)', '',
          '| backbone | weights | layers | batch | images/s | ms/image | peak RSS, MiB |', '|---|---|---|---:|---:|---:|---:|']
    for r in res['features']:
        L.append(f"| {r['backbone']} | {r['weights']} (sha256 {r['weights_sha256'][:12]}…) | {', '.join(r['layers'])} | {r['batch']} | "
                 f"{r['images_per_s']} | {r['ms_per_image']} | {r['peak_rss_mb']} |")
    if res['skipped']:
        L += ['', 'Skipped backbones: ' + '; '.join(f"`{s['backbone']}` ({s['reason']})" for s in res['skipped']) + '.']
    return '\n'.join(L) + '\n'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', default=os.environ.get('ADTUTOR_DATA'), help='folder holding mvtec_ad/ (default: $ADTUTOR_DATA)')
    ap.add_argument('--category', default='bottle')
    ap.add_argument('--size', type=int, default=256); ap.add_argument('--crop', type=int, default=224)
    ap.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    ap.add_argument('--batches', type=int, nargs='+', default=[16, 32])
    ap.add_argument('--repeats', type=int, default=2, help='epochs per loading setting')
    ap.add_argument('--min-images', type=int, default=128, help='images per feature-extraction timing')
    ap.add_argument('--quick', action='store_true', help='a few images, one epoch; prints only (nothing saved)')
    ap.add_argument('--out', default=str(RESULTS / 'data_throughput.json'))
    a = ap.parse_args(argv)
    root = Path(a.data).expanduser() / 'mvtec_ad' if a.data else None
    if root is None or not (root / a.category).is_dir():
        print(f'skipped: no MVTec AD {a.category} data (set ADTUTOR_DATA to a folder holding mvtec_ad/{a.category}, '
              f'e.g. ../shared/data; got {a.data!r})')
        return 0
    load_start = os.getloadavg()
    if load_start[0] > (os.cpu_count() or 1):
        print(f'warning: load average {load_start[0]:.1f} on {os.cpu_count()} CPUs: other jobs compete, figures will be pessimistic '
              '(run under flock /tmp/adtutor-heavy.lock when the machine is quiet)', flush=True)
    limit = 16 if a.quick else None
    repeats = 1 if a.quick else a.repeats
    print(f'loading MVTec AD {a.category} from {root}, resize {a.size} -> crop {a.crop}', flush=True)
    rows, costs, cache = loading(root, a.category, a.size, a.crop, a.workers, repeats, limit)
    print('feature extraction', flush=True)
    feats, skipped = features(root, a.category, a.size, a.crop, a.batches, 32 if a.quick else a.min_images)
    env = env_info(); env['torch_threads'] = torch.get_num_threads()
    env['loadavg_1_5_15_start'] = [round(v, 2) for v in load_start]; env['loadavg_1_5_15_end'] = [round(v, 2) for v in os.getloadavg()]
    res = {'benchmark': 'data_throughput', 'date': datetime.datetime.now().isoformat(timespec='seconds'),
           'command': ' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
           'data': {'dataset': 'MVTec AD', 'category': a.category, 'root': str(root),
                    'images': {'train': len(MVTecAD(root, a.category, 'train').samples), 'test': len(MVTecAD(root, a.category, 'test').samples)},
                    'per_image': costs},
           'pipeline': {'resize': a.size, 'crop': a.crop, 'image_interpolation': 'PIL bilinear (antialiased)',
                        'mask_interpolation': 'nearest', 'loader_batch': 32},
           'loading': rows, 'disk_cache': cache, 'features': feats, 'skipped': skipped, 'env': env,
           'notes': ['peak_rss_mb: adtutor.core.ResourceMonitor (RSS of the benchmark process only)',
                     'peak_rss_tree_mb: RSS of the process and its DataLoader workers summed (/proc, sampled every 50 ms); shared pages counted more than once',
                     'loading epochs include DataLoader worker start-up; the OS file cache is warm after the first read of each file']}
    if a.quick:
        print('quick run: nothing saved'); return 0
    out = Path(a.out)
    atomic_write_json(out, res); atomic_write_text(out.with_suffix('.md'), markdown(res))
    print(f'wrote {out} and {out.with_suffix(".md")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
