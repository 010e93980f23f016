"""Every notebook in nbs/ runs under papermill, unedited, in quick mode (a notebook that only works interactively fails here).

Found by glob, so new labs are included automatically (skipped: nbs/_*, hidden folders, checkpoints). Each notebook
runs in its own folder with the venv's `python3` kernel, `ADTUTOR_QUICK=1` and `-p quick True`, through
`adtutor.sweep.run_notebook` (the same path a sweep takes). Labs take ~10-60 s each in quick mode; with
pytest-xdist installed, `pytest -n 2 tests/test_notebooks_papermill.py` runs them in parallel (not required).
Executed copies are left in pytest's temporary folder for inspection when one fails.
"""
import json, os
from pathlib import Path

import pytest

from adtutor.sweep import run_notebook, parameters_cell

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
TIMEOUT = float(os.environ.get('ADTUTOR_NB_TIMEOUT', 900))  # seconds per notebook before it is killed


def notebooks() -> list[Path]:
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))


NOTEBOOKS = notebooks()
IDS = [str(p.relative_to(NBS)) for p in NOTEBOOKS]


def _src(cell) -> str:
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s


@pytest.fixture(scope='session')
def quick_sweep_dir(tmp_path_factory):
    "One quick demo sweep folder shared by the benchmark notebooks of this session (and by xdist workers: the sweep locks it)."
    base = tmp_path_factory.getbasetemp()
    base = base.parent if base.name.startswith('popen-gw') else base
    d = base / 'quick-sweep'
    d.mkdir(exist_ok=True)
    return d


def test_found_notebooks():
    assert len(NOTEBOOKS) >= 5 and (NBS / '00_core.ipynb') in NOTEBOOKS
    assert not [p for p in NOTEBOOKS if '.ipynb_checkpoints' in p.parts]


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
def test_runs_under_papermill(nb, tmp_path, quick_sweep_dir):
    res = run_notebook(nb, tmp_path / nb.name, {'quick': True}, quick=True, timeout=TIMEOUT,
                       env={'ADTUTOR_QUICK_SWEEP_DIR': str(quick_sweep_dir)})
    assert res['ok'], (f"{nb.relative_to(ROOT)} failed under papermill (quick mode) after {res['seconds']:.0f} s: "
                       f"{res['error']}\n{res['traceback']}\nexecuted copy: {tmp_path / nb.name}")
