"""Issue 14, the sweep part: relative paths, failed runs on rerun, bad record files, stale temp files.

Runs use a copy of the toy lab (`tests/assets/toy_lab.ipynb`, numpy only, a few seconds a run) in a temporary
folder, so a run that writes to the wrong place cannot write into the checkout.
"""
import json, os, shutil, warnings
from pathlib import Path

import pytest

from adtutor.main_job import main
from adtutor.records import collect, RecordWarning
from adtutor.sweep import sweep, sweep_status

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / 'tests' / 'assets' / 'toy_lab.ipynb'


@pytest.fixture
def lab(tmp_path):
    "A copy of the toy lab in its own folder (papermill runs a lab with that folder as working directory)."
    d = tmp_path / 'labs'; d.mkdir()
    return Path(shutil.copy(TOY, d / 'toy_lab.ipynb'))


def records(out):
    return {p.parent.name: json.loads(p.read_text()) for p in Path(out).glob('runs/*/record.json')}


# --- relative paths ------------------------------------------------------------------------------------------

def test_relative_out_and_path_parameters(lab, tmp_path, monkeypatch, capsys):
    "`adtutor-sweep run --out rel` from another folder: the records land in <cwd>/rel, and relative path parameters reach the lab absolute."
    work = tmp_path / 'work'; (work / 'mydata').mkdir(parents=True)
    monkeypatch.chdir(work)
    rc = main(['run', '--notebook', str(lab), '--category', 'a', '--data', './mydata', '--quick', '--out', 'sweeps/rel'])
    recs = records(work / 'sweeps' / 'rel')
    assert rc == 0 and len(recs) == 1, (rc, capsys.readouterr().out[-2000:])
    rec = next(iter(recs.values()))
    assert rec['status'] == 'ok' and rec['evaluated'], rec.get('error')
    assert rec['dataset'] == str(work / 'mydata')          # the lab saw an absolute path
    assert rec['parameters']['data'] == './mydata'          # the record keeps what the user wrote (and the run id with it)
    assert not list(lab.parent.rglob('record.json')) and not (lab.parent / 'sweeps').exists()  # nothing beside the lab


# --- failed runs are retried by a rerun ------------------------------------------------------------------------

def test_rerun_retries_failed_runs(lab, tmp_path):
    "A rerun retries a failed run (its cause may be gone); `retry_failed=False` / --skip-failed keeps it as it is."
    g = {'name': 't', 'quick': True, 'notebooks': [{'notebook': str(lab), 'categories': ['bad'], 'params': {'fail': True}}]}
    out = tmp_path / 'sweep'
    assert len(sweep(g, out, progress=False).failed) == 1
    again = sweep(g, out, progress=False)
    assert again.skipped == 0 and next(iter(records(out).values()))['attempt'] == 2
    kept = sweep(g, out, progress=False, retry_failed=False)
    assert kept.skipped == 1 and next(iter(records(out).values()))['attempt'] == 2
    gfile = tmp_path / 'g.json'; gfile.write_text(json.dumps(g))
    assert main(['run', str(gfile), '--out', str(out), '--skip-failed']) == 1   # still failed, not rerun
    assert next(iter(records(out).values()))['attempt'] == 2


# --- record files that are not records -------------------------------------------------------------------------

BAD = {'a-list': '[1, 2, 3]', 'a-number': '42', 'half': '{"method": "Pa', 'empty': ''}


def _bad_sweep(lab, out):
    "A finished one-run sweep plus four run folders whose record.json is not a JSON object."
    g = {'name': 't', 'quick': True, 'notebooks': [{'notebook': str(lab), 'categories': ['a']}]}
    res = sweep(g, out, progress=False)
    assert res.ok == 1
    for rid, text in BAD.items():
        (out / 'runs' / rid).mkdir(parents=True)
        (out / 'runs' / rid / 'record.json').write_text(text)
    return g, res.records[0]['run_id']


def _named_in_warnings(ws):
    msgs = [str(w.message) for w in ws if issubclass(w.category, RecordWarning)]
    for rid in BAD: assert any(f'{rid}/record.json' in m for m in msgs), (rid, msgs)
    return msgs


def test_collect_reports_bad_records(lab, tmp_path):
    out = tmp_path / 'sweep'
    _, good = _bad_sweep(lab, out)
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        df = collect(out)
    assert list(df.run_id) == [good]
    msgs = _named_in_warnings(ws)
    assert any('not an object (a list)' in m for m in msgs) and any('not valid JSON' in m for m in msgs)


def test_status_reports_bad_records(lab, tmp_path, capsys):
    out = tmp_path / 'sweep'
    _, good = _bad_sweep(lab, out)
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        st = sweep_status(out).set_index('run_id')
        assert main(['status', '--out', str(out)]) == 0
    _named_in_warnings(ws)
    assert st.loc[good, 'state'] == 'ok'
    assert (st.loc[list(BAD), 'state'] == 'unreadable').all() and st.loc['a-list', 'error'].startswith('record.json is JSON but not an object')
    assert 'unreadable' in capsys.readouterr().out


