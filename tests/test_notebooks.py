"""Every notebook in nbs/ runs once, headless, and its tests pass: the only execution of the notebooks in the test suite.

Each notebook runs through `adtutor.notebooks.run_notebook`, the path a sweep takes: papermill in a subprocess with
this venv's `python3` kernel, the notebook's folder as working directory, `ADTUTOR_QUICK=1` and `-p quick True`.
The cells `nbdev_test` would skip (flags in `tst_flags` of settings.ini, e.g. `#| slow`, `#| notest`;
`#| eval: false`; calls of `nbdev_export()`) are replaced by a comment in a temporary copy, so one run checks both
that the notebook works under papermill and that its plain-`assert` tests pass.

Notebooks are found by glob (new labs are included automatically; skipped: nbs/_*, hidden folders, checkpoints).
They run side by side on `ADTUTOR_NB_WORKERS` workers (default 2), each with `cores // workers` threads, longest
first by the durations pytest's cache remembers from the last run; one test per notebook reports its own result.
Only the notebooks selected for this session run (`pytest tests/test_notebooks.py -k 05_viz` runs one). Executed
copies stay in pytest's temporary folder for inspection. Under pytest-xdist every worker runs its own notebooks,
one at a time, when their tests come up.
"""
import configparser, contextlib, json, os, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from adtutor.core import all_notebooks
from adtutor.notebooks import parameters_cell, run_notebook

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
TIMEOUT = float(os.environ.get('ADTUTOR_NB_TIMEOUT', 900))  # seconds per notebook before it is killed
WORKERS = max(1, int(os.environ.get('ADTUTOR_NB_WORKERS', 2)))
CACHE_KEY = 'adtutor/notebook_seconds'

NOTEBOOKS = all_notebooks(NBS)
IDS = [str(p.relative_to(NBS)) for p in NOTEBOOKS]


def tst_flags() -> list[str]:
    "The flags of cells nbdev_test skips, from settings.ini (`tst_flags = notest slow`)."
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'settings.ini')
    return cfg['DEFAULT'].get('tst_flags', '').split()


def _cpus() -> int:
    try: return len(os.sched_getaffinity(0))
    except AttributeError: return os.cpu_count() or 1


