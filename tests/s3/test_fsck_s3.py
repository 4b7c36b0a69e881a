"""``cargohold fsck`` on S3 (moto): a clean bucket, damage found, repaired; a corrupt object
is never streamed whole."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from support.images import push_image
from support.servers import unique_repo

from tests.ops.helpers import run_cli

V2 = "docker/registry/v2"


def _fsck(config: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli("fsck", str(config), "--json", *flags, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return proc.returncode, report


def _cut_off(url: str) -> bool:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("GET", parts.path)
        resp = conn.getresponse()
        assert resp.status == 200
        length = int(resp.headers["Content-Length"])
        try:
            body = resp.read()
        except http.client.IncompleteRead as e:
            body = e.partial
        return len(body) < length
    except ConnectionError:
        return True
    finally:
        conn.close()


def test_fsck_checks_and_repairs_an_s3_store(moto, s3_registry, images, tmp_path):
    reg = s3_registry(config={"storage": {"redirect": {"disable": True}}})
    bucket = reg.bucket  # type: ignore[attr-defined]
    name = unique_repo("fss3")
    x, y = images.get(331), images.get(332)
    push_image(reg.url, name, x, tag="x")
    push_image(reg.url, name, y, tag="y")
    config = tmp_path / "s3.yml"
    config.write_text(
        yaml.safe_dump(
            {"version": 0.1, "storage": {"s3": moto.s3_params(bucket), "delete": {"enabled": True}}}
        )
    )
    code, report = _fsck(config, "--verify-blobs")
    assert code == 0, report["problems"]
    assert report["blobsVerified"] == report["blobs"] >= 6 and report["tags"] == 2

    s3 = moto.client()
    repo = f"{V2}/repositories/{name}"
    s3.put_object(
        Bucket=bucket, Key=f"{repo}/_manifests/tags/ghost/current/link", Body=b"sha256:" + b"0" * 64
    )
    x_layer = x.layer_digests[0]
    s3.delete_object(Bucket=bucket, Key=f"{repo}/_layers/sha256/{x_layer[7:]}/link")
    y_layer = y.layer_digests[0]
    key = f"{V2}/blobs/sha256/{y_layer[7:9]}/{y_layer[7:]}/data"
    good = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(b ^ 0x55 for b in good))

    # streamed through the registry (no redirect): the corrupt body never arrives whole
    assert _cut_off(f"{reg.url}/v2/{name}/blobs/{y_layer}")

    code, report = _fsck(config, "--verify-blobs")
    assert code == 1
    assert sorted(p["kind"] for p in report["problems"]) == [
        "blob-corrupt", "reference-unlinked", "tag-dangling",
    ]  # fmt: skip
    code, report = _fsck(config, "--verify-blobs", "--repair")
    assert all(p["repaired"] for p in report["problems"]), report["problems"]
    keys = set(moto.keys(bucket))
    assert f"{repo}/_manifests/tags/ghost/current/link" not in keys
    assert f"{repo}/_layers/sha256/{x_layer[7:]}/link" in keys
    assert key not in keys
    assert f"{V2}/_cargohold/quarantine/sha256/{y_layer[7:]}/data" in keys
    push_image(reg.url, name, y, tag="y")  # the client pushes the layer again
    code, report = _fsck(config, "--verify-blobs")
    assert code == 0, report["problems"]
    assert report["quarantine"] == [y_layer]