def test_run_redoes_runs_with_bad_records(lab, tmp_path):
    "A run whose record.json is damaged is not finished: the next sweep reports it and runs it again."
    out = tmp_path / 'sweep'
    g, rid = _bad_sweep(lab, out)
    (out / 'runs' / rid / 'record.json').write_text('["not", "a", "record"]')
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        res = sweep(g, out, progress=False)
    assert res.ok == 1 and res.skipped == 0 and json.loads((out / 'runs' / rid / 'record.json').read_text())['attempt'] == 2
    assert any(f'{rid}/record.json' in str(w.message) for w in ws if issubclass(w.category, RecordWarning))


# --- temp files of killed writes -------------------------------------------------------------------------------

def test_sweep_removes_temp_files_of_killed_writes(lab, tmp_path):
    "Atomic writes go through a hidden temp file; a kill mid-write leaves it behind. The next sweep on the folder removes them."
    g = {'name': 't', 'quick': True, 'notebooks': [{'notebook': str(lab), 'categories': ['a']}]}
    out = tmp_path / 'sweep'
    rid = sweep(g, out, progress=False).records[0]['run_id']
    left = [out / 'runs' / rid / '.record.json.k1ll3d.tmp', out / '.sweep.json.abc123.tmp', out / '.records.csv.x.tmp']
    for p in left: p.write_text('half')
    res = sweep(g, out, progress=False)
    assert res.skipped == 1
    assert not [p for p in left if p.exists()]
    assert (out / 'runs' / rid / 'record.json').is_file()


# --- the reproduction table: papers and anomalib re-runs apart ---------------------------------------------------

def test_reproduction_table_keeps_papers_and_anomalib_apart():
    "CFA's 'paper' pixel AUROC was 24.5: anomalib's failed re-run (seed 003). Papers and re-runs get their own columns and Δ."
    import pandas as pd
    from adtutor.report import load, reproduction_table, render_reproduction
    rec = dict(method='CFA', dataset='mvtec_ad', data='mvtec', category='bottle', seed=0, backbone='bb', weights='w',
               image_size=224, image_auroc=0.99, pixel_auroc=0.97, aupro=0.90, status='ok')   # made-up test input
    rep = reproduction_table(load(pd.DataFrame([rec]))).set_index('metric')
    assert rep.setting.dropna().str.startswith('paper').all() and not rep.source.dropna().str.startswith('003').any()
    assert pd.isna(rep.loc['pixel_auroc', 'paper'])                      # no clean paper number for CFA's pixel AUROC
    assert abs(rep.loc['pixel_auroc', 'anomalib'] - 0.2452) < 1e-9 and rep.loc['pixel_auroc', 'anomalib_source'].startswith('003')
    assert abs(rep.loc['pixel_auroc', 'anomalib_diff'] - (0.97 - 0.2452)) < 1e-9
    assert rep.loc['image_auroc', 'anomalib_backbone'] == 'wide_resnet50_2'
    md = render_reproduction(rep.reset_index())
    assert '| Category | CFA ours | CFA paper | Δ | CFA anomalib re-run | Δ |' in md
    assert '| bottle | 99.0 / 97.0 / 90.0 | 100.0 / – / – | -1.0 / – / – | 50.0 / 24.5 / 100.0 | +49.0 / +72.5 / – |' in md
    assert 'anomalib re-run: image AUROC from seed 003 (MVTec Image Level AUROC; backbone wide_resnet50_2)' in md


def test_reproduction_summary_names_both_sources(tmp_path):
    "benchmarks/reproduction_summary.py renders the same two-sided table from the records in results/reproduction/."
    import runpy
    recs = sorted((ROOT / 'results' / 'reproduction').glob('*_bottle.json'))
    if not recs: pytest.skip('no real-data records in results/reproduction/')
    mod = runpy.run_path(str(ROOT / 'benchmarks' / 'reproduction_summary.py'), run_name='not_main')
    md = Path(mod['main'](out=tmp_path / 'README.md')).read_text()
    assert 'anomalib re-run' in md and 'paper = the original papers' in md


def test_reproduction_summary_compares_lab_defaults_only(tmp_path):
    "A record with other settings (dfm_bottle_pool2_fre.json) is listed but not averaged into the comparison with DFM's defaults."
    import json, runpy, shutil
    src = ROOT / 'results' / 'reproduction'
    if not all((src / f).exists() for f in ('dfm_bottle.json', 'dfm_bottle_pool2_fre.json')): pytest.skip('no DFM bottle records')
    for f in ('dfm_bottle.json', 'dfm_bottle_pool2_fre.json'): shutil.copy(src / f, tmp_path / f)
    mod = runpy.run_path(str(ROOT / 'benchmarks' / 'reproduction_summary.py'), run_name='not_main')
    md = Path(mod['main'](out=tmp_path / 'README.md', src=tmp_path)).read_text()
    default = json.loads((src / 'dfm_bottle.json').read_text())
    assert md.count('| DFM | bottle |') == 2                              # both listed
    row = next(l for l in md.splitlines() if l.startswith('| bottle |'))
    assert f"{100 * default['image_auroc']:.1f} / {100 * default['pixel_auroc']:.1f}" in row   # the comparison: defaults only