class NotebookRuns:
    "Executes notebooks on a thread pool (each run is a papermill subprocess); `result(nb)` waits for one."
    def __init__(self, base: Path, cache, workers: int):
        self.base, self.cache, self.flags = base, cache, tst_flags()
        self.threads = max(1, _cpus() // workers)
        self.env = {'ADTUTOR_QUICK_SWEEP_DIR': str(base / 'quick-sweep'),  # one quick demo sweep for all benchmark notebooks
                    'PYTHONPATH': os.pathsep.join(p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p)}  # kernels import this checkout
        self.seconds = dict(cache.get(CACHE_KEY, {})) if cache is not None else {}
        self.pool, self.futures = ThreadPoolExecutor(workers, thread_name_prefix='notebook'), {}

    def start(self, nbs):
        "Submit `nbs`, longest first (unknown ones first of all), so the last to finish is a short one."
        for nb in sorted(nbs, key=lambda p: -self.seconds.get(str(p.relative_to(NBS)), float('inf'))):
            if nb not in self.futures: self.futures[nb] = self.pool.submit(self._run, nb)

    def _run(self, nb: Path) -> dict:
        dst = self.base / 'executed' / nb.relative_to(NBS)
        t0 = time.time()
        res = run_notebook(nb, dst, {'quick': True}, quick=True, timeout=TIMEOUT, threads=self.threads, env=self.env,
                           skip_flags=self.flags)
        return {**res, 'executed': dst, 'started': t0, 'ended': time.time()}

    def timing(self) -> list[str]:
        "Lines for the terminal: each finished notebook's seconds, longest first, and the wall time of them all."
        done = {nb: f.result() for nb, f in self.futures.items() if f.done() and not f.cancelled() and f.exception() is None}
        if not done: return []
        wall = max(r['ended'] for r in done.values()) - min(r['started'] for r in done.values())
        rows = sorted(done.items(), key=lambda kv: -kv[1]['seconds'])
        return ([f'notebooks: {len(done)} in {wall:.0f} s wall on {self.pool._max_workers} workers ({self.threads} threads each), '
                 f'{sum(r["seconds"] for r in done.values()):.0f} s in all'] +
                [f'  {r["seconds"]:6.1f} s  {"ok    " if r["ok"] else "FAILED"} {nb.relative_to(NBS)}' for nb, r in rows])

    def result(self, nb: Path) -> dict:
        self.start([nb])  # not submitted yet (e.g. under xdist): run it now
        res = self.futures[nb].result()
        if res['ok'] and self.cache is not None:
            self.seconds[str(nb.relative_to(NBS))] = round(res['seconds'], 1)
            self.cache.set(CACHE_KEY, self.seconds)
        return res


@pytest.fixture(scope='session')
def notebook_runs(request, tmp_path_factory):
    "Start every selected notebook at once (xdist: none up front, each on demand)."
    runs = NotebookRuns(tmp_path_factory.mktemp('notebooks'), getattr(request.config, 'cache', None), WORKERS)
    if 'PYTEST_XDIST_WORKER' not in os.environ:
        runs.start([it.callspec.params['nb'] for it in request.session.items
                    if getattr(it, 'originalname', None) == 'test_notebook_runs' and hasattr(it, 'callspec')])
    yield runs
    runs.pool.shutdown(wait=True, cancel_futures=True)
    tr, cap = (request.config.pluginmanager.get_plugin(n) for n in ('terminalreporter', 'capturemanager'))
    if tr is not None and (lines := runs.timing()):  # what `nbdev_test --timing` printed
        with cap.global_and_fixture_disabled() if cap is not None else contextlib.nullcontext():
            tr.write_line('')
            for line in lines: tr.write_line(line)


def _src(cell) -> str:
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s


def test_tests_import_this_checkout():
    "pytest and the notebook kernels import the package of this checkout, not another copy named by PYTHONPATH."
    import adtutor
    assert Path(adtutor.__file__).resolve().parent == ROOT / 'adtutor', (
        f'adtutor is imported from {Path(adtutor.__file__).parent}, not from this checkout ({ROOT}): unset PYTHONPATH or '
        f'run the tests with scripts/test.sh, which puts the checkout first')
    env = NotebookRuns(ROOT, None, 1).env
    assert env['PYTHONPATH'].split(os.pathsep)[0] == str(ROOT)


def test_found_notebooks():
    assert len(NOTEBOOKS) >= 5 and (NBS / '00_core.ipynb') in NOTEBOOKS
    assert not [p for p in NOTEBOOKS if '.ipynb_checkpoints' in p.parts or p.name.startswith('_')]
    assert {'notest', 'slow'} <= set(tst_flags())


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=IDS)
def test_parameters_cell(nb):
    "The cell tagged `parameters` is the first code cell after the `#| default_exp` cell (the first code cell without one)."
    cells = json.loads(nb.read_text())['cells']
    i = parameters_cell({'cells': cells})
    assert i is not None, f'{nb.relative_to(ROOT)} has no cell tagged "parameters"'
    code = [j for j, c in enumerate(cells) if c['cell_type'] == 'code']
    exp = [j for j in code if _src(cells[j]).lstrip().startswith('#| default_exp') or '\n#| default_exp' in _src(cells[j])]
    expected = code[code.index(exp[0]) + 1] if exp else code[0]
    assert i == expected, (f'{nb.relative_to(ROOT)}: the parameters cell is cell {i}; it must be the first code cell after '
                           f'the #| default_exp cell (cell {expected})')


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=IDS)
def test_notebook_runs(nb, notebook_runs):
    res = notebook_runs.result(nb)
    assert res['ok'], (f"{nb.relative_to(ROOT)} failed under papermill (quick mode, cells flagged {notebook_runs.flags} "
                       f"skipped) after {res['seconds']:.0f} s: {res['error']}\n{res['traceback']}\n"
                       f"executed copy: {res['executed']} (log beside it)")
