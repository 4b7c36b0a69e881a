"""Policy changes without a restart: SIGHUP (through the supervisor of ``--workers 2``) and the
config file changing grant and revoke access while an upload is in flight, which completes; a
config that does not validate is refused and the old rules stay; the htpasswd path moves. Login
failures, lockouts and refusals are audit lines that never hold a password."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from support.clients import Skopeo
from support.images import ImageCache
from support.servers import RegistryProcess, unique_repo
from support.waiting import eventually

from cargohold.auth import htpasswd

from .helpers import audit_lines, find, hangup, push_image, rewrite_config, sha

RegistryFactory = Callable[..., RegistryProcess]
PASSWORDS = {"alice": "alice-Gov-pw-1", "bob": "bob-Gov-pw-2", "dave": "dave-Gov-pw-3"}
ADMIN = ("alice", PASSWORDS["alice"])
BOB = ("bob", PASSWORDS["bob"])


def _users(path: Path, *names: str) -> Path:
    for name in names:
        htpasswd.set_user(str(path), name, PASSWORDS[name], cost=4)
    return path


def _access(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"admins": ["alice"], "rules": list(rules)}


BOB_PULLS = {"repositories": ["team/**"], "users": ["bob"], "actions": ["pull"]}
NOBODY = {"repositories": ["other/**"], "users": ["alice"], "actions": ["pull"]}


def _start(
    make_registry: RegistryFactory, tmp_path: Path, access: dict[str, Any], workers: int = 1
) -> RegistryProcess:
    users = _users(tmp_path / "htpasswd", "alice", "bob")
    return make_registry(
        config={
            "auth": {"htpasswd": {"realm": "governance", "path": str(users)}},
            "access": access,
            "log": {"level": "info", "audit": {"path": str(tmp_path / "audit.log")}},
        },
        workers=workers,
    )


def _statuses(server: RegistryProcess, path: str, auth: tuple[str, str], n: int = 8) -> set[int]:
    """Status codes of ``n`` requests, each on a new connection (so both workers answer)."""
    return {requests.get(server.url + path, auth=auth, timeout=10).status_code for _ in range(n)}


def _log_count(server: RegistryProcess, text: str) -> int:
    return server.log_path.read_text(errors="replace").count(text)


def test_sighup_grants_and_revokes_while_an_upload_is_in_flight(
    make_registry: RegistryFactory, skopeo: Skopeo, images: ImageCache, tmp_path: Path
) -> None:
    server = _start(make_registry, tmp_path, _access(NOBODY), workers=2)
    repo = unique_repo("team/app")
    image = images.get(seed=501)
    sk = skopeo.with_logs(server)
    ref = f"docker://{server.host}/{repo}:1"
    sk.copy(image.oci_ref(), ref, extra=["--dest-creds", "alice:" + PASSWORDS["alice"]])
    manifest = f"/v2/{repo}/manifests/1"
    assert _statuses(server, manifest, BOB) == {403}

    # alice's upload: first half now, second half after two reloads
    data = os.urandom(3 * 1024 * 1024)
    start = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", auth=ADMIN, timeout=10)
    assert start.status_code == 202
    first = requests.patch(
        server.url + start.headers["Location"], data=data[: len(data) // 2], auth=ADMIN, timeout=30
    )
    assert first.status_code == 202

    rewrite_config(server, {"access": _access(NOBODY, BOB_PULLS)})
    hangup(server)
    eventually(lambda: _statuses(server, manifest, BOB) == {200}, timeout=30)
    creds = ["--creds", "bob:" + PASSWORDS["bob"]]
    assert sk.inspect(ref, extra=creds)["Digest"] == image.digest
    # pull only: a push by bob is still refused
    assert push_image(server, repo, "bob", [b"x"], auth=BOB).status_code == 403

    rewrite_config(server, {"access": _access(NOBODY)})
    hangup(server)
    eventually(lambda: _statuses(server, manifest, BOB) == {403}, timeout=30)
    denied = sk.run("inspect", "--tls-verify=false", *creds, ref, check=False)
    assert denied.returncode != 0 and "denied" in denied.stderr.lower(), denied.stderr

    # the upload in flight was not dropped: it completes and the blob is whole
    second = requests.patch(
        server.url + first.headers["Location"], data=data[len(data) // 2 :], auth=ADMIN, timeout=30
    )
    assert second.status_code == 202
    done = server.url + second.headers["Location"]
    put = requests.put(f"{done}&digest={sha(data)}", auth=ADMIN, timeout=30)
    assert put.status_code == 201
    blob = requests.get(f"{server.url}/v2/{repo}/blobs/{sha(data)}", auth=ADMIN, timeout=30)
    assert blob.content == data
    assert _log_count(server, "configuration reloaded (SIGHUP)") >= 4  # 2 workers, 2 reloads

    lines = audit_lines(tmp_path / "audit.log")
    refused = find(lines, action="access", outcome="denied", user="bob", repository=repo)
    assert refused and refused[0]["reference"] == "1"


def test_bad_config_on_sighup_keeps_the_old_rules(
    make_registry: RegistryFactory, tmp_path: Path
) -> None:
    server = _start(make_registry, tmp_path, _access(BOB_PULLS))
    repo = unique_repo("team/keep")
    assert push_image(server, repo, "1", [b"layer"], auth=ADMIN).status_code == 201
    manifest = f"/v2/{repo}/manifests/1"
    assert _statuses(server, manifest, BOB, 2) == {200}
    bad: list[dict[str, Any]] = [
        # a rule naming a group that does not exist (and that would revoke bob)
        {
            "access": {
                "admins": ["alice"],
                "rules": [{"repositories": ["x/**"], "groups": ["nope"], "actions": ["pull"]}],
            }
        },
        # a quota that is not a size
        {"access": _access(), "quotas": [{"repositories": "**", "size": "lots"}]},
        # an htpasswd file that does not exist
        {"access": _access(), "auth": {"htpasswd": {"realm": "x", "path": str(tmp_path / "no")}}},
    ]
    for n, change in enumerate(bad, start=1):
        original = server.config_path.read_text()
        rewrite_config(server, change)
        hangup(server)
        eventually(lambda n=n: _log_count(server, "reload (SIGHUP) refused") >= n, timeout=20)
        assert _statuses(server, manifest, BOB, 2) == {200}
        rewrite_config(server, None, text=original)
    rewrite_config(server, None, text="version: 0.1\nstorage: [unclosed\n")
    hangup(server)
    eventually(lambda: _log_count(server, "reload (SIGHUP) refused") >= 4, timeout=20)
    assert _statuses(server, manifest, BOB, 2) == {200}
    log = server.log_path.read_text()
    assert "quotas[0].size" in log and "access.rules[0].groups[0]" in log


def test_config_file_change_is_picked_up(make_registry: RegistryFactory, tmp_path: Path) -> None:
    server = _start(make_registry, tmp_path, _access(NOBODY))
    repo = unique_repo("team/watch")
    assert push_image(server, repo, "1", [b"layer"], auth=ADMIN).status_code == 201
    manifest = f"/v2/{repo}/manifests/1"
    assert _statuses(server, manifest, BOB, 2) == {403}
    rewrite_config(server, {"access": _access(NOBODY, BOB_PULLS)})  # no signal
    eventually(lambda: _statuses(server, manifest, BOB, 2) == {200}, timeout=30)
    # a new htpasswd file: dave can log in, bob no longer
    other = _users(tmp_path / "htpasswd-2", "alice", "dave")
    config = {"htpasswd": {"realm": "governance", "path": str(other)}}
    dave = ("dave", PASSWORDS["dave"])
    rewrite_config(server, {"auth": config, "access": _access({**BOB_PULLS, "users": ["dave"]})})
    # wait for the reload before dave tries: failed logins meanwhile would lock him out
    eventually(lambda: _log_count(server, "htpasswd file is now") == 1, timeout=30)
    assert _statuses(server, manifest, dave, 2) == {200}
    assert _statuses(server, manifest, BOB, 1) == {401}


def test_login_failures_and_lockout_are_audited_without_secrets(
    make_registry: RegistryFactory, tmp_path: Path
) -> None:
    server = _start(make_registry, tmp_path, _access(BOB_PULLS))
    wrong = "not-" + PASSWORDS["bob"]
    codes = [
        requests.get(f"{server.url}/v2/", auth=("bob", wrong), timeout=10).status_code
        for _ in range(6)
    ]
    assert codes[0] == 401 and codes[-1] == 429
    repo = unique_repo("team/audit")
    assert push_image(server, repo, "1", [b"layer"], auth=ADMIN).status_code == 201
    assert push_image(server, repo, "2", [b"layer"], auth=("alice", PASSWORDS["alice"]))
    lines = audit_lines(tmp_path / "audit.log")
    failures = find(lines, action="login", outcome="unauthorized", user="bob")
    assert len(failures) >= 5 and failures[0]["addr"] == "127.0.0.1"
    assert find(lines, action="login", outcome="locked-out", user="bob")
    pushed = find(lines, action="push", outcome="ok", user="alice", repository=repo)
    assert {entry["reference"] for entry in pushed} == {"1", "2"}
    for path in (tmp_path / "audit.log", server.log_path):
        text = path.read_text()
        for secret in (*PASSWORDS.values(), wrong):
            assert secret not in text, f"{secret} in {path}"


def test_retention_added_by_a_reload_notes_pulls(
    make_registry: RegistryFactory, tmp_path: Path
) -> None:
    server = make_registry()
    repo = unique_repo("kept/app")
    assert push_image(server, repo, "1", [b"layer"]).status_code == 201
    policies = [{"repositories": ["kept/**"], "keep_within": "1h"}]
    rewrite_config(server, {"retention": {"pullflushinterval": "1s", "policies": policies}})
    hangup(server)
    eventually(lambda: _log_count(server, "configuration reloaded (SIGHUP)") == 1, timeout=20)
    assert requests.get(f"{server.url}/v2/{repo}/manifests/1", timeout=10).status_code == 200
    record = server.root / "docker/registry/v2/repositories" / repo / "_pulls" / "1"
    eventually(record.exists, timeout=20)
