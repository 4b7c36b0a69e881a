"""The web UI on S3 (moto): the driver path of ``registry.browse`` (lists, stats and reads
through the driver instead of ``os.scandir``), with the seeded images of tests/ui."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import requests
from support.images import ImageCache
from support.servers import RegistryProcess
from ui.helpers import csrf_of, names
from ui.seed import SBOM_TYPE, seed


def test_ui_on_s3(s3_registry: Callable[..., RegistryProcess], tmp_path: Path) -> None:
    server = s3_registry()
    url = server.url
    seeded = seed(url, ImageCache(tmp_path / "images"))
    assert names(requests.get(f"{url}/ui/api/repositories", timeout=60)) == [
        "private/vault",
        "public/tools",
        "team/api",
        "team/app",
    ]
    tags = requests.get(f"{url}/ui/api/tags?repository=team/app&sort=name", timeout=60).json()
    assert {t["name"]: t["digest"] for t in tags["tags"]} == {
        tag: seeded.digests[f"team/app:{tag}"] for tag in ("1.0", "1.1", "latest", "old")
    }
    assert all(t["size"] > 0 and t["pushed"] > 0 for t in tags["tags"])
    index = requests.get(f"{url}/ui/api/tags?repository=team/api", timeout=60).json()["tags"]
    assert index[0]["platforms"] == ["linux/amd64", "linux/arm64"]
    manifest = requests.get(
        f"{url}/ui/api/manifest?repository=team/app&reference=1.0", timeout=60
    ).json()
    kinds = {r["artifactType"] for g in manifest["referrers"] for r in g["manifests"]}
    assert SBOM_TYPE in kinds
    by_size = requests.get(f"{url}/ui/api/repositories?sort=size", timeout=60).json()
    assert by_size["repositories"][0]["name"] == "team/app"
    # delete through the form, on S3
    http = requests.Session()
    token = csrf_of(http.get(f"{url}/ui/r/team/app/-/delete?tag=old", timeout=60).text)
    done = http.post(
        f"{url}/ui/r/team/app/-/delete", data={"tag": "old", "csrf": token}, timeout=60
    )
    assert done.status_code == 200 and "Deleted tag" in done.text
    assert requests.get(f"{url}/v2/team/app/manifests/old", timeout=60).status_code == 404
    storage = requests.get(f"{url}/ui/api/storage", timeout=60).json()
    assert storage["usage"]["blobs"] > 10
