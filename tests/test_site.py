"""The documentation site: configuration, offline build from executed notebooks, every page in headless Chromium.

Chromium checks need Debian's `chromium` and `chromium-driver` and PyPI's `selenium`; they skip with the install
command when one is missing (they fail instead when ADTUTOR_REQUIRE_BROWSER=1, as in CI). Everything else runs everywhere.
"""
import os, re, sys, json, html, shutil, functools, threading, http.server, urllib.error, urllib.request, urllib.parse
from pathlib import Path

import pytest, yaml, nbformat

from adtutor import site as S

ROOT = Path(__file__).resolve().parents[1]
NBS, CONFIG = ROOT / 'nbs', ROOT / '_quarto.yml'
EXECUTE = ['00_core.ipynb', '03_backbones.ipynb']  # quick lessons; 03 draws a figure


# ---------------------------------------------------------------- configuration

def test_quarto_configs_agree():
    "nbs/_quarto.yml (where nbdev runs Quarto) is the top-level _quarto.yml."
    top, inner = NBS.parent / '_quarto.yml', NBS / '_quarto.yml'
    assert top.is_file() and inner.exists(), 'both _quarto.yml and nbs/_quarto.yml must exist'
    assert yaml.safe_load(inner.read_text()) == yaml.safe_load(top.read_text()), \
        'nbs/_quarto.yml differs from _quarto.yml: make it a link (ln -sf ../_quarto.yml nbs/_quarto.yml)'


