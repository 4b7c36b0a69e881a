"""Request-rate load generators: ``wrk`` for GETs, ``ab -i`` for HEADs.

Debian's wrk 4.1.0 cannot load-test HEAD: its response parser is never told that a
HEAD response has no body, so it waits for Content-Length bytes that never come and
counts zero requests (upstream wg/wrk issue #198).  ApacheBench's ``-i`` does send
HEAD and parses the answer correctly; two ``ab`` processes with half the connections
each stand in for wrk's two threads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from client import ServerError
from harness import run_bounded, spawn_all

# A request that was answered with an error (or not at all) more often than this
# makes the measured rate meaningless.
MAX_BAD_FRACTION = 0.001


@dataclass
class LoadResult:
    tool: str
    requests: int
    seconds: float
    bad: int
    detail: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def check(self, what: str) -> LoadResult:
        if self.requests <= 0:
            raise ServerError(f"{what}: {self.tool} completed no request ({self.detail})")
        if self.bad > MAX_BAD_FRACTION * self.requests:
            raise ServerError(
                f"{what}: {self.bad} of {self.requests} requests failed ({self.detail})"
            )
        return self


def _int(pattern: str, text: str, default: int | None = None) -> int:
    m = re.search(pattern, text)
    if m is None:
        if default is None:
            raise ServerError(f"cannot parse load generator output:\n{text}")
        return default
    return int(m.group(1))


_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(text: str) -> LoadResult:
    requests = _int(r"(\d+) requests in", text)
    m = re.search(r"requests in ([\d.]+)(us|ms|s|m|h),", text)
    if m is None:
        raise ServerError(f"cannot parse wrk output:\n{text}")
    seconds = float(m.group(1)) * _UNIT[m.group(2)]
    detail = {
        "non_2xx_3xx": _int(r"Non-2xx or 3xx responses: (\d+)", text, 0),
        "connect_errors": _int(r"Socket errors: connect (\d+)", text, 0),
        "read_errors": _int(r"Socket errors: .*read (\d+)", text, 0),
        "write_errors": _int(r"Socket errors: .*write (\d+)", text, 0),
        "timeouts": _int(r"Socket errors: .*timeout (\d+)", text, 0),
    }
    bad = detail["non_2xx_3xx"] + detail["connect_errors"] + detail["timeouts"]
    return LoadResult("wrk", requests, seconds, bad, detail)


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 2,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
    timeout: float = 10.0,
) -> LoadResult:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout:.0f}s",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    proc = run_bounded(argv, timeout=seconds + timeout + 30)
    if proc.returncode != 0:
        raise ServerError(f"wrk exited {proc.returncode}: {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout)


def parse_ab(text: str) -> LoadResult:
    requests = _int(r"Complete requests:\s+(\d+)", text)
    m = re.search(r"Time taken for tests:\s+([\d.]+) seconds", text)
    if m is None:
        raise ServerError(f"cannot parse ab output:\n{text}")
    detail = {
        "failed": _int(r"Failed requests:\s+(\d+)", text, 0),
        "connect": _int(r"\(Connect: (\d+)", text, 0),
        "receive": _int(r"Receive: (\d+)", text, 0),
        "length": _int(r"Length: (\d+)", text, 0),
        "exceptions": _int(r"Exceptions: (\d+)", text, 0),
        "non_2xx": _int(r"Non-2xx responses:\s+(\d+)", text, 0),
    }
    return LoadResult(
        "ab", requests, float(m.group(1)), detail["failed"] + detail["non_2xx"], detail
    )


def ab_head(
    url: str,
    *,
    seconds: float,
    connections: int,
    processes: int = 2,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> LoadResult:
    """HEAD ``url`` with keep-alive from ``processes`` concurrent ``ab`` runs; merged result."""
    argv = [
        "ab",
        "-i",
        "-k",
        "-c",
        str(max(1, connections // processes)),
        "-t",
        str(max(1, round(seconds))),
        "-n",
        "100000000",
        "-s",
        str(round(timeout)),
        "-r",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    outputs = spawn_all([argv] * processes, timeout=seconds + timeout + 30)
    parts = [parse_ab(out) for out in outputs]
    rate = sum(p.rate for p in parts)
    seconds_taken = max(p.seconds for p in parts)
    requests = sum(p.requests for p in parts)
    detail: dict[str, int] = {}
    for p in parts:
        for k, v in p.detail.items():
            detail[k] = detail.get(k, 0) + v
    # Report the summed per-process rates over the longest run time.
    merged = LoadResult("ab", round(rate * seconds_taken), seconds_taken, sum(p.bad for p in parts))
    merged.detail = {**detail, "completed": requests}
    return merged
