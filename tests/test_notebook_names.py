"""Every notebook's code, read as one program, uses no name it never defines.

Cells that only run on real data (`#| notest`) or at full scale are skipped by the notebook tests, so a missing import
there would first show up hours into a bottle run (it happened: CS-Flow's IADBE cell used `Path` without importing it).
pyflakes reads the code without running it, so this covers every cell in a second."""
import ast, json
from pathlib import Path

import pytest
from pyflakes import checker, messages

from adtutor.core import all_notebooks, cell_source

NBS = Path(__file__).resolve().parent.parent / 'nbs'
IPYTHON_NAMES = {'display', 'get_ipython', 'In', 'Out'}  # what the Jupyter kernel defines
UNDEFINED = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport, messages.ImportStarUsage)


def notebook_program(path: Path) -> tuple[str, list[int]]:
    "The code cells of `path` joined in order, IPython magics and shell lines blanked; and the cell number of each line."
    lines, cell_of = [], []
    cells = [c for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'code']
    for i, c in enumerate(cells):
        for line in cell_source(c).splitlines():
            lines.append('' if line.lstrip().startswith(('%', '!')) else line)
            cell_of.append(i)
    return '\n'.join(lines), cell_of


def undefined_names(path: Path) -> list[str]:
    "pyflakes' undefined-name findings for the notebook at `path`, each as 'code cell N: message'."
    code, cell_of = notebook_program(path)
    try: tree = ast.parse(code)
    except SyntaxError as e: return [f'code cell {cell_of[e.lineno - 1] if e.lineno else "?"}: syntax error: {e.msg}']
    found = checker.Checker(tree, filename=str(path), builtins=IPYTHON_NAMES).messages
    return [f'code cell {cell_of[m.lineno - 1]}: ' + m.message % m.message_args for m in found if isinstance(m, UNDEFINED)]


def test_finds_a_missing_import(tmp_path):
    nb = {'cells': [{'cell_type': 'code', 'source': ['import json\n', '%matplotlib inline\n']},
                    {'cell_type': 'markdown', 'source': 'Path here is prose'},
                    {'cell_type': 'code', 'source': 'json.dumps(1)\n!ls\np = Path("x")'}]}
    (tmp_path / 'a.ipynb').write_text(json.dumps(nb))
    assert undefined_names(tmp_path / 'a.ipynb') == ["code cell 1: undefined name 'Path'"]


NOTEBOOKS = all_notebooks(NBS)   # the notebooks tests/test_notebooks.py runs


def test_there_are_notebooks(): assert len(NOTEBOOKS) > 20


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: str(p.relative_to(NBS)))
def test_no_undefined_names(path):
    found = undefined_names(path)
    assert not found, (f'{path.relative_to(NBS.parent)} uses names it never defines (cells counted from 0, code cells only); '
                       'add the import or definition:\n  ' + '\n  '.join(found))
