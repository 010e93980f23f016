"""The method registry: every method class is declared once, every declaration points at a real notebook and class,
the generated files are fresh, and a new method notebook shows up everywhere with no other file edited."""
import os, sys, json, shutil, subprocess, importlib, pkgutil
from pathlib import Path

import pytest, yaml

import adtutor
from adtutor.core import AnomalyModel
from adtutor import registry as R

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
NOT_LABS = {'adtutor.core.MeanImage'}   # the raw-pixel baseline of the core lesson, not a method lab


def _adtutor_modules():
    return sorted(m.name for m in pkgutil.iter_modules(adtutor.__path__, 'adtutor.') if not m.name.startswith('adtutor._'))


def _concrete_models():
    "AnomalyModel subclasses defined in adtutor's modules that implement both hooks."
    out = {}
    for name in _adtutor_modules():
        mod = importlib.import_module(name)
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, AnomalyModel) and obj.__module__ == name and obj is not AnomalyModel:
                if obj.learn is not AnomalyModel.learn and obj.anomaly_map is not AnomalyModel.anomaly_map:
                    out[f'{name}.{obj.__name__}'] = obj
    return out


def test_generated_files_are_fresh():
    stale = R.stale_files(ROOT)
    assert not stale, f'stale generated files {[str(p.relative_to(ROOT)) for p in stale]}: run `adtutor-registry write`'


def test_every_method_class_is_declared():
    declared = {f'{s.module}.{s.cls}' for s in R.declared_methods(NBS).values()}
    missing = sorted(set(_concrete_models()) - declared - NOT_LABS)
    assert not missing, (f'method classes without a register_method(...) declaration in their lab notebook: {missing}. '
                         'Declare each method once (see DEVELOPERS.md, "how a new method is added").')


def test_every_declaration_points_at_a_notebook_and_a_class():
    specs = R.declared_methods(NBS)
    assert len(specs) >= 6
    for s in specs.values():
        assert (NBS / s.notebook).is_file(), f'{s.name}: notebook {s.notebook} does not exist'
        mod = importlib.import_module(s.module)
        cls = getattr(mod, s.cls, None)
        assert isinstance(cls, type) and issubclass(cls, AnomalyModel), f'{s.name}: {s.module} has no AnomalyModel class {s.cls}'
        runtime = R._IMPORTED.get(s.name)   # what importing the module registered (a notebook may declare two, e.g. DFR and FRE)
        assert runtime is not None and runtime.module == s.module, f'{s.module} does not register {s.name} at import (METHOD = register_method(...))'
        assert {**runtime.__dict__, 'notebook': None} == {**s.__dict__, 'notebook': None}, \
            f'{s.name}: the exported module and the notebook disagree: run nbdev_export'


def test_no_declaration_without_a_notebook():
    "A module that registers a method must come from a notebook that declares it (no stale exported module)."
    static = {s.name for s in R.declared_methods(NBS).values()}
    for name in _adtutor_modules(): importlib.import_module(name)
    assert set(R._IMPORTED) <= static, f'modules register methods no notebook declares: {set(R._IMPORTED) - static} (delete the stale module)'


NO_PAPER_NUMBERS = {'deep_svdd', 'fcdd', 'novelty'}


def test_aliases_match_the_papers_table():
    import pandas as pd
    names = set(pd.read_csv(ROOT / 'data' / 'paper_results.csv')['method'])
    missing = {s.name for s in R.declared_methods(NBS).values() if not any(n in names for n in s.paper_names)}
    # no MVTec AD number for these in the source documents (seeds 000-004): their labs say so, their records stand alone
    assert missing == NO_PAPER_NUMBERS, (f'methods without a row in data/paper_results.csv: {sorted(missing)}; '
                                         f'add their paper_names (as printed in the csv) or, if no source has them, to NO_PAPER_NUMBERS')
    assert R.method_key('RevDist') == R.method_key('ReverseDistillation') == 'rd'


def test_bad_declarations_are_clear_errors(tmp_path):
    nb = json.loads((NBS / 'memory_bank' / '12_patchcore.ipynb').read_text())
    for c in nb['cells']:
        src = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
        if 'register_method(' in src and '#| export' in src:
            c['source'] = src.replace("family='memory_bank'", "family=FAMILY")
    d = tmp_path / 'nbs'; (d / 'memory_bank').mkdir(parents=True)
    (d / 'memory_bank' / 'x.ipynb').write_text(json.dumps(nb))
    with pytest.raises(ValueError, match='must be literals'): R.declared_methods(d)


TOY = '''# %%
#| default_exp toy_method
# %%
quick = None
# %%
#| export
import torch
from adtutor.core import AnomalyModel
from adtutor.registry import register_method
class ToyMethod(AnomalyModel):
    "Distance to the mean image."
    def __init__(self): super().__init__(); self.register_buffer('mean', torch.zeros(0))
    def learn(self, train_data): self.mean = torch.stack([b['image'] for b in train_data]).mean(0)
    def anomaly_map(self, x): return (x - self.mean).pow(2).sum(1)
METHOD = register_method('toy', title='ToyMethod', family='memory_bank', cls='ToyMethod', paper='Nobody. A toy. 2026.',
                         paper_names=['PatchCore'], main=dict(categories=['pcb'], seconds=3))
'''


def _toy_notebook(path: Path):
    import nbformat
    cells = [c.strip() for c in TOY.split('# %%') if c.strip()]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# Toy: a method added in one notebook')] +
                                  [nbformat.v4.new_code_cell(c, metadata={'tags': ['parameters']} if c == 'quick = None' else {}) for c in cells])
    nbformat.write(nb, str(path))


def test_a_new_notebook_appears_everywhere(tmp_path):
    "Add one method notebook to a copy of the repository: after `adtutor-registry write` it is in the main grid, README and site."
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    copy = tmp_path / 'repo'
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(('results/', 'benchmarks/results/')):
            (copy / f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT / f, copy / f)
    _toy_notebook(copy / 'nbs' / 'memory_bank' / '99_toy.ipynb')
    env = {**os.environ, 'PYTHONPATH': str(copy)}
    run = lambda *a: subprocess.run([sys.executable, '-c', 'import sys; from adtutor.registry import main; sys.exit(main(sys.argv[1:]))', *a,
                                     '--root', str(copy)], env=env, capture_output=True, text=True)
    assert run('check').returncode == 1, 'the registry must report the copy as stale before `write`'
    w = run('write'); assert w.returncode == 0, w.stderr
    assert run('check').returncode == 0
    grid = yaml.safe_load((copy / 'sweeps' / 'default.yaml').read_text())
    assert {'notebook': 'memory_bank/99_toy.ipynb', 'categories': ['pcb']} in grid['notebooks']
    readme = (copy / 'README.md').read_text()
    assert '[ToyMethod](nbs/memory_bank/99_toy.ipynb)' in readme
    changed = subprocess.run(['git', 'diff', '--no-index', '--name-only', str(ROOT / 'nbs' / 'memory_bank'), str(copy / 'nbs' / 'memory_bank')],
                             capture_output=True, text=True).stdout
    assert '99_toy.ipynb' in changed
    from adtutor import site as S
    out = S.build_site(None, tmp_path / '_site', copy / 'nbs', copy / '_quarto.yml', builder='offline', quiet=True)
    page = out / 'memory_bank' / 'toy.html'
    assert page.is_file(), sorted(p.name for p in (out / 'memory_bank').glob('*.html'))
    index = (out / 'index.html').read_text()
    assert 'memory_bank/toy.html' in index and 'ToyMethod' in index
