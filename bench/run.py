#!/usr/bin/env python3
"""Side-by-side benchmark of cargohold against the reference registry:2 (issue 6).

    python bench/run.py [--quick] [--json OUT] [--reps N]

Starts both servers on free loopback ports with fresh storage roots, runs every
workload against both (interleaved A,B,B,A,... per workload), prints a table of
absolute figures, the ratio cargohold / registry:2, the target and pass/fail, and
writes the same as JSON.  See bench/README.md.

Exit status: 0 when every workload was measured on both servers (whether or not the
targets were met); 1 on a harness error (a tool missing, a server that does not
start, a bug here); 2 when some workload could not be measured because a server
answered wrongly, crashed or hung -- the table and JSON are still written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from client import ServerError
from harness import HarnessError, Server, ServerSpec, install_signal_handlers
from workloads import FULL, QUICK, WORKLOADS, Fixtures, GiB, Sizes, Workload

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET, REFERENCE = "cargohold", "registry2"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    target: float | None  # on the ratio cargohold / registry:2; None = for information


# The targets of issue 6, and the only place they are written down.  A higher-is-better
# metric passes when ratio >= target, a lower-is-better one when ratio <= target.
METRICS: tuple[Metric, ...] = (
    Metric("rss_idle", "Server RSS, idle", "MiB", False, None),
    Metric("pss_idle", "Server PSS, idle", "MiB", False, None),
    Metric("upload_monolithic", "Monolithic upload", "MB/s", True, 2.0),
    Metric("upload_chunked", "Chunked upload (PATCH)", "MB/s", True, 1.8),
    Metric("download_single", "Blob download, 1 stream", "GB/s", True, 1.5),
    Metric("download_parallel", "Blob download, 8 streams", "GB/s", True, 1.3),
    Metric("manifest_get", "Manifest GET by tag", "req/s", True, 10.0),
    Metric("blob_head", "Blob HEAD", "req/s", True, 3.0),
    Metric("tags_list", "tags/list", "req/s", True, 3.0),
    Metric("catalog", "_catalog?n=100", "req/s", True, 3.0),
    Metric("upload_storm_peak_rss", "Peak RSS, upload storm", "MiB", False, 2.0),
    Metric("upload_storm_peak_pss", "Peak PSS, upload storm", "MiB", False, None),
    Metric("upload_storm_wall", "Wall time, upload storm", "s", False, None),
    Metric("pull_storm_wall", "Pull storm wall time", "s", False, 0.7),
    Metric("pull_storm_peak_rss", "Pull storm peak RSS", "MiB", False, 0.25),
    Metric("pull_storm_peak_pss", "Pull storm peak PSS", "MiB", False, None),
)

WORKLOAD_OF = {key: w.name for w in WORKLOADS for key in w.produces()}
assert sorted(WORKLOAD_OF) == sorted(m.key for m in METRICS), "METRICS and WORKLOADS disagree"

# Errors that mean "this server could not be measured", as opposed to a harness bug.
MEASUREMENT_ERRORS = (ServerError, OSError, http.client.HTTPException, subprocess.SubprocessError)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark cargohold against registry:2 side by side.",
        epilog="Commands may contain {config}, replaced by the path of the generated config.",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 repetitions (a smoke test)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON here ('-': stdout)")
    p.add_argument("--reps", type=int, help="repetitions per server and workload")
    p.add_argument(
        "--only",
        metavar="W[,W...]",
        help="run only these workloads: " + ", ".join(w.name for w in WORKLOADS),
    )
    p.add_argument(
        "--target-cmd",
        default=os.environ.get("BENCH_TARGET_CMD"),
        help="command for the cargohold slot (env BENCH_TARGET_CMD; default: "
        "'python -m cargohold serve {config} --workers 2' with src/ on PYTHONPATH)",
    )
    p.add_argument(
        "--reference-cmd",
        default=os.environ.get("BENCH_REFERENCE_CMD", "docker-registry serve {config}"),
        help="command for the registry:2 slot (env BENCH_REFERENCE_CMD)",
    )
    p.add_argument("--tmpdir", help="parent directory for storage roots (default: system temp)")
    p.add_argument("--request-timeout", type=float, default=120.0, metavar="S")
    p.add_argument("--startup-timeout", type=float, default=60.0, metavar="S")
    args = p.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        p.error("--reps must be at least 1")
    known = {w.name for w in WORKLOADS}
    if args.only:
        unknown = set(args.only.split(",")) - known
        if unknown:
            p.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    return args


def server_specs(args: argparse.Namespace) -> tuple[ServerSpec, ServerSpec]:
    if args.target_cmd:
        target = ServerSpec.from_command(TARGET, "cargohold", args.target_cmd)
    else:
        src = str(REPO_ROOT / "src")
        pythonpath = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
        target = ServerSpec(
            TARGET,
            "cargohold",
            [sys.executable, "-m", "cargohold", "serve", "{config}", "--workers", "2"],
            {"PYTHONPATH": pythonpath},
        )
    reference = ServerSpec.from_command(REFERENCE, "registry:2", args.reference_cmd)
    return target, reference


def check_tools(specs: tuple[ServerSpec, ...], workloads: list[type[Workload]]) -> None:
    needed = {spec.argv[0]: f"the {spec.label} server" for spec in specs}
    names = {w.name for w in workloads}
    if names & {"manifest_get", "tags_list", "catalog"}:
        needed["wrk"] = "apt-get install wrk"
    if "blob_head" in names:
        needed["ab"] = "apt-get install apache2-utils"
    missing = [f"{tool} ({why})" for tool, why in needed.items() if shutil.which(tool) is None]
    if missing:
        raise HarnessError("missing: " + "; ".join(missing))


def check_disk_space(where: Path, sizes: Sizes, workloads: list[type[Workload]]) -> None:
    """Each upload repetition's blobs are deleted after it (Server.drop_blob_data), so at most
    one repetition's uploads sit on disk per server at a time: make sure those fit."""
    names = {w.name for w in workloads}
    per_server = sizes.download_bytes + sizes.pull_layers * sizes.pull_layer_bytes
    uploads = [0]
    if "upload_monolithic" in names or "upload_chunked" in names:
        uploads.append(sizes.upload_bytes)
    if "upload_storm" in names:
        uploads.append(sizes.storm_uploads * sizes.storm_upload_bytes)
    per_server += max(uploads)
    need = 2 * per_server + 2 * max(sizes.upload_bytes, sizes.download_bytes) + GiB
    free = shutil.disk_usage(where).free
    if free < need:
        raise HarnessError(
            f"{where} has {free / GiB:.1f} GiB free, the run needs about {need / GiB:.1f} GiB "
            "(use --tmpdir elsewhere, or --quick)"
        )


