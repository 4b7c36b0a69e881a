"""Replica failure and a rolling update under push-and-pull load, and a Redis outage with the
cache refilling afterwards. Three replicas share a filesystem root, Redis and http.secret behind
haproxy (health-checked, one backend pick per request). Clients behave as careful ones do: a
chunk that fails is resent from the offset the upload's status (GET) gives, on whichever
replica the balancer picks; a pull that fails is retried. Loops are bounded; nothing is timed."""

from __future__ import annotations

import hashlib
import random
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from support.stores import RedisServer, ReplicaSet, chunked_upload
from support.waiting import eventually

ReplicaFactory = Callable[..., ReplicaSet]
KiB = 1024
PULL_ATTEMPTS = 30


def pull(rs: ReplicaSet, name: str, digest: str) -> bytes:
    """GET a blob through the balancer, retrying a failed attempt (a replica going away)."""
    last: object = None
    for _ in range(PULL_ATTEMPTS):
        try:
            r = requests.get(
                f"{rs.url}/v2/{name}/blobs/{digest}", timeout=60, headers={"Connection": "close"}
            )
        except requests.RequestException as e:
            last = e
            continue
        if r.status_code == 200:
            return r.content
        assert r.status_code in (502, 503, 504), (name, r.status_code, r.text[:300])
        last = r.status_code
        threading.Event().wait(0.2)
    raise AssertionError(f"{name}: no pull succeeded in {PULL_ATTEMPTS} attempts; last: {last}")


class Load:
    """Chunked pushes of new blobs and pulls of the ones already acknowledged, until stopped."""

    def __init__(self, rs: ReplicaSet, prefix: str, seed: int) -> None:
        self.rs, self.prefix = rs, prefix
        self.rng = random.Random(seed)
        self.acknowledged: dict[str, tuple[str, bytes]] = {}
        self.retries: list[str] = []
        self.pulls = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _push(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            with self._lock:
                data = self.rng.randbytes(600 * KiB + self.rng.randrange(KiB))
            name = f"{self.prefix}/w{worker}-{n}"
            digest = chunked_upload(self.rs.url, name, data, 128 * KiB, log=self.retries)
            assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
            with self._lock:
                self.acknowledged[name] = (digest, data)
            n += 1

    def _pull(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                items = list(self.acknowledged.items())
            if not items:
                self._stop.wait(0.05)
                continue
            name, (digest, data) = random.choice(items)
            assert pull(self.rs, name, digest) == data, name
            with self._lock:
                self.pulls += 1

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as e:  # surfaced by stop()
                self.errors.append(e)

        return run

    def start(self, pushers: int = 4, pullers: int = 2) -> None:
        for i in range(pushers):
            self._threads.append(threading.Thread(target=self._guard(lambda i=i: self._push(i))))
        for _ in range(pullers):
            self._threads.append(threading.Thread(target=self._guard(self._pull)))
        for t in self._threads:
            t.start()

    def wait_for(self, pushes: int) -> None:
        """Until ``pushes`` more pushes have been acknowledged (bounded by the retries' limit)."""
        target = len(self.acknowledged) + pushes
        eventually(lambda: len(self.acknowledged) >= target or bool(self.errors), timeout=300)
        assert not self.errors, self.errors

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in self._threads)
        assert not self.errors, self.errors

    def check(self) -> None:
        """Every acknowledged push pulls back intact, from every replica."""

        def one(item: tuple[str, tuple[str, bytes]]) -> None:
            name, (digest, data) = item
            for replica in self.rs.replicas:
                r = requests.get(f"{replica.url}/v2/{name}/blobs/{digest}", timeout=60)
                assert r.status_code == 200, (replica.name, name, r.status_code)
                assert r.content == data, name

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(one, self.acknowledged.items()))


def test_kill_9_and_a_rolling_restart_lose_no_acknowledged_push(
    replica_set: ReplicaFactory, redis_server: RedisServer
) -> None:
    rs = replica_set(
        storage="filesystem", redis=redis_server, config={"http": {"draintimeout": "30s"}}
    )
    load = Load(rs, f"rolling/{random.getrandbits(32):08x}", seed=21)
    load.start()
    try:
        load.wait_for(4)

        # A crash: SIGKILL, requests in flight break; clients resume elsewhere. Then it comes back.
        crashed = rs.replicas[1]
        crashed.stop(sig=signal.SIGKILL)
        load.wait_for(6)
        crashed.restart()
        eventually(lambda: rs.proxy.backend_states().get("r1") == "UP", timeout=60)
        load.wait_for(4)

        # A rolling update: SIGTERM, the replica drains and exits; then its successor starts.
        updated = rs.replicas[2]
        assert updated.proc is not None
        proc = updated.proc
        proc.send_signal(signal.SIGTERM)
        load.wait_for(4)
        proc.wait(timeout=60)  # drained (nothing of ours takes 30 s) and gone
        assert proc.returncode == 0, updated.describe_log()
        assert "stopping: draining" in updated.log_tail(5_000_000)
        updated.proc = None
        updated.restart()
        eventually(lambda: rs.proxy.backend_states().get("r2") == "UP", timeout=60)
        load.wait_for(4)
    finally:
        load.stop()
    load.check()
    spread = rs.replicas_of_upload()
    across = sum(1 for ids in spread.values() if len(ids) >= 2)
    print(
        f"{len(load.acknowledged)} pushes acknowledged, {load.pulls} pulls during the run, "
        f"{len(load.retries)} client retries, {across}/{len(spread)} uploads on 2+ replicas"
    )
    assert load.pulls > 0
    assert across >= len(load.acknowledged) // 2  # chunks of one upload went to several replicas


def redis_keys(redis: RedisServer) -> int:
    return int(redis.command_line("DBSIZE").strip() or 0)


def test_redis_stopped_and_started_during_load_and_the_cache_refills(
    replica_set: ReplicaFactory, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        rs = replica_set(storage="filesystem", redis=redis)
        load = Load(rs, f"redis-out/{random.getrandbits(32):08x}", seed=22)
        load.start()
        try:
            load.wait_for(4)
            eventually(lambda: redis_keys(redis) > 0, timeout=60)  # the cache fills

            redis.stop()  # an outage: every request is still served (the load checks them)
            load.wait_for(6)

            # Same port, empty: it runs with --save "" and --appendonly no. (Asserting zero keys
            # here would race the replicas, which write again the moment it answers.)
            redis.start()
            load.wait_for(4)
            # The replicas reconnect: descriptors of the pushes and pulls go back in.
            eventually(lambda: redis_keys(redis) > 0, timeout=120)
        finally:
            load.stop()
        load.check()
        warned = sum("redis cache at" in r.log_tail(5_000_000) for r in rs.replicas)
        assert warned >= 1  # the outage was seen, not silently bypassed
        health = requests.get(f"{rs.url}/debug/health", timeout=30)
        assert health.status_code == 200 and health.json()["cache"]["kind"] == "redis"
    finally:
        redis.stop()
