"""The built-in dataset: reproducible to the pixel, complete or invisible, readable by MVTecAD, usable from the command line."""
import json, os, signal, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import adtutor.synthetic as S
from adtutor.data import MVTecAD

TRACKED = Path(__file__).resolve().parents[1] / 'data' / 'builtin_manifest.json'
SMALL = dict(n_train=3, n_test_good=2, n_test_per_defect=1, progress=False)
HASHES = ('n_files', 'files_sha256', 'pixels_sha256')


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*.png'))}


@pytest.fixture(scope='module')
def full(tmp_path_factory):
    "The built-in dataset regenerated from scratch (default settings, two worker processes)."
    root = tmp_path_factory.mktemp('builtin')
    S.make_dataset(root, workers=2, progress=False, **S.BUILTIN)
    return root


def test_regeneration_reproduces_tracked_manifest(full):
    ref = json.loads(TRACKED.read_text())
    assert ref['generator'] == f'adtutor.synthetic/{S.VERSION}', \
        f'{TRACKED} is for {ref["generator"]}: regenerate it for version {S.VERSION} (see its _about note)'
    assert sorted(ref['categories']) == sorted(S.CATEGORIES)
    for c in S.CATEGORIES:
        stamp, want = S.read_stamp(full / c), ref['categories'][c]
        assert {k: v for k, v in stamp.items() if k not in HASHES} == {k: v for k, v in want.items() if k not in HASHES}
        assert stamp['n_files'] == want['n_files']
        assert stamp['pixels_sha256'] == want['pixels_sha256'], (
            f'{c}: the generator no longer reproduces {TRACKED}. If the change is intended, bump VERSION and update the file.')
        assert S.checksums(full, c) == {k: stamp[k] for k in HASHES}  # what is on disk is what the stamp claims


def test_mvtec_reads_every_category(full):
    p = S.BUILTIN
    for c in S.CATEGORIES:
        tr, te = MVTecAD(full, c, 'train', 256, None), MVTecAD(full, c, 'test', 256, None)
        assert len(tr) == p['n_train'] and not tr.labels.any()
        assert len(te) == p['n_test_good'] + p['n_test_per_defect'] * len(S.DEFECTS[c])
        counts = te.summary()['images'].to_dict()
        assert counts == {'good': p['n_test_good'], **{d: p['n_test_per_defect'] for d in S.DEFECTS[c]}}
        for s in te.samples:
            if s.label == 0:
                assert s.defect == 'good' and s.mask is None; continue
            with Image.open(s.path) as im, Image.open(s.mask) as m:
                assert im.mode == 'RGB' and im.size == (256, 256)
                assert m.mode == 'L' and m.size == im.size, s.mask
                a = np.asarray(m)
            assert set(np.unique(a).tolist()) == {0, 255}, s.mask
            assert (a[16:240, 16:240] > 0).sum() >= 0.5 * (a > 0).sum()  # mostly inside the labs' 224 centre crop
        it = te[int(np.argmax(te.labels))]  # through the labs' transform: aligned, binary, non-empty
        assert it['mask'].shape == it['image'].shape[1:] == (256, 256) and set(it['mask'].unique().tolist()) == {0, 1}
        it = MVTecAD(full, c, 'test')[int(np.argmax(te.labels))]
        assert it['mask'].shape == it['image'].shape[1:] == (224, 224)


def test_bytes_identical_for_any_workers_and_subset(tmp_path, full):
    cats = ['washer', 'brick']
    S.make_dataset(tmp_path / 'one', cats, workers=1, **SMALL)
    S.make_dataset(tmp_path / 'two', cats, workers=2, **SMALL)
    for c in cats:
        one, two = _files(tmp_path / 'one' / c), _files(tmp_path / 'two' / c)
        assert one == two and len(one) == 3 + 2 + 2 * len(S.DEFECTS[c])
        big = _files(full / c)  # each image depends only on its name: the small set is a subset of the full one
        assert all(big[k] == v for k, v in one.items())


def test_render_same_pixels_when_numpy_simd_is_limited():
    "Other CPUs take other SIMD code paths in numpy; the pixels must not depend on them."
    code = ('import hashlib, adtutor.synthetic as S; h = hashlib.sha256()\n'
            'for c in S.CATEGORIES:\n'
            '    for d in ("good",) + S.DEFECTS[c]:\n'
            '        im, m = S.render(c, 0, "test", d, 1); h.update(im.tobytes()); h.update(m.tobytes())\n'
            'print(h.hexdigest())')
    out = {}
    for name, extra in [('default', {}), ('no-avx512', {'NPY_DISABLE_CPU_FEATURES': 'AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL X86_V4'})]:
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, env={**os.environ, **extra})
        if r.returncode and name != 'default': pytest.skip(f'numpy refused {extra}: {r.stderr[-300:]}')
        assert r.returncode == 0, r.stderr
        out[name] = r.stdout.split()[-1]
    assert out['default'] == out['no-avx512']


