#!/usr/bin/env python3
"""Render a JSON report of bench/run.py as the Markdown section kept in bench/RESULTS.md.

python bench/render.py bench/out/result-....json >> bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from run import REFERENCE, TARGET, fmt, render_table


def render(report: dict[str, Any]) -> str:
    machine, load = report["machine"], report["loadavg"]
    checkout = report.get("checkout", {})
    commit = (checkout.get("src_commit") or checkout.get("commit") or "unknown")[:12]
    if checkout.get("src_modified"):
        commit += " (with uncommitted changes in src/)"
    lines = [
        f"## {report['started'][:10]} — {'quick' if report['quick'] else 'full size'}",
        "",
        f"- started: {report['started']}, took {report['duration_s']:.0f} s",
        f"- command: `{report['command']}`",
        f"- `uname -a`: `{machine['uname']}`",
        f"- `nproc`: {machine['nproc']}; memory: {machine['mem_total_gib']} GiB; "
        f"Python {machine['python']}",
        f"- load average (1/5/15 min): before {_load(load['before'])}, "
        f"after {_load(load['after'])}",
        f"- cargohold: `src/` as of commit {commit}, `{report['servers'][TARGET]['command']}`",
        f"- registry:2: `{report['servers'][REFERENCE]['command']}` "
        f"({report['tools'].get('registry:2', 'unknown version')})",
        f"- {report['reps']} repetitions per server, interleaved A,B,B,A,...; median shown",
        "",
        render_table(report["results"]),
        "",
        "<details><summary>Every repetition (cargohold | registry:2)</summary>",
        "",
        "| Metric | Unit | cargohold | registry:2 |",
        "|---|---|---|---|",
    ]
    for r in report["results"].values():
        ours = "; ".join(fmt(v) for v in r[TARGET]["samples"]) or r[TARGET]["error"]
        theirs = "; ".join(fmt(v) for v in r[REFERENCE]["samples"]) or r[REFERENCE]["error"]
        lines.append(f"| {r['label']} | {r['unit']} | {ours} | {theirs} |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def _load(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="JSON written by bench/run.py --json")
    args = p.parse_args()
    sys.stdout.write(render(json.loads(args.report.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
