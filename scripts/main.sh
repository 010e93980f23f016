#!/usr/bin/env bash
# Set up, then run the main job on the built-in dataset: generate it, sweep every method lab at teaching
# scale, write the tables and figures (results/tables, results/figures), build the docs site. OUT (default results/main)
# receives the runs, records, executed notebooks and the site.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
OUT=${OUT:-results/main}
start=$(date +%s)
adtutor-synth                                   # the built-in dataset (cached after the first run)
adtutor-sweep main --out "$OUT"                 # sweep + tables + figures (resumes if interrupted)
adtutor-site --executed "$OUT" --out "$OUT/site"
echo "== main job done in $(( $(date +%s) - start )) s"
echo "   tables:  results/tables/  figures: results/figures/  (made from $OUT/records.csv)"
echo "   site:    $OUT/site/index.html"
