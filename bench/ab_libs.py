#!/usr/bin/env python3
"""A/B of two builds of libjoin-shm on the bench's own throughput rows.

One bench binary runs with each library in turn (LD_LIBRARY_PATH), in alternating order, for many
short pairs; each row's figure is the median of its paired ratios after/before, with a bootstrap
95% interval. Pairs taken seconds apart see the same machine, so the ratio survives a noisy VM
whose absolute figures swing by 2x between minutes.

Usage (the bench must use only calls both libraries export, e.g. one built at the older commit):
  bench/ab_libs.py --before OLD/build --after NEW/build --bench OLD/build/bench/join-shm-bench \\
      --pairs 300 -- --sizes 64 --transports mpsc,mpmc --producers 1 --repeats 1 --no-rtt --time-ms 40
"""
import argparse
import os
import random
import re
import statistics
import subprocess

UNITS = {'k': 1e3, 'M': 1e6, 'G': 1e9, '': 1}
ROW = re.compile(r'(join-shm \S+ (?:spin|batch|zero-copy|blocking|sleep))\s+(\d+)\s+([\d.]+) ?([kMG]?)')


def rows(bench, libdir, args):
    env = dict(os.environ, LD_LIBRARY_PATH=libdir)
    out = subprocess.run([bench] + args, capture_output=True, text=True, env=env, check=True).stdout
    found = {}
    for line in out.splitlines():
        m = ROW.match(line)
        if m:
            found[f'{m.group(1)} ({m.group(2)} producers)'] = float(m.group(3)) * UNITS[m.group(4)]
    return found


def interval(ratios):
    rng = random.Random(1)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return medians[50], medians[1949]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--before', required=True, help='directory holding the older libjoin-shm.so.1')
    p.add_argument('--after', required=True, help='directory holding the newer libjoin-shm.so.1')
    p.add_argument('--bench', required=True, help='the join-shm-bench binary to run with both')
    p.add_argument('--pairs', type=int, default=100)
    p.add_argument('args', nargs='*', help='bench arguments, after --')
    a = p.parse_args()
    ratios, before, after = {}, {}, {}
    for i in range(a.pairs):
        order = [('before', a.before), ('after', a.after)]
        if i % 2:
            order.reverse()
        got = {name: rows(a.bench, lib, a.args) for name, lib in order}
        for row, b in got['before'].items():
            if row in got['after'] and b > 0:
                ratios.setdefault(row, []).append(got['after'][row] / b)
                before.setdefault(row, []).append(b)
                after.setdefault(row, []).append(got['after'][row])
    print(f"{'row':44} {'before':>9} {'after':>9} {'after/before':>12}  {'95% interval':>16}"
          f"   ({a.pairs} alternated pairs; msgs/s medians)")
    for row in sorted(ratios):
        lo, hi = interval(ratios[row])
        print(f'{row:44} {statistics.median(before[row]) / 1e6:8.2f}M {statistics.median(after[row]) / 1e6:8.2f}M '
              f'{statistics.median(ratios[row]):12.3f}  [{lo:.3f}, {hi:.3f}]')


if __name__ == '__main__':
    main()
