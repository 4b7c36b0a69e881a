"""The parent process of ``serve --workers N`` once the workers run: it restarts any that dies.

SIGHUP is passed on to every worker, which reloads its policy (``cargohold.reload``).

The parent loads the whole server, checks the configuration and forks the workers, so that they
start at once and share its memory pages. Then it replaces itself (``exec``) with this module, run
as a script by a Python without site-packages (``-S``, unless Prometheus' multiprocess mode needs
``prometheus_client`` here) that imports next to nothing: ~10 MiB resident instead of ~45 MiB for a
process that only waits. A worker that dies is started afresh as the original command line plus
``--worker-index I``; the parent has put anything it decided at start-up (a generated
``http.secret``) into the environment that such a worker inherits.

Deliberately standard-library only (``prometheus_client`` aside, imported only to mark a dead
worker) and small: importing ``cargohold.server`` here would undo the point.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

# Every module imported here is resident for the server's lifetime: typing, json and shutil
# (~1.7 MiB together) are imported only for type checking or where they are used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

RESTART_DELAY = 0.5


def log(level: str, message: str, json_format: bool) -> None:
    """One line on stderr, in the same shape as the workers' log lines."""
    now = time.time()
    millis = int(now % 1 * 1000)
    if json_format:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{millis:03d}Z"
        import json

        line = json.dumps({"time": stamp, "level": level, "logger": "cargohold", "msg": message})
    else:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{millis:03d}"
        line = f"{stamp} {level.upper()} cargohold: {message}"
    print(line, file=sys.stderr, flush=True)


def parse(argv: Sequence[str]) -> tuple[dict[int, int], list[str], bool, list[str]]:
    """``--child PID:INDEX ... [--cleanup DIR ...] [--json-log] -- COMMAND ...``"""
    children: dict[int, int] = {}
    cleanup: list[str] = []
    json_format = False
    args = list(argv)
    while args and args[0] != "--":
        flag = args.pop(0)
        if flag == "--child":
            pid, _, index = args.pop(0).partition(":")
            children[int(pid)] = int(index)
        elif flag == "--cleanup":
            cleanup.append(args.pop(0))
        elif flag == "--json-log":
            json_format = True
        else:
            raise SystemExit(f"cargohold.supervisor: unknown argument {flag!r}")
    command = args[1:]
    if not command or not children:
        raise SystemExit("cargohold.supervisor: needs --child PID:INDEX ... -- COMMAND")
    return children, cleanup, json_format, command


def spawn(command: list[str], index: int) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker has its handler
            os.execv(command[0], [*command, "--worker-index", str(index)])
        finally:
            os._exit(127)
    return pid


def mark_dead(pid: int) -> None:
    """Prometheus' multiprocess mode: a dead worker's live gauges must stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def supervise(
    children: dict[int, int], command: list[str], json_format: bool, delay: float = RESTART_DELAY
) -> int:
    stopping = False

    def on_signal(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def on_hangup(_signum: int, _frame: Any) -> None:
        # SIGHUP: every worker reloads its policy (cargohold.reload)
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    # serve blocked these before exec (see server._start_workers): any that came meanwhile
    # is delivered now, to the handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        mark_dead(pid)
        if index is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        log("error", f"worker {index} exited ({code}); restarting it", json_format)
        time.sleep(delay)
        if not stopping:
            children[spawn(command, index)] = index
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    children, cleanup, json_format, command = parse(sys.argv[1:] if argv is None else argv)
    try:
        return supervise(children, command, json_format)
    finally:
        if cleanup:
            import shutil

            for directory in cleanup:
                shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