# --- running -------------------------------------------------------------------------------


@dataclass
class Outcome:
    samples: dict[str, dict[str, list[float]]]  # metric -> server -> values
    errors: dict[str, dict[str, str]]  # workload -> server -> message
    descriptions: dict[str, str]  # workload -> what it does


def run_workloads(
    servers: tuple[Server, Server],
    workloads: list[type[Workload]],
    sizes: Sizes,
    scratch: Path,
) -> Outcome:
    out = Outcome({}, {}, {})
    fixtures = Fixtures(sizes, scratch)
    a, b = servers
    for cls in workloads:
        wl = cls(sizes, scratch, fixtures)
        out.descriptions[wl.name] = wl.describe()
        failed: dict[str, str] = {}
        log(f"{wl.name}: {wl.describe()}")
        for server in servers:
            try:
                server.check_alive()
                wl.setup(server)
            except MEASUREMENT_ERRORS as e:
                failed[server.name] = f"setup: {e}"
                log(f"  {server.name}: setup failed: {e}")
        for rep in range(sizes.reps):
            for server in (a, b) if rep % 2 == 0 else (b, a):
                if server.name in failed:
                    continue
                try:
                    server.check_alive()
                    if sizes.sync:  # no writeback left over from the previous repetition
                        os.sync()
                    values = wl.measure(server)
                except MEASUREMENT_ERRORS as e:
                    failed[server.name] = f"rep {rep + 1}: {e}"
                    log(f"  {server.name}: rep {rep + 1} failed: {e}")
                    continue
                shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                log(f"  {server.name:<10} rep {rep + 1}: {shown}")
                for key, value in values.items():
                    out.samples.setdefault(key, {}).setdefault(server.name, []).append(value)
        if failed:
            out.errors[wl.name] = failed
    return out


