"""adtutor.grid / notebooks / sweep / records / main_job: grids, papermill runs, resume after a kill, failures,
executors (sequential, process pool, Dask), collect, the command line and the main job.

The runs execute the toy lab `tests/assets/toy_lab.ipynb` (numpy only, ~3 s a run, most of it kernel start),
so these tests check the sweep machinery, not any method.
"""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from adtutor.grid import expand_grid, load_grid
from adtutor.main_job import main, main_job
from adtutor.notebooks import benchmark_notebooks, run_notebook
from adtutor.records import collect, read_results
from adtutor.sweep import _cpus, sweep, sweep_status

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def lab():
    p = ROOT / 'tests' / 'assets' / 'toy_lab.ipynb'
    assert p.is_file(), f'the toy lab {p} is missing'
    return p


def grid(lab, categories=('a', 'b'), **kw):
    entry = {'notebook': str(lab), 'categories': list(categories), **kw}
    return {'name': 'test', 'quick': True, 'notebooks': [entry]}


def records(out):
    return {p.parent.name: json.loads(p.read_text()) for p in Path(out).glob('runs/*/record.json')}


# --- grids ---------------------------------------------------------------------------------------------------

def test_expand_grid(lab):
    g = {'name': 'g', 'seeds': [0, 1], 'grid': {'image_size': [16, 32]},
         'notebooks': [{'notebook': str(lab), 'categories': ['a', 'b', 'c']}]}
    runs = expand_grid(g)
    assert len(runs) == 3 * 2 * 2 and len({r['id'] for r in runs}) == 12
    assert {r['parameters']['image_size'] for r in runs} == {16, 32}
    assert all(r['parameters']['quick'] is False and r['parameters']['data'] == 'toy' for r in runs)
    assert [r['id'] for r in expand_grid(g)] == [r['id'] for r in runs]  # ids are stable
    assert len(expand_grid(g, quick=True)) == 12 and expand_grid(g, quick=True)[0]['id'] != runs[0]['id']
    soft = expand_grid({'optional_params': {'sleep': 0.5, 'not_a_parameter': 1}, 'notebooks': [str(lab)]})
    assert soft[0]['parameters']['sleep'] == 0.5 and 'not_a_parameter' not in soft[0]['parameters']
    lesson = expand_grid({'notebooks': [{'notebook': str(lab), 'record': False}]})[0]
    assert lesson['record'] is False and 'result_path' not in lesson['parameters']


def test_grid_errors(lab, tmp_path):
    with pytest.raises(ValueError, match="unknown key 'seed'.*did you mean 'seeds'"):
        load_grid({'seed': [0], 'notebooks': [str(lab)]})
    with pytest.raises(ValueError, match="'imag_size' is not in the parameters cell.*did you mean 'image_size'"):
        expand_grid({'notebooks': [{'notebook': str(lab), 'params': {'imag_size': 3}}]})
    with pytest.raises(FileNotFoundError, match='no notebook matches'):
        expand_grid({'notebooks': ['no_such_lab.ipynb']})
    assert expand_grid({'notebooks': [{'notebook': 'no_such_lab.ipynb', 'optional': True}, str(lab)]})
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_grid(tmp_path / 'missing.yaml')
    nb = json.loads(Path(lab).read_text())
    nb['cells'][1]['metadata']['tags'] = []
    (tmp_path / 'untagged.ipynb').write_text(json.dumps(nb))
    with pytest.raises(ValueError, match='no cell tagged "parameters"'):
        expand_grid({'notebooks': [str(tmp_path / 'untagged.ipynb')]})


