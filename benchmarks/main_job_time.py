"""Write the main job's wall-time record from the job's own timing record (nothing typed by hand).

`scripts/main.sh` runs it at the end:  python benchmarks/main_job_time.py --out results/main --setup S --site S --total S
It completes `<out>/timing.json` with the set-up, site and whole-command seconds that main.sh measured, and writes
`<out>/main_job_time.md` and `benchmarks/results/main_job_time.md` (the latest main job on this machine).
"""
import argparse, json, platform, sys
from pathlib import Path

from adtutor.core import atomic_write_json, atomic_write_text, env_info

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 30 * 60


def _fmt(v, d=0):
    return '–' if v is None else f'{v:.{d}f}'


def render(t: dict) -> str:
    s, fc = t['seconds'], t.get('feature_cache') or {}
    total = t.get('total_seconds')
    lines = ['# The main job\'s wall time (README command 1)', '',
             f"Written by `benchmarks/main_job_time.py` from `timing.json` of the main job at {t['written']} "
             f"(commit {t.get('git_commit')}); every figure below comes from that record.", '',
             f"Machine: {t.get('cpus')} CPU cores, {t.get('machine')}; torch {t.get('torch')}, CUDA: {t.get('cuda') or 'none'}. "
             f"Runs: {t['executor']}, {t['workers']} at a time, {t['threads_per_run']} thread(s) each.", '',
             '| part | seconds |', '|---|---|',
             f"| set-up (scripts/setup.sh: venv, packages, weights) | {_fmt(t.get('setup_seconds'))} |",
             *[f'| {k} | {_fmt(v)} |' for k, v in s.items() if k != 'total'],
             f"| main job (`adtutor-sweep main`) | {_fmt(s.get('total'))} |",
             f"| site (`adtutor-site`) | {_fmt(t.get('site_seconds'))} |",
             f"| **whole command, set-up included** | **{_fmt(total)}** ({_fmt(total / 60 if total else None, 1)} min; "
             f"bar {BUDGET // 60} min: {'within' if total and total <= BUDGET else 'OVER' if total else '?'}) |", '',
             f"Lab runs: {t['runs']['ok']}/{t['runs']['total']} ok. Feature cache: {fc.get('cached', 0)} images read, "
             f"{fc.get('extracted', 0)} extracted. Largest peak RSS of a run: {_fmt(t.get('peak_rss_mb'))} MB.", '',
             '## Per lab: budget (registry) against measured', '',
             '| lab | runs | budget s/run | measured s/run | measured total s | ratio | flag |', '|---|---|---|---|---|---|---|']
    for l in t['labs']:
        flag = 'over 1.5× budget' if l.get('overrun') else ''
        lines.append(f"| {l['lab']} | {l['runs']} | {_fmt(l.get('budget_s'))} | {_fmt(l.get('measured_per_run_s'), 1)} | "
                     f"{_fmt(l.get('measured_total_s'))} | {_fmt(l.get('ratio'), 2)} | {flag} |")
    if t.get('lessons'):
        lines += ['', '## Lessons (executed for the site)', '', '| notebook | seconds | status |', '|---|---|---|']
        lines += [f"| {l['notebook']} | {_fmt(l.get('seconds'))} | {l.get('status')} |" for l in t['lessons']]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='results/main', help="the main job's output folder (holds timing.json)")
    ap.add_argument('--setup', type=float); ap.add_argument('--site', type=float); ap.add_argument('--total', type=float)
    ap.add_argument('--commit', help="the checkout's commit when the job started (scripts/main.sh passes it: by the end the job has "
                    "rewritten tracked tables, which `git status` would report as +dirty); default: the commit now")
    ap.add_argument('--no-publish', action='store_true', help='do not write benchmarks/results/main_job_time.md')
    a = ap.parse_args(argv)
    f = Path(a.out) / 'timing.json'
    if not f.is_file(): sys.exit(f'{f} does not exist: run the main job first (bash scripts/main.sh)')
    t = json.loads(f.read_text())
    env = env_info()
    t.update({k: v for k, v in dict(setup_seconds=a.setup, site_seconds=a.site, total_seconds=a.total).items() if v is not None})
    t.update(git_commit=a.commit or env.get('git_commit'), torch=env.get('torch'), cuda=env.get('cuda'), machine=platform.platform())
    atomic_write_json(f, t)
    md = render(t)
    atomic_write_text(Path(a.out) / 'main_job_time.md', md)
    if not a.no_publish: atomic_write_text(ROOT / 'benchmarks' / 'results' / 'main_job_time.md', md)
    print(md)


if __name__ == '__main__': main()
