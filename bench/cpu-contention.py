#!/usr/bin/env python3
"""How much slower one core computes while the other is busy.

Times the same single-threaded loop (arithmetic only: no memory traffic to speak of, no
system calls) on the first core, in CPU time, alone and while a second process spins on
another core, in alternating rounds, and prints each side's median and their ratio. On a
machine whose cores are truly apart the ratio is 1.0; above it, work on one core slows the
other (hyperthreads of one physical core behind the virtual machine's cores, or the host's
sharing). Then a thread's CPU time per task, such as the SQLite writer's in
`bench/observe-parts.py`, rises with whatever else runs, even work it never touches.

    python3 bench/cpu-contention.py [--rounds 9]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def work() -> float:
    """CPU seconds this thread took for a fixed amount of arithmetic."""
    started = time.thread_time()
    total = 0
    for i in range(3_000_000):
        total += i * i % 7
    return time.thread_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit("needs two cores")
    here, other = cores[0], cores[1]
    os.sched_setaffinity(0, {here})
    alone: list[float] = []
    busy: list[float] = []
    for _ in range(args.rounds):
        alone.append(work())
        spinner = subprocess.Popen(
            [sys.executable, "-c", SPIN.format(seconds=30)],
            preexec_fn=lambda: os.sched_setaffinity(0, {other}),
        )
        try:
            time.sleep(0.2)  # the spinner is running
            busy.append(work())
        finally:
            spinner.kill()
            spinner.wait()
    a, b = statistics.median(alone), statistics.median(busy)
    print(f"| the same loop on core {here}, median of {args.rounds} rounds | CPU seconds |")
    print("|---|---|")
    print(f"| alone | {a:.3f} |")
    print(f"| core {other} busy | {b:.3f} |")
    print(f"| busy / alone | {b / a:.2f} |")


if __name__ == "__main__":
    main()