def test_repo_grid_files():
    "Every grid file in sweeps/ expands: its notebooks exist and take the parameters it sets."
    files = {f.stem: f for f in (ROOT / 'sweeps').glob('*.yaml')}
    assert {'default', 'bottle', 'quick'} <= set(files)
    for name, f in files.items():
        runs = expand_grid(f)
        assert runs or name == 'quick', f'{f} expands to no runs'
        assert all(r['record'] for r in runs)
    main = expand_grid(files['default'])
    assert {r['parameters']['data'] for r in main} == {'builtin'} and not any(r['parameters']['quick'] for r in main)
    repro = expand_grid(files['bottle'])   # the reproduction grid: MVTec AD runs on bottle; other datasets where a paper uses them
    assert any(r['parameters']['data'] == 'mvtec' for r in repro)
    assert all(r['parameters']['category'] == 'bottle' for r in repro if r['parameters']['data'] == 'mvtec')


# --- running -------------------------------------------------------------------------------------------------

def test_sequential_failure_and_collect(lab, tmp_path):
    g = grid(lab, ['a', 'b'])
    g['notebooks'].append({'notebook': str(lab), 'categories': ['bad'], 'params': {'fail': True}})
    out = tmp_path / 'sweep'
    res = sweep(g, out, progress=False)
    assert res.ok == 2 and len(res.failed) == 1 and res.skipped == 0
    recs = records(out)
    assert len(recs) == 3
    bad = [r for r in recs.values() if r['status'] == 'failed']
    assert len(bad) == 1 and bad[0]['category'] == 'bad'
    assert bad[0]['error'].startswith('RuntimeError: the toy lab was asked to fail')
    assert 'raise RuntimeError' in bad[0]['traceback']
    for rid, r in recs.items():  # provenance in every record, executed notebook beside it
        assert r['run_id'] == rid and r['notebook'] == str(lab) and r['parameters']['category'] == r['category']
        assert r['wall_seconds'] > 0 and r['attempt'] == 1 and r['git_commit']
        assert (out / r['executed_notebook']).exists()
        assert not list((out / 'runs' / rid).glob('.attempt-*'))
    ok = [r for r in recs.values() if r['status'] == 'ok']
    assert all(r['image_auroc'] == 1.0 and r['quick'] is True for r in ok)

    # collect: one row per run, parameters flattened
    df = collect(out, to=tmp_path / 'records.csv')
    assert len(df) == 3 and set(df.status) == {'ok', 'failed'}
    assert {'param.category', 'param.seed', 'image_auroc', 'wall_seconds', 'run_id'} <= set(df.columns)
    back = pd.read_csv(tmp_path / 'records.csv')
    assert sorted(back.run_id) == sorted(recs) and len(collect(out, status='ok')) == 2

    # a second sweep with retry_failed=False (--skip-failed) skips everything; by default a rerun redoes only the failed run
    mt = {rid: (out / 'runs' / rid / 'record.json').stat().st_mtime_ns for rid in recs}
    again = sweep(g, out, progress=False, retry_failed=False)
    assert again.skipped == 3 and again.seconds < 5
    retry = sweep(g, out, progress=False)
    assert retry.skipped == 2 and len(retry.failed) == 1
    after = {rid: (out / 'runs' / rid / 'record.json').stat().st_mtime_ns for rid in recs}
    assert [rid for rid in recs if after[rid] != mt[rid]] == [r['run_id'] for r in bad]
    assert records(out)[bad[0]['run_id']]['attempt'] == 2

    st = sweep_status(out)
    assert sorted(st.state) == ['failed', 'ok', 'ok']


def test_timeout_kills_run(lab, tmp_path):
    g = grid(lab, ['slow'], params={'sleep': 60}, timeout=8)
    t0 = time.time()
    res = sweep(g, tmp_path / 'sweep', progress=False)
    assert time.time() - t0 < 40
    assert len(res.failed) == 1 and res.failed[0]['error'].startswith('TimeoutError')


