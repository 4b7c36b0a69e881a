"""Mirrors with a token-auth upstream, registry:2's root-level ``proxy`` section (with its
``REGISTRY_PROXY_*`` variables), the access policy on mirrored names, and the metrics."""

from __future__ import annotations

from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families
from support.clients import Skopeo
from support.images import sha256_digest
from support.servers import free_port, unique_repo

from .conftest import UPSTREAM_PASSWORD, UPSTREAM_USER, htpasswd_line, mirror_entry, seed_upstream
from .test_mirror_pull import _pull

SERVICE = "upstream-tokens"


def test_bearer_token_upstream_tokens_cached(make_registry, images, tmp_path: Path):
    """Upstream: a cargohold with its built-in token server (Docker Hub's flow)."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_line(UPSTREAM_USER, UPSTREAM_PASSWORD))
    builtin = {"htpasswd": str(htpasswd), "key": str(tmp_path / "token.key")}
    up = make_registry(config={"auth": {"token": {"service": SERVICE, "builtin": builtin}}})
    image = images.get(seed=1311)
    remote = unique_repo("library")
    Skopeo().copy(
        image.oci_ref(),
        f"docker://{up.host}/{remote}:latest",
        extra=["--dest-creds", f"{UPSTREAM_USER}:{UPSTREAM_PASSWORD}"],
    )
    entry = {
        "prefix": "hub",
        "remoteurl": up.url,
        "username": UPSTREAM_USER,
        "password": UPSTREAM_PASSWORD,
    }
    reg = make_registry(config={"mirrors": [entry]})
    before = up.log_tail(200000).count("/auth/token")
    first = _pull(reg.url, f"hub/{remote}", "latest")
    assert sha256_digest(first["manifest"]) == image.manifest_digest
    again = _pull(reg.url, f"hub/{remote}", "latest")
    assert again == first
    # One token for the repository's pull scope, reused for every later request.
    assert up.log_tail(200000).count("/auth/token") - before == 1


def test_wrong_upstream_credentials_fail_clearly(make_registry, proxy, upstream, images):
    reg = make_registry(config={"mirrors": [mirror_entry(proxy, password="wrong")]})
    r = requests.get(f"{reg.url}/v2/hub/library/x/manifests/latest")
    assert r.status_code == 403
    assert r.json()["errors"][0]["code"] == "DENIED"
    assert "upstream" in r.json()["errors"][0]["message"]


def test_root_proxy_section_from_environment(
    make_registry, proxy, upstream, upstream_session, images
):
    """registry:2's proxy mode, set only by REGISTRY_PROXY_* as its docs show: every name is
    mirrored (Docker Hub names at the root), every push refused."""
    image = images.get(seed=1312)
    remote = seed_upstream(upstream, upstream_session, image)
    env = {
        "REGISTRY_PROXY_REMOTEURL": proxy.url,
        "REGISTRY_PROXY_USERNAME": UPSTREAM_USER,
        "REGISTRY_PROXY_PASSWORD": UPSTREAM_PASSWORD,
        "REGISTRY_PROXY_TTL": "72h",
    }
    reg = make_registry(env=env)
    assert _pull(reg.url, remote, "latest")["manifest"] == image.top.data
    assert proxy.count("GET", f"/v2/{remote}/manifests/") == 1
    r = requests.post(f"{reg.url}/v2/anything/else/blobs/uploads/")
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_access_policy_and_metrics(
    make_registry, proxy, upstream, upstream_session, images, tmp_path: Path
):
    image = images.get(seed=1313)
    remote = seed_upstream(upstream, upstream_session, image)
    debug = f"127.0.0.1:{free_port()}"
    # Anonymous callers may pull hub/**; "dev" may push anywhere (but not into a mirror).
    tmp = tmp_path
    (tmp / "htpasswd").write_text(htpasswd_line("dev", "dev-pw-1234"))
    config = {
        "mirrors": [mirror_entry(proxy)],
        "auth": {"htpasswd": {"realm": "mirror", "path": str(tmp / "htpasswd")}},
        "access": {
            "rules": [
                {"repositories": ["hub/**"], "anonymous": True, "actions": ["pull"]},
                {"repositories": ["**"], "users": ["dev"], "actions": ["pull", "push"]},
            ]
        },
        "http": {"debug": {"addr": debug, "prometheus": {"enabled": True}}},
    }
    reg = make_registry(config=config)
    name = f"hub/{remote}"
    assert _pull(reg.url, name, "latest")  # anonymous pull allowed by the policy
    assert _pull(reg.url, name, "latest")  # and again, from the cache
    # Anonymous push: 401 (who is it?); a user who may push anywhere: still refused here.
    r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/")
    assert r.status_code == 401
    r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/", auth=("dev", "dev-pw-1234"))
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    # Not allowed to pull outside hub/**: nothing goes upstream for it either.
    r = requests.get(f"{reg.url}/v2/private/x/manifests/latest")
    assert r.status_code == 401
    text = requests.get(f"http://{debug}/metrics", timeout=10).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }

    def value(name: str, **labels: str) -> float:
        return sum(
            v
            for (n, lab), v in samples.items()
            if n == name and all((k, want) in lab for k, want in labels.items())
        )

    blobs = len(image.layer_digests) + 1
    assert value("cargohold_mirror_lookups_total", kind="blob", result="miss") == blobs
    assert value("cargohold_mirror_lookups_total", kind="blob", result="hit") == blobs
    assert value("cargohold_mirror_lookups_total", kind="manifest", result="miss") == 1
    assert value("cargohold_mirror_upstream_requests_total", method="GET", code="200") == 1 + blobs
    assert value("cargohold_mirror_upstream_bytes_total") >= sum(
        b.size for b in image.platforms[0].blobs
    )
