#!/usr/bin/env bash
# Set up and run every test: pytest, which executes every notebook once (tests/test_notebooks.py: papermill, quick mode,
# cells flagged in tst_flags skipped, 2 workers) besides the module tests. Real-data tests run when ADTUTOR_DATA is set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# this checkout's package first, for pytest and every notebook kernel (a PYTHONPATH naming another copy of adtutor
# would otherwise be imported instead)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export ADTUTOR_QUICK=1 PYTHONHASHSEED=0
# headless Chromium for the docs-site test (Debian packages)
if { ! command -v chromium || ! command -v chromedriver; } >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "== note: could not install chromium; the site browser test will skip"
fi
echo "== 1/2 notebooks, package and generated files agree (nbdev_export, nbdev_clean, adtutor-registry write change nothing)"
if git rev-parse --git-dir >/dev/null 2>&1; then
  before=$(git status --porcelain); nbdev_export; nbdev_clean; adtutor-registry write >/dev/null
  after=$(git status --porcelain)
  if [ "$before" != "$after" ]; then
    echo "nbdev_export / nbdev_clean / adtutor-registry write changed files: export and clean the notebooks, run adtutor-registry write, then commit:"; diff <(echo "$before") <(echo "$after") || true; exit 1
  fi
fi
echo "== 2/2 pytest (every notebook runs once in tests/test_notebooks.py)"
python -m pytest -q tests/ "$@"
echo "== all tests passed"