def test_resume_after_kill(lab, tmp_path):
    "SIGKILL a running sweep (and its kernels) after a run finished; the restart skips finished runs and redoes the rest."
    out = tmp_path / 'sweep'
    gfile = tmp_path / 'grid.yaml'
    gfile.write_text(yaml.safe_dump(grid(lab, ['a', 'b', 'c'], params={'sleep': 1.0})))
    cmd = [sys.executable, '-c', 'import sys; from adtutor.main_job import main; sys.exit(main())',
           'run', str(gfile), '--out', str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not records(out):
            assert proc.poll() is None, 'the sweep ended before it could be killed'
            time.sleep(0.2)
        time.sleep(0.5)  # let the next run start
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    before = records(out)
    assert 1 <= len(before) < 3, f'{len(before)} runs finished before the kill'
    assert all(r['status'] == 'ok' for r in before.values())
    mt = {rid: (out / 'runs' / rid / 'record.json').stat().st_mtime_ns for rid in before}
    started = {p.parent.name for p in out.glob('runs/*/run.json')}

    res = sweep(load_grid(gfile), out, progress=False)
    assert res.skipped == len(before) and res.ok == 3 and not res.failed
    after = records(out)
    assert len(after) == 3
    for rid in before:  # finished runs untouched
        assert (out / 'runs' / rid / 'record.json').stat().st_mtime_ns == mt[rid] and after[rid]['attempt'] == 1
    for rid in started - set(before):  # the run interrupted mid-way was redone
        assert after[rid]['attempt'] == 2 and not list((out / 'runs' / rid).glob('.attempt-*'))
    for p in out.glob('runs/*/record.json'):  # every record whole
        assert json.loads(p.read_text())['status'] == 'ok'


def test_process_pool(lab, tmp_path):
    out = tmp_path / 'sweep'
    res = sweep(grid(lab, ['a', 'b']), out, executor='pool', workers=2, progress=False)
    assert res.ok == 2, res.failed
    assert {r['threads'] for r in records(out).values()} == {max(1, _cpus() // 2)}


def test_dask_local_cluster(lab, tmp_path):
    distributed = pytest.importorskip('distributed')
    g = grid(lab, ['a', 'b'])
    g['notebooks'].append({'notebook': str(lab), 'categories': ['bad'], 'params': {'fail': True}})
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster, timeout=60) as client:
        assert len(client.scheduler_info()['workers']) == 2
        res = sweep(g, tmp_path / 'sweep', executor='dask', scheduler=cluster.scheduler_address, progress=False)
    assert res.ok == 2 and len(res.failed) == 1
    assert len(collect(tmp_path / 'sweep')) == 3


def test_cli(lab, tmp_path, capsys):
    out = tmp_path / 'sweep'
    assert main(['run', '--notebook', str(lab), '--category', 'a', '--grid', 'image_size=16,24',
                    '--set', 'backbone=none', '--quick', '--out', str(out)]) == 0
    recs = records(out)
    assert len(recs) == 2 and {r['image_size'] for r in recs.values()} == {16, 24}
    assert all(r['backbone'] == 'none' for r in recs.values())
    assert main(['status', '--out', str(out)]) == 0
    assert '2 ok' in capsys.readouterr().out
    assert main(['collect', '--out', str(out), '--to', str(tmp_path / 'r.csv')]) == 0
    assert len(pd.read_csv(tmp_path / 'r.csv')) == 2
    assert main(['run', str(tmp_path / 'nope.yaml'), '--out', str(out)]) == 2


def test_read_loose_records(tmp_path):
    "A folder of records written by the labs' `result_path` reads as a table; runs selected on the test set are left out."
    base = {'method': 'STFPM', 'category': 'bottle', 'image_auroc': 0.9, 'pixel_auroc': 0.95, 'aupro': 0.8}
    (tmp_path / 'stfpm_bottle.json').write_text(json.dumps(base))
    (tmp_path / 'stfpm_bottle_peek.json').write_text(json.dumps({**base, 'image_auroc': 0.4, 'val_on_test': True}))
    (tmp_path / 'notes.json').write_text(json.dumps({'not': 'a record'}))
    df = read_results(tmp_path)
    assert len(df) == 1 and df.image_auroc.tolist() == [0.9]
    with pytest.raises(FileNotFoundError): read_results(tmp_path / 'missing')


def test_main_job_quick(lab, tmp_path, capsys):
    "The main job end to end on a toy grid: sweep, records.csv, the benchmark notebooks, tables in <out>, manifest."
    g = tmp_path / 'grid.yaml'
    g.write_text(yaml.safe_dump({'name': 'toy-main', 'notebooks': [{'notebook': str(lab), 'categories': ['a', 'b']},
                                                                   {'notebook': str(lab), 'categories': ['lesson'], 'record': False}]}))
    out = tmp_path / 'main'
    man = main_job(out, quick=True, grid=g, lessons=False)
    assert man['runs'] == {'total': 3, 'ok': 3, 'failed': 0}
    assert len(pd.read_csv(out / 'records.csv')) == 3
    assert [b['source'] for b in man['benchmark_notebooks']] == [str(p.relative_to(ROOT / 'nbs')) for p in benchmark_notebooks()]
    bad = [b for b in man['benchmark_notebooks'] if not b['ok']]
    assert not bad, bad
    assert all((out / b['notebook']).exists() for b in man['benchmark_notebooks'])
    names = {Path(t).name for t in man['tables']}
    assert {'reproduction.md', 'reproduction.csv', 'efficiency.md', 'efficiency.csv'} <= names
    assert all(Path(t).is_relative_to(out) for t in man['tables'] + man['figures'])  # quick mode never writes results/
    assert any(Path(f).name == 'fit_time_vs_auroc.png' for f in man['figures'])
    m = json.loads((out / 'manifest.json').read_text())
    assert m['records'] == str(out / 'records.csv') and len(m['lab_runs']) == 3 and m['lab_notebooks'] == []  # toy lab is outside nbs/
    printed = capsys.readouterr().out
    assert 'main job finished' in printed and 'budget per lab' in printed and 'measured per lab' in printed
    t = json.loads((out / 'timing.json').read_text())
    assert t['runs'] == {'total': 3, 'ok': 3} and t['labs'][0]['runs'] == 3 and t['executor'] in ('pool', 'sequential')
    # the wall-time record is written from timing.json by a script, never by hand
    r = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'main_job_time.py'), '--out', str(out), '--setup', '12', '--site', '3',
                        '--total', '100', '--commit', 'abc123', '--no-publish'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    md = (out / 'main_job_time.md').read_text()
    assert '(commit abc123)' in md and json.loads((out / 'timing.json').read_text())['git_commit'] == 'abc123'  # the commit at the start
    assert '| set-up (scripts/setup.sh: venv, packages, weights) | 12 |' in md and 'within' in md and 'toy_lab' in md


def test_kernel_is_this_python(tmp_path):
    "papermill runs use this interpreter's kernel, even when another `python3` kernel spec is on the Jupyter paths."
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('quick = None', metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell('import sys, os; print(sys.executable); print(os.getcwd()); print(os.environ.get("ADTUTOR_QUICK"))')]
    (tmp_path / 'sub').mkdir()
    src = tmp_path / 'sub' / 'which.ipynb'
    nbformat.write(nb, src)
    decoy = tmp_path / 'decoy'
    (decoy / 'kernels' / 'python3').mkdir(parents=True)
    (decoy / 'kernels' / 'python3' / 'kernel.json').write_text(json.dumps(
        {'argv': ['/bin/false', '{connection_file}'], 'display_name': 'decoy', 'language': 'python'}))
    res = run_notebook(src, tmp_path / 'out.ipynb', {'quick': True}, quick=True, timeout=120,
                          env={'JUPYTER_PATH': str(decoy), 'JUPYTER_DATA_DIR': str(decoy)})
    assert res['ok'], res
    out = ''.join(''.join(o.get('text', '')) for c in json.loads((tmp_path / 'out.ipynb').read_text())['cells'] for o in c.get('outputs', []))
    assert out.split() == [sys.executable, str(tmp_path / 'sub'), '1']


def test_reply_polling_is_sliced(monkeypatch):
    "The papermill launcher polls kernel sockets in <= 1 s slices (a lost zmq wakeup costs a second, not the run), keeping the timeout."
    import asyncio
    from queue import Empty
    import jupyter_client.channels as ch
    from adtutor.notebooks import _PAPERMILL, _SLICED_GET_MSG
    assert _SLICED_GET_MSG in _PAPERMILL and _PAPERMILL.rstrip().endswith('papermill()')
    calls = []
    async def fake(self, timeout=None):
        calls.append(timeout)
        if len(calls) < 3 or self == 'never': raise Empty
        return {'msg': 'reply'}
    monkeypatch.setattr(ch.AsyncZMQSocketChannel, 'get_msg', fake)
    exec(_SLICED_GET_MSG, {})  # patches ch.AsyncZMQSocketChannel.get_msg, undone by monkeypatch
    get = ch.AsyncZMQSocketChannel.get_msg
    assert asyncio.run(get('chan')) == {'msg': 'reply'} and calls == [1.0, 1.0, 1.0]   # no timeout: waits, 1 s at a time
    calls.clear()
    with pytest.raises(Empty): asyncio.run(get('never', timeout=0.05))              # a timeout still ends the wait
    assert calls and all(0 <= t <= 0.05 for t in calls)


def test_analysis_does_not_import_orchestration():
    "records, papers and report read records and papers' numbers; importing them must not pull in the runner."
    code = ('import sys, adtutor.records, adtutor.papers, adtutor.report; '
            "bad = sorted(m for m in ('adtutor.sweep', 'adtutor.main_job', 'adtutor.grid', 'adtutor.notebooks') if m in sys.modules); "
            'assert not bad, bad')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_report_load_without_records_says_what_to_do(monkeypatch):
    import adtutor.report as R
    monkeypatch.setattr(R, 'found_records', lambda: [])
    with pytest.raises(FileNotFoundError, match='adtutor-sweep main.*default_records'):
        R.load()


def test_default_records_falls_back_to_the_quick_sweep(monkeypatch, tmp_path):
    "No records in results/: the benchmark notebooks' default_records runs sweeps/quick.yaml into quick_sweep_dir()."
    import adtutor.main_job as M
    calls = []
    monkeypatch.setenv('ADTUTOR_QUICK_SWEEP_DIR', str(tmp_path / 'quick'))
    monkeypatch.setattr(M, 'sweep', lambda grid, out, progress: calls.append((Path(grid), Path(out))))
    monkeypatch.setattr(M, 'found_records', lambda: [tmp_path / 'found.csv'])
    assert M.default_records() == [tmp_path / 'found.csv'] and calls == []
    monkeypatch.setattr(M, 'found_records', lambda: [])
    assert M.default_records() == [tmp_path / 'quick'] and calls == [(ROOT / 'sweeps' / 'quick.yaml', tmp_path / 'quick')]


def test_skip_cells_reaches_the_runner(lab, tmp_path):
    "A grid's `skip_cells: [exercise]` (the main job's) keeps `#| exercise` cells from running; without it they run."
    import nbformat
    nb = nbformat.read(str(lab), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("#| exercise\nraise SystemExit('an exercise ran')"))
    ex = tmp_path / 'lab_with_exercise.ipynb'; nbformat.write(nb, str(ex))
    spec = {'name': 'skip', 'categories': ['a'], 'notebooks': [{'notebook': str(ex)}]}
    runs = expand_grid({**spec, 'skip_cells': ['exercise']}, quick=True)
    assert runs[0]['skip_cells'] == ['exercise'] and expand_grid(spec, quick=True)[0]['skip_cells'] == []
    assert sweep({**spec, 'skip_cells': ['exercise']}, tmp_path / 'skipped', quick=True, progress=False).ok == 1
    assert sweep(spec, tmp_path / 'ran', quick=True, progress=False).ok == 0
