"""Write results/novelty/README.md: the one-class novelty tables (ours beside source 004's Table 3) from the sweep's records.

    flock /tmp/adtutor-heavy.lock adtutor-sweep run sweeps/novelty.yaml --out results/novelty
    python benchmarks/one_class_novelty_table.py [--out results/novelty]
"""
import argparse
from pathlib import Path
from adtutor.novelty import write_novelty_report

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(Path(__file__).resolve().parent.parent / 'results' / 'novelty'))
    a = ap.parse_args()
    print('wrote', write_novelty_report(a.out))
