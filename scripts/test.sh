#!/usr/bin/env bash
# Set up and run every test: notebooks (nbdev_test) and pytest. Real-data tests run when ADTUTOR_DATA is set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export ADTUTOR_QUICK=1 PYTHONHASHSEED=0
# headless Chromium for the docs-site test (Debian packages)
if { ! command -v chromium || ! command -v chromedriver; } >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "== note: could not install chromium; the site browser test will skip"
fi
echo "== 1/3 notebooks, package and generated files agree (nbdev_export, nbdev_clean, adtutor-registry write change nothing)"
if git rev-parse --git-dir >/dev/null 2>&1; then
  before=$(git status --porcelain); nbdev_export; nbdev_clean; adtutor-registry write >/dev/null
  after=$(git status --porcelain)
  if [ "$before" != "$after" ]; then
    echo "nbdev_export / nbdev_clean / adtutor-registry write changed files: export and clean the notebooks, run adtutor-registry write, then commit:"; diff <(echo "$before") <(echo "$after") || true; exit 1
  fi
fi
echo "== 2/3 nbdev_test (every notebook, quick mode)"
nbdev_test --n_workers 2 --timing
echo "== 3/3 pytest"
python -m pytest -q tests/ "$@"
echo "== all tests passed"