# --- reporting -----------------------------------------------------------------------------


def judge(metric: Metric, ours: float | None, theirs: float | None) -> dict[str, Any]:
    ratio = ours / theirs if ours is not None and theirs else None
    if ours is None or theirs is None:
        status = "error"
    elif metric.target is None:
        status = "info"
    elif metric.higher_is_better:
        status = "pass" if ratio is not None and ratio >= metric.target else "fail"
    else:
        status = "pass" if ratio is not None and ratio <= metric.target else "fail"
    return {"ratio": ratio, "status": status}


def build_results(outcome: Outcome, workloads: list[type[Workload]]) -> dict[str, Any]:
    names = {w.name for w in workloads}
    results: dict[str, Any] = {}
    for metric in METRICS:
        workload = WORKLOAD_OF[metric.key]
        if workload not in names:
            continue
        entry: dict[str, Any] = {
            "label": metric.label,
            "workload": workload,
            "description": outcome.descriptions.get(workload, ""),
            "unit": metric.unit,
            "better": "higher" if metric.higher_is_better else "lower",
            "target": metric.target,
        }
        medians: dict[str, float | None] = {}
        for server in (TARGET, REFERENCE):
            samples = outcome.samples.get(metric.key, {}).get(server, [])
            error = outcome.errors.get(workload, {}).get(server)
            medians[server] = statistics.median(samples) if samples and not error else None
            entry[server] = {"value": medians[server], "samples": samples, "error": error}
        entry.update(judge(metric, medians[TARGET], medians[REFERENCE]))
        results[metric.key] = entry
    return results


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def render_table(results: dict[str, Any]) -> str:
    header = ("Metric", "Unit", "cargohold", "registry:2", "ratio", "target", "result")
    rows = [header]
    for key, r in results.items():
        metric = next(m for m in METRICS if m.key == key)
        target = "-"
        if metric.target is not None:
            target = (">= " if metric.higher_is_better else "<= ") + f"{metric.target:g}x"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        rows.append(
            (
                r["label"],
                r["unit"],
                fmt(r[TARGET]["value"]),
                fmt(r[REFERENCE]["value"]),
                ratio,
                target,
                r["status"].upper(),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append(
                "|"
                + "|".join(
                    "-" * (w + 2) if i < 2 else "-" * (w + 1) + ":" for i, w in enumerate(widths)
                )
                + "|"
            )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    try:
        uname = subprocess.run(
            ["uname", "-a"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uname = " ".join(os.uname())
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "uname": uname,
        "nproc": os.cpu_count(),
        "mem_total_gib": round(mem / GiB, 1),
        "python": sys.version.split()[0],
    }


def checkout_info() -> dict[str, Any]:
    """Which cargohold was measured: the commit of this checkout, and whether src/ differs."""

    def git(*argv: str) -> str:
        try:
            proc = subprocess.run(
                ["git", "-C", str(REPO_ROOT), *argv],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return proc.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "src_commit": git("log", "-1", "--format=%H", "--", "src"),
        "src_modified": bool(git("status", "--porcelain", "src")),
    }


def tool_versions(specs: tuple[ServerSpec, ...]) -> dict[str, str]:
    versions = {}
    probes = {"wrk": ["wrk", "--version"], "ab": ["ab", "-V"]}
    if specs[1].argv[0].endswith("docker-registry"):
        probes["registry:2"] = [specs[1].argv[0], "--version"]
    for name, argv in probes.items():
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            versions[name] = (proc.stdout or proc.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            versions[name] = "unknown"
    return versions


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    sizes = QUICK if args.quick else FULL
    if args.reps:
        sizes = replace(sizes, reps=args.reps)
    only = set(args.only.split(",")) if args.only else None
    workloads = [w for w in WORKLOADS if only is None or w.name in only]
    specs = server_specs(args)
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    servers: list[Server] = []
    workdir: Path | None = None
    try:
        try:
            check_tools(specs, workloads)
            workdir = Path(tempfile.mkdtemp(prefix="cargohold-bench-", dir=args.tmpdir))
            check_disk_space(workdir, sizes, workloads)
            scratch = workdir / "scratch"
            scratch.mkdir()
            for spec in specs:
                server = Server(spec, workdir / spec.name, args.request_timeout)
                servers.append(server)
                log(f"starting {spec.label}: {spec.command()}")
                server.start(args.startup_timeout)
                log(f"  {spec.label} is up on {server.host}:{server.port}, pid {server.proc_pid}")
            target, reference = servers
            outcome = run_workloads((target, reference), workloads, sizes, scratch)
            for server in servers:
                for workload, errors in outcome.errors.items():
                    if server.name in errors:
                        log(f"{workload} on {server.name}: {errors[server.name]}")
                        log(server.log_tail())
                        break
        finally:
            for server in servers:
                server.stop()
    except HarnessError as e:
        log(f"harness error: {e}")
        return 1
    except Exception:
        log("harness error:\n" + traceback.format_exc())
        return 1
    else:
        report = build_report(args, sizes, specs, servers, outcome, workloads, started, load_before)
        print_report(report, outcome, specs)
        write_json(report, args.json, started)
        return 2 if report["summary"]["error"] else 0
    finally:
        if workdir is not None:
            log("removing the storage roots")
            shutil.rmtree(workdir, ignore_errors=True)


def invocation() -> str:
    """The command line as typed, with the BENCH_* overrides that were in effect."""
    env = [f"{k}={shlex.quote(v)}" for k, v in os.environ.items() if k.startswith("BENCH_")]
    return " ".join([*sorted(env), shlex.join(["python", "bench/run.py", *sys.argv[1:]])])


def build_report(
    args: argparse.Namespace,
    sizes: Sizes,
    specs: tuple[ServerSpec, ServerSpec],
    servers: list[Server],
    outcome: Outcome,
    workloads: list[type[Workload]],
    started: dt.datetime,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    results = build_results(outcome, workloads)
    finished = dt.datetime.now(dt.UTC)
    return {
        "schema": 1,
        "command": invocation(),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - started).total_seconds(), 1),
        "quick": args.quick,
        "reps": sizes.reps,
        "order": "interleaved per workload: A,B then B,A, repeated; value = median of reps",
        "machine": machine_info(),
        "loadavg": {"before": load_before, "after": os.getloadavg()},
        "tools": tool_versions(specs),
        "checkout": checkout_info(),
        "servers": {
            s.spec.name: {
                "label": s.spec.label,
                "command": s.spec.command(),
                "env": s.spec.env,
                "pid": s.proc_pid,
            }
            for s in servers
        },
        "sizes": sizes.describe(),
        "results": results,
        "summary": {
            status: sum(1 for r in results.values() if r["status"] == status)
            for status in ("pass", "fail", "info", "error")
        },
    }


def print_report(report: dict[str, Any], outcome: Outcome, specs: tuple[ServerSpec, ...]) -> None:
    print()
    print(render_table(report["results"]))
    print()
    for name, text in outcome.descriptions.items():
        print(f"  {name}: {text}")
    for spec in specs:
        print(f"  {spec.label}: {spec.command()}")
    summary, load = report["summary"], report["loadavg"]
    print(
        f"\n{summary['pass']} pass, {summary['fail']} fail, {summary['error']} not measured; "
        f"{report['reps']} reps each, median shown; {report['duration_s']:.0f} s; "
        f"load average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after "
        f"({report['machine']['nproc']} CPUs)",
        flush=True,
    )


def write_json(report: dict[str, Any], where: str | None, started: dt.datetime) -> None:
    text = json.dumps(report, indent=2)
    if where == "-":
        print(text, flush=True)
        return
    out = Path(where) if where else default_json_path(started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"JSON: {out}", flush=True)


def default_json_path(started: dt.datetime) -> Path:
    return REPO_ROOT / "bench" / "out" / f"result-{started.strftime('%Y%m%dT%H%M%SZ')}.json"


if __name__ == "__main__":
    sys.exit(main())