def test_cli_writes_into_a_folder(tmp_path, capsys):
    S.main(['--root', str(tmp_path / 'a'), '--categories', 'washer,pcb', '--n-train', '2', '--n-test-good', '1',
            '--n-test-per-defect', '1', '--quiet'])
    out = capsys.readouterr().out
    assert str(tmp_path / 'a') in out and 'washer, pcb' in out and out.rstrip().endswith(' s)')
    assert len(MVTecAD(tmp_path / 'a', 'pcb', 'test')) == 1 + len(S.DEFECTS['pcb'])
    exe = shutil.which('adtutor-synth')
    if exe is None: pytest.skip('console script adtutor-synth is not installed (pip install -e .)')
    r = subprocess.run([exe, '--root', str(tmp_path / 'b'), '--categories', 'brick', '--n-train', '2', '--n-test-good', '1',
                        '--n-test-per-defect', '1'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert str(tmp_path / 'b') in r.stdout and '100%' in r.stderr  # the progress bar goes to stderr
    r = subprocess.run([exe, '--root', str(tmp_path / 'b'), '--categories', 'bottle'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "unknown built-in category 'bottle'" in r.stderr
    r = subprocess.run([exe, '--root', str(tmp_path / 'b'), '--categories', 'brick', '--seed', '1', '--n-train', '2',
                        '--n-test-good', '1', '--n-test-per-defect', '1'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and '--overwrite' in r.stderr


def test_interrupted_run_leaves_nothing_complete_looking(tmp_path, monkeypatch):
    real, calls = S.render, []
    def dying(*a, **k):
        calls.append(1)
        if len(calls) > 4: raise KeyboardInterrupt('simulated Ctrl-C')
        return real(*a, **k)
    monkeypatch.setattr(S, 'render', dying)
    with pytest.raises(KeyboardInterrupt): S.make_dataset(tmp_path, ['washer', 'pcb'], workers=1, **SMALL)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith('.')] == []
    assert not list(tmp_path.glob('.*partial*'))
    with pytest.raises(FileNotFoundError): MVTecAD(tmp_path, 'washer')
    monkeypatch.setattr(S, 'render', real)
    S.make_dataset(tmp_path, ['washer', 'pcb'], workers=1, **SMALL)
    assert len(MVTecAD(tmp_path, 'washer', 'train')) == 3


def test_killed_run_leaves_only_hidden_partials(tmp_path):
    cmd = [sys.executable, '-c', 'import sys; from adtutor.synthetic import main; main(sys.argv[1:])', '--root', str(tmp_path),
           '--categories', 'gravel', 'fabric', '--n-train', '64', '--workers', '1', '--quiet']
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while time.time() - t0 < 120 and proc.poll() is None:
            if any(len(list(p.rglob('*.png'))) >= 5 for p in tmp_path.glob('.*.partial-*')): break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL); proc.wait()
    assert list(tmp_path.glob('.*.partial-*')), 'the run finished or never started before the kill'
    for d in tmp_path.iterdir():
        if d.is_dir() and not d.name.startswith('.'):  # anything visible is complete
            assert S.read_stamp(d)['n_files'] == len(list(d.rglob('*.png')))
    if not (tmp_path / 'gravel').exists():
        with pytest.raises(FileNotFoundError): MVTecAD(tmp_path, 'gravel')
    S.make_dataset(tmp_path, ['gravel'], n_train=64, workers=1, progress=False)  # the next run cleans up and completes
    assert not list(tmp_path.glob('.*.partial-*')) and len(MVTecAD(tmp_path, 'gravel', 'train')) == 64


def test_builtin_root_rebuilds_when_the_generator_changes(tmp_path, monkeypatch):
    monkeypatch.setenv('ADTUTOR_CACHE', str(tmp_path))
    monkeypatch.setattr(S, 'BUILTIN', dict(seed=0, size=64, n_train=2, n_test_good=1, n_test_per_defect=1))
    root = S.builtin_root(progress=False)
    assert root == tmp_path.resolve() / 'builtin'
    assert sorted(json.loads((root / S.MANIFEST).read_text())['categories']) == sorted(S.CATEGORIES)
    before = {c: (root / c / S.STAMP).stat().st_mtime_ns for c in S.CATEGORIES}
    assert S.builtin_root(progress=False) == root  # up to date: nothing rewritten
    assert before == {c: (root / c / S.STAMP).stat().st_mtime_ns for c in S.CATEGORIES}
    shutil.copytree(root / 'washer', root / 'retired')  # a category an older version made
    (root / 'mine').mkdir()  # a folder the user put there
    monkeypatch.setattr(S, 'VERSION', 999)
    S.builtin_root(progress=False)
    assert all(S.read_stamp(root / c)['generator'] == 'adtutor.synthetic/999' for c in S.CATEGORIES)
    assert not (root / 'retired').exists() and (root / 'mine').exists()


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown built-in category 'bottle'.*pcb"): S.make_dataset(tmp_path, ['bottle'])
    with pytest.raises(ValueError, match='size'): S.make_dataset(tmp_path, ['pcb'], size=10)
    with pytest.raises(ValueError, match='n_train'): S.make_dataset(tmp_path, ['pcb'], n_train=0)
    with pytest.raises(ValueError, match='seed'): S.make_dataset(tmp_path, ['pcb'], seed=-1)
    with pytest.raises(ValueError, match="pcb has no defect 'hole'"): S.render('pcb', defect='hole')
    (tmp_path / 'file').write_text('x')
    with pytest.raises(NotADirectoryError): S.make_dataset(tmp_path / 'file', ['pcb'])
    S.make_dataset(tmp_path / 'd', ['washer'], **SMALL)
    with pytest.raises(FileExistsError, match='overwrite'): S.make_dataset(tmp_path / 'd', ['washer'], seed=1, **SMALL)
    S.make_dataset(tmp_path / 'd', ['washer'], seed=1, overwrite=True, **SMALL)
    assert S.read_stamp(tmp_path / 'd' / 'washer')['seed'] == 1
    (tmp_path / 'e' / 'washer').mkdir(parents=True)  # a folder it did not make is never overwritten silently
    with pytest.raises(FileExistsError, match='not generated here'): S.make_dataset(tmp_path / 'e', ['washer'], **SMALL)