def test_nbdev_config_and_metadata():
    "nbdev reads settings.ini; nbs/nbdev.yml is what nbdev writes from it; titles agree; nbdev leaves our sidebar alone."
    from nbdev.config import get_config
    from nbdev.quarto import _nbdev_yml
    cfg = get_config(path=ROOT)
    assert cfg.lib_name == 'adtutor' and cfg.nbs_path.resolve() == NBS.resolve()
    vals = {k: cfg[k] for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']}
    vals['doc_path'] = cfg.doc_path.name
    assert (NBS / 'nbdev.yml').read_text() == _nbdev_yml.format(**vals), \
        'nbs/nbdev.yml is stale: run `python -c "from nbdev.quarto import refresh_quarto_yml; refresh_quarto_yml()"`'
    q = S.read_config(CONFIG, NBS)
    assert q['website']['title'] == cfg.title
    assert q['project']['output-dir'] == cfg.doc_path.name, 'Quarto output-dir must be settings.ini doc_path (nbdev_docs moves it)'
    assert str(cfg.custom_sidebar).lower() == 'true', 'settings.ini custom_sidebar must be True: the sidebar lives in _quarto.yml'
    assert 'sidebar.yml' not in (q.get('metadata-files') or [])


def test_sidebar_follows_taxonomy():
    "The sidebar sections of _quarto.yml are the survey's families, in order, with the globs of FAMILIES."
    q = yaml.safe_load(CONFIG.read_text())
    secs = [(c['section'], c['contents']) for c in q['website']['sidebar']['contents'] if isinstance(c, dict)]
    assert secs == [tuple(f) for f in S.FAMILIES]
    found = S.find_notebooks(NBS)
    listed = {nb for _, l in S.sidebar_sections(q, found) for nb in l}
    assert listed == set(found), set(found) - listed


# ---------------------------------------------------------------- offline build

@pytest.fixture(scope='module')
def executed(tmp_path_factory):
    "A few quick lessons executed with papermill (as the main job does), in a folder laid out like nbs/."
    import papermill as pm
    out = tmp_path_factory.mktemp('executed')
    env = {'ADTUTOR_QUICK': '1', 'MPLBACKEND': 'module://matplotlib_inline.backend_inline'}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    failed = {}
    try:
        for nb in EXECUTE:
            try: pm.execute_notebook(str(NBS / nb), str(out / nb), parameters={'quick': True}, cwd=str(NBS),
                                     kernel_name='python3', progress_bar=False)
            except pm.PapermillExecutionError as e: failed[nb] = str(e)[:300]  # the page shows the error; checked below
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    return out, failed


@pytest.fixture(scope='module')
def site(executed, tmp_path_factory):
    import time
    t0 = time.time()
    out = S.build_site(executed[0], tmp_path_factory.mktemp('site') / '_site', NBS, CONFIG, builder='offline', quiet=True)
    print(f'offline build: {time.time() - t0:.1f}s', file=sys.stderr)
    return out, json.loads((out / S.MARKER).read_text())


def _pages(out): return sorted(p for p in out.rglob('*.html'))


def test_build_manifest(site, executed):
    out, m = site
    assert m['builder'] == 'offline'
    for nb in S.find_notebooks(NBS):
        pg = S.page_path(nb)
        assert pg in m['pages'] and (out / pg).is_file(), pg
        assert m['pages'][pg]['notebook'] == nb
    for nb in EXECUTE:
        e = m['pages'][S.page_path(nb)]
        assert e['executed'] and Path(e['executed']).name == nb
        assert ('error' in e['notes']) == (nb in executed[1]), (nb, e, executed[1])
    assert (out / 'index.html').is_file() and {'site.css', 'site.js', 'search_index.js'} <= {p.name for p in out.iterdir()}


def test_figures_present(site, executed):
    "Every image output of an executed notebook is on its page, as a file that exists."
    out, m = site
    n_total = 0
    for nb in EXECUTE:
        ran = nbformat.read(executed[0] / nb, as_version=4)
        n_img = sum(any(k.startswith('image/') for k in o.get('data', {})) for c in ran.cells for o in c.get('outputs', []))
        page = out / S.page_path(nb)
        srcs = re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', page.read_text())
        assert len(srcs) >= n_img, (nb, n_img, srcs)
        for s in srcs:
            if not s.startswith('data:'): assert (page.parent / urllib.parse.unquote(s)).stat().st_size > 500, s
        assert m['pages'][S.page_path(nb)]['figures'] == n_img
        n_total += n_img
    assert n_total > 0, 'no executed lesson produced a figure: is MPLBACKEND forcing Agg in the kernel?'


def _text(h): return html.unescape(re.sub(r'<[^>]+>', '', h))


def test_directives_applied(site):
    "Hidden cells are gone, every other code cell is shown, no code block starts with a `#|` directive, exported code is marked."
    out, m = site
    for pg, e in m['pages'].items():
        if not e['notebook']: continue
        page = (out / pg).read_text()
        code = [_text(b).strip() for b in re.findall(r'<div class="input_area">(.*?)</div></div>', page, flags=re.S)]
        assert not any(re.match(r'\s*#\|', l) for b in code for l in b.splitlines()), pg
        nb = nbformat.read(e['executed'] or NBS / e['notebook'], as_version=4)
        shown, hidden = [], []
        for c in nb.cells:
            if c.cell_type != 'code': continue
            lines = c.source.splitlines()
            d = [l for l in lines if re.match(r'\s*#\|', l)]
            body = '\n'.join(l for l in lines if not re.match(r'\s*#\|', l)).strip()
            if any(re.match(r'\s*#\|\s*hide\s*$', l) for l in d): hidden.append(body)
            elif body and not any(re.match(r'\s*#\|\s*(echo|include)\s*:\s*false', l) for l in d): shown.append(body)
        assert len(code) == len(shown), (pg, len(code), len(shown))
        assert not [h for h in hidden if h and h in code], pg
        if any(re.search(r'^\s*#\|\s*export', c.source, flags=re.M) for c in nb.cells if c.cell_type == 'code'):
            assert 'celltag_export' in page, pg


def test_api_sections(site):
    "Each module's page ends with its API: every name of `__all__` has an entry with nbdev's anchor."
    import importlib
    out, m = site
    mods = {e['module']: pg for pg, e in m['pages'].items() if e['module']}
    assert 'core' in mods and 'site' in mods
    for mod, pg in mods.items():
        page = (out / pg).read_text()
        assert 'id="api"' in page, pg
        names = importlib.import_module(f'adtutor.{mod}').__all__
        for n in names: assert f'id="{n.lower()}"' in page, (pg, n)
    core = (out / mods['core']).read_text()
    assert re.search(r'id="anomalymodel\.fit".*?<pre class="sig"><code>def fit', core, flags=re.S)


def test_offline_and_links_static(site):
    "No page loads anything from the network, and every relative link/src resolves to a file (and fragment)."
    out, _ = site
    ids = {p: set(re.findall(r'\bid="([^"]+)"', p.read_text())) for p in _pages(out)}
    for p in _pages(out):
        h = p.read_text()
        ext = re.findall(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)="((?:https?:)?//[^"]*)"', h, flags=re.I)
        assert not ext, (p, ext)
        for attr, url in re.findall(r'<(?:a|img|script|link)\b[^>]*?\b(href|src)="([^"]*)"', h):
            url = html.unescape(url)
            if re.match(r'^[a-z][a-z0-9+.-]*:', url, flags=re.I) or url.startswith('//'): continue
            path, _, frag = url.partition('#')
            tgt = (p.parent / urllib.parse.unquote(path)).resolve() if path else p
            assert tgt.is_file(), f'{p.relative_to(out)}: {attr}="{url}" -> missing {tgt}'
            if frag and tgt.suffix == '.html': assert urllib.parse.unquote(frag) in ids[tgt], f'{p.relative_to(out)}: #{frag} not in {tgt.name}'


