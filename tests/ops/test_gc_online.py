"""Garbage collection while the registry serves: no push that completes ever loses a blob.

The registry runs with two workers. Old garbage (images whose manifests were deleted, aged past
the grace period) is collected in a loop through ``POST /admin/gc`` while skopeo pushes new
images and pushes the garbage's content again (into the repository it was deleted from and into
new ones), and while pulls go on. Every push that succeeded is then pulled blob by blob.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import requests
from support.images import push_image
from support.servers import free_port, unique_repo
from support.waiting import eventually

from .helpers import V2, age_store, blob_digests, image_digests, verify_image, wait_debug

GC_ROUNDS = 40
DEADLINE = 120.0


def _gc(debug: str, **params: str) -> dict:
    query = "&".join(f"{k}={v}" for k, v in {"wait": "true", **params}.items())
    resp = requests.post(f"http://{debug}/admin/gc?{query}", timeout=120)
    assert resp.status_code == 200, resp.text
    report: dict = resp.json()
    return report


def _age(root: Path, digests: set[str], seconds: float = 86400.0) -> None:
    when = time.time() - seconds
    for digest in digests:
        alg, hexpart = digest.split(":")
        data = root / V2 / "blobs" / alg / hexpart[:2] / hexpart / "data"
        if data.exists():
            os.utime(data, (when, when))


def test_gc_in_a_loop_while_clients_push_and_pull(make_registry, images, skopeo, tmp_path):
    debug = f"127.0.0.1:{free_port()}"
    config = {
        "http": {"debug": {"addr": debug}},
        "storage": {"maintenance": {"gc": {"graceperiod": "30s", "settle": "0.5s"}}},
    }
    reg = make_registry(config=config, workers=2)
    wait_debug(debug)
    sk = skopeo.with_logs(reg)
    root = reg.root

    # Garbage older than the grace period: pushed, deleted, aged.
    old_repo, kept_repo = unique_repo("old"), unique_repo("kept")
    garbage = [images.get(200 + i) for i in range(8)]
    for i, image in enumerate(garbage):
        push_image(reg.url, old_repo, image, tag=f"g{i}")
        resp = requests.delete(f"{reg.url}/v2/{old_repo}/manifests/{image.digest}", timeout=30)
        assert resp.status_code == 202
    kept = images.get(199, multi_arch=True)
    push_image(reg.url, kept_repo, kept, tag="kept")
    untagged = images.get(198)
    push_image(reg.url, kept_repo, untagged, tag="gone")
    assert requests.delete(f"{reg.url}/v2/{kept_repo}/manifests/gone").status_code == 202
    age_store(root)

    # What the clients push: the garbage's content again, and new images.
    work = [(old_repo, f"again{i}", image) for i, image in enumerate(garbage)]
    work += [(unique_repo("moved"), "m", image) for image in garbage[:4]]
    work += [(unique_repo("new"), "n", images.get(300 + i)) for i in range(6)]
    pushed: list[tuple[str, str, object]] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def pusher(items: list) -> None:
        for repo, tag, image in items:
            for _attempt in range(3):
                proc = sk.copy(image.oci_ref(), f"docker://{reg.host}/{repo}:{tag}", check=False)
                if proc.returncode == 0:
                    with lock:
                        pushed.append((repo, tag, image))
                    break
                # a push may fail cleanly (blob unknown) if it relied on a blob being deleted
                # under it; it must never fail otherwise, and a retry must succeed
                with lock:
                    failures.append(proc.stderr[-500:])
                assert "unknown" in proc.stderr.lower(), proc.stderr
            else:
                raise AssertionError(f"push of {repo}:{tag} failed 3 times")

    def puller() -> None:
        session = requests.Session()
        while not stop.is_set():
            verify_image(reg.url, kept_repo, "kept", kept, session)
            with lock:
                done = list(pushed)
            for repo, tag, image in done[-3:]:
                verify_image(reg.url, repo, tag, image, session)

    reports: list[dict] = []

    def collector() -> None:
        deadline = time.monotonic() + DEADLINE
        rounds = 0
        while not stop.is_set() and rounds < GC_ROUNDS and time.monotonic() < deadline:
            reports.append(_gc(debug, deleteuntagged="true"))
            rounds += 1

    threads = [
        threading.Thread(target=pusher, args=(work[0::2],)),
        threading.Thread(target=pusher, args=(work[1::2],)),
    ]
    helpers = [threading.Thread(target=collector), threading.Thread(target=puller)]
    errors: list[BaseException] = []

    def guarded(thread: threading.Thread) -> threading.Thread:
        target = thread._target  # type: ignore[attr-defined]
        args = thread._args  # type: ignore[attr-defined]

        def run() -> None:
            try:
                target(*args)
            except BaseException as e:  # reported below
                errors.append(e)

        return threading.Thread(target=run)

    threads = [guarded(t) for t in threads]
    helpers = [guarded(t) for t in helpers]
    for t in helpers + threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    stop.set()
    for t in helpers:
        t.join(DEADLINE)
    if errors:
        raise errors[0]

    assert len(pushed) == len(work)
    assert reports and all(not r["error"] for r in reports), reports
    deleted = {d for r in reports for d in r["blobsDeleted"]}
    assert image_digests(untagged) <= deleted, "old garbage was collected"
    # one more collection once the pushes are over: nothing pushed goes, garbage is gone
    final = _gc(debug, deleteuntagged="true")
    assert not final["error"]
    for repo, tag, image in pushed:
        verify_image(reg.url, repo, tag, image)  # type: ignore[arg-type]
    verify_image(reg.url, kept_repo, "kept", kept)
    on_disk = blob_digests(root)
    for _repo, _tag, image in pushed:
        assert image_digests(image) <= on_disk  # type: ignore[arg-type]
    assert not image_digests(untagged) & on_disk
    # the GC bookkeeping is cleaned up after each batch
    gc_dir = root / V2 / "_cargohold" / "gc"
    assert not list((gc_dir / "condemned").glob("*"))
    assert not (gc_dir / "lease").exists()
    print(json.dumps({"rounds": len(reports), "deleted": len(deleted), "retries": len(failures)}))


def test_condemned_blob_pushed_again_is_kept_or_rewritten(make_registry, images, tmp_path):
    """The hard case, made deterministic: the batch is published and settling when a client
    uploads the very blob GC is about to delete, then pushes a manifest naming it."""
    debug = f"127.0.0.1:{free_port()}"
    config = {
        "http": {"debug": {"addr": debug}},
        "storage": {"maintenance": {"gc": {"graceperiod": "10s", "settle": "3s"}}},
    }
    reg = make_registry(config=config)
    wait_debug(debug)
    repo = unique_repo("hard")
    image = images.get(400)
    push_image(reg.url, repo, image, tag="x")
    assert requests.delete(f"{reg.url}/v2/{repo}/manifests/{image.digest}").status_code == 202
    _age(reg.root, image_digests(image))
    result: list[dict] = []
    gc = threading.Thread(target=lambda: result.append(_gc(debug)))
    gc.start()
    condemned = reg.root / V2 / "_cargohold" / "gc" / "condemned"
    deadline = time.monotonic() + 20
    while not list(condemned.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(condemned.glob("*")), "the batch was never published"
    other = unique_repo("hard2")
    push_image(reg.url, other, image, tag="y")  # during the settle time
    gc.join(60)
    assert result and not result[0]["error"]
    verify_image(reg.url, other, "y", image)
    assert image_digests(image) <= blob_digests(reg.root)


def test_scheduled_gc_and_the_online_command(make_registry, images):
    debug = f"127.0.0.1:{free_port()}"
    config = {
        "http": {"debug": {"addr": debug}},
        "storage": {
            "maintenance": {
                "gc": {"enabled": True, "interval": "1s", "graceperiod": "1m", "settle": "0s"}
            }
        },
    }
    reg = make_registry(config=config)
    wait_debug(debug)
    repo = unique_repo("sched")
    kept, first, second = images.get(410), images.get(411), images.get(412)
    push_image(reg.url, repo, kept, tag="kept")
    for image in (first, second):
        push_image(reg.url, repo, image, tag="x")
        assert requests.delete(f"{reg.url}/v2/{repo}/manifests/{image.digest}").status_code == 202
    _age(reg.root, image_digests(first))
    old = time.time() - 86400  # links too: only `second`'s blobs stay young
    for dirpath, _dirs, files in os.walk(reg.root / V2 / "repositories"):
        for name in files:
            os.utime(os.path.join(dirpath, name), (old, old))
    deadline = time.monotonic() + 30
    while image_digests(first) & blob_digests(reg.root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not image_digests(first) & blob_digests(reg.root), "the schedule never collected"
    assert image_digests(second) <= blob_digests(reg.root), "the grace period protects"

    def last() -> dict | None:  # the blobs go before the collection's report is in
        return requests.get(f"http://{debug}/admin/gc", timeout=10).json()["last"]

    eventually(last, timeout=30)
    assert not last()["error"]

    from .helpers import run_cli

    out = run_cli("garbage-collect", str(reg.config_path), "--online", "--dry-run").stdout
    assert "blobs marked" in out
    verify_image(reg.url, repo, "kept", kept)
