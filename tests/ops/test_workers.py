"""``serve --workers N``: a small supervisor process, workers restarted when they die, replacements
that honour upload URLs signed before the crash, and a clean stop."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import requests
from support.servers import RegistryProcess, free_port
from support.waiting import eventually

from cargohold import supervisor

RegistryFactory = Callable[..., RegistryProcess]


def tree(server: RegistryProcess) -> tuple[int, list[int]]:
    """(supervisor pid, worker pids) of a running server."""
    assert server.proc is not None
    leader = server.proc.pid
    workers = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == leader:
            workers.append(int(entry))
    return leader, sorted(workers)


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def replace_worker(server: RegistryProcess, victim: int) -> int:
    """SIGKILL one worker and wait for its replacement; return the new pid."""
    _, before = tree(server)
    os.kill(victim, signal.SIGKILL)
    eventually(
        lambda: victim not in tree(server)[1] and len(tree(server)[1]) == len(before),
        timeout=30.0,
    )
    (new,) = set(tree(server)[1]) - set(before)
    return new


def _serving(server: RegistryProcess) -> bool:
    try:
        return requests.get(f"{server.url}/v2/", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def test_the_supervisor_is_small_and_the_workers_do_the_serving(
    make_registry: RegistryFactory,
) -> None:
    server = make_registry(workers=2)
    leader, workers = tree(server)
    assert len(workers) == 2
    # The leader forks the workers, then execs the supervisor: under load the exec may still
    # be under way (an empty cmdline) when the server already answers.
    eventually(lambda: cmdline(leader)[1:3] == ["-S", supervisor.__file__], timeout=30)
    assert all("serve" in cmdline(w) for w in workers)
    # It imports next to nothing: far less resident memory than a worker.
    assert rss_kib(leader) < min(rss_kib(w) for w in workers) * 0.6
    assert requests.get(f"{server.url}/v2/", timeout=10).status_code == 200


def test_a_killed_worker_is_replaced_and_signed_upload_urls_survive(
    make_registry: RegistryFactory,
) -> None:
    # No http.secret in the config: the one generated at start must reach replacements.
    server = make_registry(workers=2)
    body = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    started = requests.post(f"{server.url}/v2/crash/test/blobs/uploads/", timeout=10)
    assert started.status_code == 202
    location = started.headers["Location"]
    assert "_state=" in location

    _, workers = tree(server)
    for victim in workers:  # every worker that could have signed it is gone
        new = replace_worker(server, victim)
        assert cmdline(new)[-2:] == ["--worker-index", str(workers.index(victim))]
    assert "restarting it" in server.log_tail()
    eventually(lambda: _serving(server), timeout=30.0)  # a replacement listens only once started

    url = location if location.startswith("http") else server.url + location
    put = requests.put(
        url,
        params={"digest": digest},
        data=body,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert put.status_code == 201, put.text
    got = requests.get(f"{server.url}/v2/crash/test/blobs/{digest}", timeout=10)
    assert got.content == body


def test_sigterm_stops_the_supervisor_and_every_worker(make_registry: RegistryFactory) -> None:
    server = make_registry(workers=2)
    leader, workers = tree(server)
    assert server.proc is not None
    os.kill(leader, signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    for pid in workers:
        eventually(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=10)
    assert "restarting" not in server.log_tail()


def test_a_dead_workers_live_gauges_are_dropped_with_multiprocess_metrics(
    make_registry: RegistryFactory,
) -> None:
    # With Prometheus on, the supervisor imports prometheus_client to clean up after a worker.
    debug = f"127.0.0.1:{free_port()}"
    config = {"http": {"debug": {"addr": debug, "prometheus": {"enabled": True}}}}
    server = make_registry(config=config, workers=2)
    leader, workers = tree(server)
    assert "-S" not in cmdline(leader)
    environ = Path(f"/proc/{leader}/environ").read_bytes().split(b"\0")
    (entry,) = [e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    shared = Path(entry.split(b"=", 1)[1].decode())
    victim = workers[0]
    eventually(lambda: (shared / f"gauge_livesum_{victim}.db").exists(), timeout=10)
    new = replace_worker(server, victim)
    assert not (shared / f"gauge_livesum_{victim}.db").exists()
    assert "Traceback" not in server.log_tail()
    eventually(lambda: (shared / f"gauge_livesum_{new}.db").exists(), timeout=10)
    # the debug listener is back once the replacement of worker 0 has started it
    eventually(lambda: _answers(f"http://{debug}/metrics"), timeout=30)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=10).status_code == 200
    except requests.ConnectionError:
        return False


def test_the_supervisor_logs_a_restart_in_the_json_format_too(
    make_registry: RegistryFactory,
) -> None:
    server = make_registry(config={"log": {"formatter": "json"}}, workers=2)
    _, workers = tree(server)
    replace_worker(server, workers[1])
    lines = [json.loads(line) for line in server.log_tail().splitlines() if line.startswith("{")]
    restarts = [line for line in lines if "restarting it" in line["msg"]]
    assert [(r["level"], r["logger"]) for r in restarts] == [("error", "cargohold")]
    assert restarts[0]["msg"].startswith("worker 1 exited")


def test_a_second_server_on_the_same_port_fails_to_start(
    make_registry: RegistryFactory, tmp_path: Path
) -> None:
    """Only the workers of one server share its port: a second ``cargohold serve`` on it (one
    worker or several, another storage root) stops with "address already in use", as registry:2
    does, instead of taking half the connections."""
    import subprocess
    import sys

    from support.servers import cargohold_env

    for first_workers in (2, 1):
        first = make_registry(workers=first_workers)
        for workers in ("1", "2"):
            second = subprocess.run(
                [sys.executable, "-m", "cargohold", "serve", "--addr", f"127.0.0.1:{first.port}",
                 "--root", str(tmp_path / "other"), "--workers", workers],
                env={**os.environ, **cargohold_env()},
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=120,  # before the fix it kept serving: this ran out
            )
            assert second.returncode != 0, second.stderr
            assert "address already in use" in second.stderr, second.stderr
        # every request still lands on the first server's storage
        data = b"still one registry"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        for i in range(8):
            r = requests.post(
                f"{first.url}/v2/port/check{i}/blobs/uploads/?digest={digest}", data=data,
                timeout=30,
            )
            assert r.status_code == 201, r.text
            r = requests.get(f"{first.url}/v2/port/check{i}/blobs/{digest}", timeout=30)
            assert r.content == data