def test_atomic_and_safe(tmp_path):
    "A failed build leaves the previous site; a folder the builder did not make is never replaced."
    nbs = tmp_path / 'nbs'; nbs.mkdir()
    shutil.copy(NBS / '00_core.ipynb', nbs)
    out = S.build_site(None, tmp_path / 'site', nbs, CONFIG, builder='offline', quiet=True)
    before = (out / 'core.html').read_text()
    (nbs / 'broken.ipynb').write_text('{not json')
    with pytest.raises(ValueError, match='broken.ipynb'): S.build_site(None, out, nbs, CONFIG, builder='offline', quiet=True)
    assert (out / 'core.html').read_text() == before and not list(tmp_path.glob('.site.build-*'))
    (nbs / 'broken.ipynb').unlink()
    (tmp_path / 'mine').mkdir(); (tmp_path / 'mine' / 'a.txt').write_text('x')
    with pytest.raises(FileExistsError): S.build_site(None, tmp_path / 'mine', nbs, CONFIG, builder='offline', quiet=True)
    assert (tmp_path / 'mine' / 'a.txt').read_text() == 'x'
    if not shutil.which('quarto'):  # asking for Quarto where there is none: a clear error, no fallback
        with pytest.raises(FileNotFoundError, match='quarto'): S.build_site(None, tmp_path / 'q', nbs, CONFIG, builder='quarto', quiet=True)


# ---------------------------------------------------------------- Quarto path, up to the quarto binary

_FAKE_QUARTO = r'''#!PYTHON
"""Stand-in for quarto: records what nbdev_docs hands Quarto, writes a page per notebook."""
import sys, json, shutil, re
from pathlib import Path
a = sys.argv[1:]
if a[:1] != ['render']: print('1.0.0'); sys.exit(0)
docs = Path('_docs'); docs.mkdir(exist_ok=True)
if '-o' in a: (docs / a[a.index('-o') + 1]).write_text('# README\n'); sys.exit(0)
shutil.copy('_quarto.yml', docs / '_quarto_seen.yml')
stats = {}
for p in Path('.').rglob('*.ipynb'):
    if p.parts[0] in ('_docs',): continue
    nb = json.loads(p.read_text())
    stats[p.as_posix()] = {'outputs': sum(len(c.get('outputs', [])) for c in nb['cells']),
                           'show_doc': sum('show_doc' in ''.join(c['source']) for c in nb['cells'])}
    out = docs / re.sub(r'^\d+[a-zA-Z0-9]*_', '', p.name.lower()).replace('.ipynb', '.html')
    out.write_text('<html><body>%s</body></html>' % p.name)
(docs / 'index.html').write_text('<html><body>index</body></html>')
(docs / '_stats.json').write_text(json.dumps(stats))
'''


def test_quarto_path_with_stub(executed, tmp_path, monkeypatch):
    "build_site(builder='quarto') stages the executed notebooks and runs nbdev_docs; a stub stands in for quarto."
    proj = tmp_path / 'proj'; (proj / 'nbs').mkdir(parents=True)
    for f in ['settings.ini', '_quarto.yml']: shutil.copy(ROOT / f, proj / f)
    shutil.copytree(ROOT / 'adtutor', proj / 'adtutor', ignore=shutil.ignore_patterns('__pycache__'))
    for f in ['00_core.ipynb', 'nbdev.yml', 'styles.css']:
        if (NBS / f).exists(): shutil.copy(NBS / f, proj / 'nbs' / f)
    os.symlink('../_quarto.yml', proj / 'nbs' / '_quarto.yml')
    bin_ = tmp_path / 'bin'; bin_.mkdir()
    (bin_ / 'quarto').write_text(_FAKE_QUARTO.replace('PYTHON', sys.executable)); (bin_ / 'quarto').chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin_}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}')
    out = S.build_site(executed[0], tmp_path / 'site', proj / 'nbs', proj / '_quarto.yml', builder='auto', quiet=True)
    m = json.loads((out / S.MARKER).read_text())
    assert m['builder'] == 'quarto' and (out / 'index.html').is_file() and (out / 'core.html').is_file()
    seen = yaml.safe_load((out / '_quarto_seen.yml').read_text())
    assert seen['website']['title'] == 'adtutor'
    assert {'section': 'Core lessons', 'contents': ['00_core.ipynb']} in seen['website']['sidebar']['contents']
    stats = json.loads((out / '_stats.json').read_text())
    assert stats['00_core.ipynb']['outputs'] > 0, 'Quarto did not get the executed notebook'
    assert stats['00_core.ipynb']['show_doc'] > 0, "nbdev's processors (show_doc) did not run"
    assert not (proj / 'nbs' / 'sidebar.yml').exists(), 'nbdev generated a sidebar although custom_sidebar = True'


