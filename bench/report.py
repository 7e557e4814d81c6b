"""Markdown table of one or more `bench/run.py --json` outputs, for docs/PERFORMANCE.md.

    python bench/report.py bench/results/relay.json bench/results/login.json ...

A figure found in several files is taken from the last one given.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import PROSODY, TARGETS, fmt  # noqa: E402


def main(paths):
    figures, meta = {}, []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        loads = [l for runs in data["meta"]["load"].values() for pair in runs for l in pair]
        one_min = [float(l[0]) for l in loads]
        meta.append(f"{os.path.basename(path)}: runs={data['meta']['runs']} "
                    f"quick={data['meta']['quick']} git={data['meta'].get('git')} "
                    f"load(1 min) {min(one_min):.1f}-{max(one_min):.1f}"
                    + (f" FAILED: {data['meta']['failures']}" if data["meta"].get("failures")
                       else ""))
        for name, median in data["figures"].items():
            figures[name] = (median, data["ranges"][name], data["units"][name],
                             len(data["runs"][name]))
    print("| figure | median | min–max | unit | runs | target | Prosody |")
    print("|---|---:|---:|---|---:|---|---|")
    for name, (median, (lo, hi), unit, n) in figures.items():
        print(f"| `{name}` | {fmt(median)} | {fmt(lo)}–{fmt(hi)} | {unit} | {n} | "
              f"{TARGETS.get(name, '')} | {PROSODY.get(name, '')} |")
    print()
    for line in meta:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
