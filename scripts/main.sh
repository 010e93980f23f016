#!/usr/bin/env bash
# Set up, then run the main job on the built-in dataset: generate it, sweep every method lab at teaching
# scale, write the tables and figures (results/tables, results/figures), build the docs site. OUT (default results/main)
# receives the runs, records, executed notebooks and the site.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash scripts/setup.sh
. .venv/bin/activate
# this checkout's package first, for pytest and every notebook kernel (a PYTHONPATH naming another copy of adtutor
# would otherwise be imported instead)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export ADTUTOR_SETUP_SECONDS=$(( $(date +%s) - t0 ))
OUT=${OUT:-results/main}
start=$(date +%s)
commit=$(python -c 'from adtutor.core import git_commit; print(git_commit() or "")')  # before the job rewrites its tables
adtutor-synth                                   # the built-in dataset (cached after the first run)
adtutor-sweep main --out "$OUT"                 # budgets, sweep (runs side by side), tables, figures, lessons (resumes if interrupted)
s0=$(date +%s)
adtutor-site --executed "$OUT" --out "$OUT/site"
site=$(( $(date +%s) - s0 ))
echo "== main job done in $(( $(date +%s) - start )) s (set-up ${ADTUTOR_SETUP_SECONDS} s before it)"
python benchmarks/main_job_time.py --out "$OUT" --setup "$ADTUTOR_SETUP_SECONDS" --site "$site" --commit "$commit" --total "$(( $(date +%s) - t0 ))" >/dev/null
echo "   timing:  $OUT/main_job_time.md (and benchmarks/results/main_job_time.md)"
echo "   tables:  results/tables/  figures: results/figures/  (made from $OUT/records.csv)"
echo "   site:    $OUT/site/index.html"
