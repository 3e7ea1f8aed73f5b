#!/usr/bin/env python3
"""Reads the run-by-run output of `taskwarden bench --only observe` (or `secure`) kept in
files, and prints each ratio's median with its 95% interval over all their runs together.

Several invocations of the same build read as one longer one: each run's ratios come from the
`run N:` lines (rates there are rounded to whole tasks a second, so a ratio may differ from the
bench's own in the fourth decimal). The interval is the bench's: the k-th smallest and k-th
largest of the ratios, k from the binomial distribution.

    python3 bench/pool-runs.py bench/results/2026-12-06-observe-c029a6e-*.txt
"""

import argparse
import re
import statistics

from intervals import median_interval

RUN = re.compile(
    r"run \d+: plain single ([\d.]+)/s, 2x16 ([\d.]+)/s, 1x512 ([\d.]+)/s, "
    r"pickup p99 ([\d.]+) ms, CPU ([\d.]+)\+([\d.]+) us/task; "
    r"\w+ single ([\d.]+)/s, 2x16 ([\d.]+)/s, 1x512 ([\d.]+)/s.*?"
    r"pickup p99 ([\d.]+) ms, CPU ([\d.]+)\+([\d.]+) us/task"
)

MEASURES = [
    ("single submits, one client", 0),
    ("drain of those, 2 workers x 16", 1),
    ("drain of the batch-queued, 1 worker x 512", 2),
    ("pickup p99 (over plain: lower is better)", 3),
    ("server CPU per task (lower is better)", 4),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    ratios: list[list[float]] = [[] for _ in MEASURES]
    for name in args.files:
        with open(name) as f:
            for line in f:
                m = RUN.match(line)
                if not m:
                    continue
                x = [float(g) for g in m.groups()]
                plain, seen = x[:6], x[6:]
                for i in range(4):
                    ratios[i].append(seen[i] / plain[i])
                ratios[4].append(seen[4] / plain[4])
    heading = f"{len(args.files)} invocation(s), {len(ratios[0])} runs together"
    print(f"| {heading} | median ratio | 95% interval |")
    print("|---|---|---|")
    for label, i in MEASURES:
        found = median_interval(ratios[i])
        shown = f"{found[0]:.4f} to {found[1]:.4f}" if found else "(too few runs)"
        print(f"| {label} | {statistics.median(ratios[i]):.4f} | {shown} |")


if __name__ == "__main__":
    main()
