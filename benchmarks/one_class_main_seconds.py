#!/usr/bin/env python
"""Measure the wall seconds of each one-class lab's main-job run (its registry `main` schedule: built-in data, full scale,
exercises off), the way the sweep runs it (papermill, fresh kernel), and write benchmarks/results/one_class_main_seconds.json.
These are the numbers that belong in `register_method(main=dict(seconds=...))`. Run it alone:

    flock /tmp/adtutor-heavy.lock python benchmarks/one_class_main_seconds.py
"""
import datetime, json, os, sys, tempfile
from pathlib import Path
from adtutor.core import atomic_write_json, env_info, repo_root
from adtutor.registry import declared_methods
from adtutor.sweep import run_notebook

ROOT = repo_root()

def main(names=None):
    out, methods = {}, declared_methods()
    for name, s in methods.items():
        if s.family not in ('one_class', 'synthesizing') or (names and name not in names): continue
        cat = (s.main.get('categories') or [None])[0]
        params = {'quick': False, 'exercises': False, **({'category': cat} if cat not in (None, 'all') else {}), **s.main.get('params', {})}
        with tempfile.TemporaryDirectory() as d:
            res = run_notebook(ROOT / 'nbs' / s.notebook, Path(d) / 'out.ipynb', params, quick=False, timeout=3600)
        out[name] = dict(notebook=s.notebook, params=params, ok=res['ok'], seconds=round(res['seconds'], 1), registry_budget=s.main.get('seconds'),
                         error=res.get('error'))
        print(f"{name:12s} {'ok' if res['ok'] else 'FAILED'} {res['seconds']:7.1f} s (registry says {s.main.get('seconds')})", flush=True)
    meta = dict(timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), load_average=os.getloadavg(), **env_info())
    path = ROOT / 'benchmarks' / 'results' / 'one_class_main_seconds.json'
    old = json.loads(path.read_text()).get('runs', {}) if path.exists() else {}
    atomic_write_json(path, dict(meta=meta, runs={**old, **out}))
    print('wrote', path)

if __name__ == '__main__':
    main(sys.argv[1:] or None)