# ---------------------------------------------------------------- headless Chromium

@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    # CI sets ADTUTOR_REQUIRE_BROWSER=1: there a missing browser fails instead of skipping
    missing = pytest.fail if os.environ.get('ADTUTOR_REQUIRE_BROWSER') == '1' else pytest.skip
    chromium = next((shutil.which(b) for b in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(b)), None)
    driver = shutil.which('chromedriver')
    if not chromium or not driver:
        missing('Chromium or chromedriver not installed: apt-get install -y chromium chromium-driver')
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError: missing('selenium not installed: pip install selenium')
    opts = Options(); opts.binary_location = chromium
    for a in ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-dev-shm-usage',
              '--disable-background-networking', '--disable-component-update', '--disable-sync', '--window-size=1280,900',
              f'--user-data-dir={tmp_path_factory.mktemp("chromium-profile")}']:
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


@pytest.fixture(scope='module')
def server(site):
    out, _ = site
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}/'
    httpd.shutdown()


def test_pages_in_chromium(site, server, browser):
    "Every page loads with its title, a body, no script error or failed request, only local resources, figures decoded."
    out, m = site
    base = server
    links, ids = set(), {}
    for p in _pages(out):
        rel = p.relative_to(out).as_posix()
        url = base + rel
        browser.get(url)
        e = m['pages'].get(rel, {})
        title = e.get('title') or ''
        assert browser.title.startswith(title) and browser.title.endswith(m['title']), (rel, browser.title)
        body = browser.execute_script("return document.getElementById('content') ? document.getElementById('content').innerText : ''")
        assert len(body.strip()) > 40, (rel, body[:200])
        errs = [l for l in browser.get_log('browser') if l['level'] == 'SEVERE']
        assert not errs, (rel, errs)
        res = browser.execute_script("return performance.getEntriesByType('resource').map(function(r){return r.name;})")
        assert all(r.startswith(base) or r.startswith('data:') for r in res), (rel, [r for r in res if not r.startswith(base)])
        imgs = browser.execute_script("return Array.from(document.images).map(function(i){return [i.getAttribute('src'), i.complete, i.naturalWidth];})")
        assert all(ok and w > 0 for _, ok, w in imgs), (rel, imgs)
        if e.get('figures'): assert len(imgs) >= e['figures'], (rel, imgs)
        ids[url] = set(browser.execute_script("return Array.from(document.querySelectorAll('[id]')).map(function(x){return x.id;})"))
        for h in browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(function(a){return a.getAttribute('href');})"):
            if not re.match(r'^[a-z][a-z0-9+.-]*:|^//', h, flags=re.I): links.add((url, h))
    assert len(ids) == len(_pages(out)) >= 3
    assert links, 'no internal link found at all'
    for src, h in sorted(links):
        target, _, frag = urllib.parse.urljoin(src, h).partition('#')
        if target in ids:
            if frag: assert urllib.parse.unquote(frag) in ids[target], f'{src}: link {h} -> no element #{frag}'
            continue
        try:
            with urllib.request.urlopen(target, timeout=10) as r: status = r.status
        except urllib.error.HTTPError as e: status = e.code
        assert status == 200, f'{src}: link {h} -> HTTP {status}'


def test_search_box(site, server, browser):
    "The search box lists matching pages and its links open them."
    from selenium.webdriver.common.by import By
    browser.get(server + 'index.html')
    box = browser.find_element(By.ID, 'search')
    box.send_keys('backbone')
    hits = browser.find_elements(By.CSS_SELECTOR, '#search-results a')
    assert hits and browser.find_element(By.ID, 'search-results').is_displayed()
    assert any('backbones.html' in a.get_attribute('href') for a in hits), [a.get_attribute('href') for a in hits]
    browser.get(hits[0].get_attribute('href'))
    assert not [l for l in browser.get_log('browser') if l['level'] == 'SEVERE']


def test_readme_is_generated_from_index():
    "README.md is the rendered nbs/index.ipynb: edit the notebook, then run adtutor.site.write_readme()."
    from adtutor.site import render_readme
    root = Path(__file__).resolve().parent.parent
    assert (root / 'README.md').read_text() == render_readme(root / 'nbs' / 'index.ipynb'), \
        'README.md is stale: run python -c "from adtutor.site import write_readme; write_readme()"'
