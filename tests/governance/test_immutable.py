"""Immutable tags with real clients: a frozen tag is never moved or deleted (its digest stays),
other tags move as before, the same manifest may be pushed again, retention and GC keep it, and
each refusal is a line of the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import requests
from support.clients import DockerDaemon, Skopeo
from support.images import ImageCache
from support.servers import RegistryProcess, unique_repo

from .conftest import DockerLoad
from .helpers import audit_lines, cli, error_of, find

RegistryFactory = Callable[..., RegistryProcess]
RULES = [{"repositories": "release/**", "tags": "^v[0-9]"}]


def _start(make_registry: RegistryFactory, tmp_path: Path, **extra: object) -> RegistryProcess:
    audit = tmp_path / "audit.log"
    config = {"immutable": RULES, "log": {"level": "info", "audit": {"path": str(audit)}}}
    return make_registry(config={**config, **extra})


def test_skopeo_immutable_tag_refused_on_move_and_delete(
    make_registry: RegistryFactory, skopeo: Skopeo, images: ImageCache, tmp_path: Path
) -> None:
    server = _start(make_registry, tmp_path)
    sk = skopeo.with_logs(server)
    first, second = images.get(seed=301), images.get(seed=302)
    repo = unique_repo("release/app")
    ref = f"docker://{server.host}/{repo}"
    digest = sk.copy_with_digest(first.oci_ref(), f"{ref}:v1")

    # moving v1 elsewhere: refused, with the rule named, and v1 still points where it did
    moved = sk.copy(second.oci_ref(), f"{ref}:v1", check=False)
    assert moved.returncode != 0
    assert "denied" in moved.stderr and "immutable[0]" in moved.stderr, moved.stderr
    assert "is immutable" in moved.stderr
    assert sk.inspect(f"{ref}:v1")["Digest"] == digest

    # deleting it (skopeo deletes the manifest the tag names): refused, still there
    deleted = sk.run("delete", "--tls-verify=false", f"{ref}:v1", check=False)
    assert deleted.returncode != 0 and "immutable" in deleted.stderr, deleted.stderr
    untag = requests.delete(f"{server.url}/v2/{repo}/manifests/v1", timeout=10)
    assert untag.status_code == 403 and error_of(untag)["code"] == "DENIED"
    assert "cannot be deleted" in error_of(untag)["message"]
    assert sk.inspect(f"{ref}:v1")["Digest"] == digest

    # the same manifest again is no move; other tags move freely and can be deleted
    assert sk.copy_with_digest(first.oci_ref(), f"{ref}:v1") == digest
    sk.copy(first.oci_ref(), f"{ref}:latest")
    other = sk.copy_with_digest(second.oci_ref(), f"{ref}:latest")
    assert sk.inspect(f"{ref}:latest")["Digest"] == other != digest
    sk.copy(first.oci_ref(), f"{ref}:beta")
    assert requests.delete(f"{server.url}/v2/{repo}/manifests/beta", timeout=10).status_code == 202
    # a repository outside the rule: v1 moves
    free = f"docker://{server.host}/{unique_repo('scratch/app')}"
    sk.copy(first.oci_ref(), f"{free}:v1")
    sk.copy(second.oci_ref(), f"{free}:v1")

    lines = audit_lines(tmp_path / "audit.log")
    refused = find(lines, action="push", outcome="denied", repository=repo, reference="v1")
    assert refused and "immutable[0]" in refused[0]["reason"]
    assert find(lines, action="delete", outcome="denied", repository=repo, reference=digest)
    assert find(lines, action="delete", outcome="denied", repository=repo, reference="v1")
    moves = find(lines, action="tag-move", outcome="ok", repository=repo, reference="latest")
    assert moves and moves[0]["digest"] == other and moves[0]["previous"] != other
    assert find(lines, action="push", outcome="ok", repository=repo, reference="v1")
    assert find(lines, action="delete", outcome="ok", repository=repo, reference="beta")
    assert all(entry["addr"] == "127.0.0.1" and entry["time"] for entry in lines)


def test_docker_push_to_immutable_tag(
    make_registry: RegistryFactory,
    dockerd: DockerDaemon,
    docker_load: DockerLoad,
    skopeo: Skopeo,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    server = _start(make_registry, tmp_path)
    sk = skopeo.with_logs(server)
    repo = unique_repo("release/docker")
    first, second = images.get(seed=303), images.get(seed=304)
    digest = sk.copy_with_digest(first.oci_ref(), f"docker://{server.host}/{repo}:v2")
    local = docker_load(second, "second")
    target = f"{server.host}/{repo}:v2"
    dockerd.docker("tag", local, target)
    push = dockerd.docker("push", target, check=False, logs=[server])
    output = push.stdout + push.stderr
    assert push.returncode != 0
    # docker prints the error code and the registry's message
    assert "denied" in output and "is immutable" in output, output
    assert sk.inspect(f"docker://{target}")["Digest"] == digest
    other = f"{server.host}/{repo}:nightly"
    dockerd.docker("tag", local, other)
    assert dockerd.docker("push", other, check=False).returncode == 0
    dockerd.docker("rmi", target, other)


def test_retention_and_gc_keep_immutable_tags(
    make_registry: RegistryFactory, skopeo: Skopeo, images: ImageCache, tmp_path: Path
) -> None:
    policy = {
        "policies": [{"repositories": ["release/*"], "keep_last": 0, "delete_untagged": True}]
    }
    no_grace = {"maintenance": {"gc": {"graceperiod": "0s"}}}
    server = _start(make_registry, tmp_path, retention=policy, storage=no_grace)
    sk = skopeo.with_logs(server)
    repo = unique_repo("release/kept")
    ref = f"docker://{server.host}/{repo}"
    frozen = sk.copy_with_digest(images.get(seed=305).oci_ref(), f"{ref}:v3")
    sk.copy(images.get(seed=306).oci_ref(), f"{ref}:dev")
    server.stop()
    report = cli("retention", str(server.config_path)).stdout
    assert "v3" in report and "immutable (rule immutable[0])" in report
    cli("retention", str(server.config_path), "--apply")
    cli("garbage-collect", str(server.config_path), "--delete-untagged")
    server.start()
    assert sk.list_tags(ref) == ["v3"]
    assert sk.inspect(f"{ref}:v3")["Digest"] == frozen
    sk.copy(f"{ref}:v3", f"oci:{tmp_path / 'out'}:v3")  # every blob still there
