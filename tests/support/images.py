"""Deterministic test images built locally (no internet), plus tiny HTTP push helpers.

An image is written as an OCI image layout directory::

    DIR/oci-layout
    DIR/index.json            -> names the tagged manifest (or image index)
    DIR/blobs/sha256/<hex>    -> layers (gzip tar), configs, manifests, index

Everything is byte-for-byte reproducible: tar entries have fixed mtimes/owners,
the gzip header has mtime 0 and no file name, JSON is serialised with sorted keys.
The same ``seed`` therefore always yields the same digests, and different seeds
yield different content.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

#: Every manifest media type a client may ask for; use as the ``Accept`` header.
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])

BUSYBOX_PATH = Path("/bin/busybox")
FIXED_MTIME = 1_700_000_000  # 2023-11-14, any constant works
DEFAULT_PLATFORMS: tuple[tuple[str, str], ...] = (("linux", "amd64"),)
MULTI_ARCH_PLATFORMS: tuple[tuple[str, str], ...] = (("linux", "amd64"), ("linux", "arm64"))
# applets symlinked next to busybox so `docker run IMAGE echo hi` and `sh -c` work
BUSYBOX_APPLETS = ("sh", "echo", "cat", "ls", "true", "uname")


def sha256_digest(data: bytes) -> str:
    """The OCI digest string (``sha256:<hex>``) of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Stable JSON bytes (sorted keys, no spaces) so digests never depend on dict order."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob with the descriptor fields a manifest needs."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class PlatformImage:
    """One single-platform image: its manifest, config and layers."""

    os: str
    architecture: str
    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]
    diff_ids: tuple[str, ...]

    @property
    def manifest_digest(self) -> str:
        return self.manifest.digest

    @property
    def config_digest(self) -> str:
        return self.config.digest

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def blobs(self) -> list[Blob]:
        """Blobs a registry must hold before the manifest can be pushed."""
        return [self.config, *self.layers]


@dataclass(frozen=True)
class TestImage:
    """An image written as an OCI layout; digests are what a registry must report."""

    __test__ = False  # not a pytest test class despite the name

    layout: Path
    tag: str
    platforms: tuple[PlatformImage, ...]
    index: Blob | None = None  # set for multi-arch images
    extra_blobs: tuple[Blob, ...] = field(default=())

    @property
    def is_multi_arch(self) -> bool:
        return self.index is not None

    @property
    def top(self) -> Blob:
        """The blob the tag points at: the index for multi-arch, else the manifest."""
        return self.index if self.index is not None else self.platforms[0].manifest

    @property
    def digest(self) -> str:
        """Digest of what the tag points at (index or manifest)."""
        return self.top.digest

    @property
    def media_type(self) -> str:
        return self.top.media_type

    @property
    def index_digest(self) -> str | None:
        return self.index.digest if self.index is not None else None

    @property
    def manifest_digest(self) -> str:
        """Manifest digest of the first (for single-arch: the only) platform."""
        return self.platforms[0].manifest_digest

    @property
    def config_digest(self) -> str:
        return self.platforms[0].config_digest

    @property
    def layer_digests(self) -> list[str]:
        return self.platforms[0].layer_digests

    @property
    def manifest_digests(self) -> dict[str, str]:
        """``{"linux/amd64": "sha256:..."}`` for every platform."""
        return {f"{p.os}/{p.architecture}": p.manifest_digest for p in self.platforms}

    def oci_ref(self) -> str:
        """The skopeo/containers-image reference of the layout: ``oci:DIR:TAG``."""
        return f"oci:{self.layout}:{self.tag}"

    def all_blobs(self) -> list[Blob]:
        out: dict[str, Blob] = {}
        for p in self.platforms:
            for b in (*p.blobs, p.manifest):
                out[b.digest] = b
        if self.index is not None:
            out[self.index.digest] = self.index
        return list(out.values())


# --------------------------------------------------------------------------- layers


def _tar_add(
    tar: tarfile.TarFile,
    name: str,
    *,
    data: bytes | None = None,
    mode: int = 0o644,
    kind: bytes = tarfile.REGTYPE,
    linkname: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.linkname = linkname
    info.size = len(data) if data is not None else 0
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def build_layer_tar(
    seed: int,
    *,
    platform: str = "linux/amd64",
    busybox: bool = False,
    payload_size: int = 4096,
    extra_files: dict[str, bytes] | None = None,
) -> bytes:
    """An uncompressed, reproducible tar with a few files whose content depends on ``seed``."""
    rng = random.Random(f"cargohold-{seed}-{platform}")
    files: dict[str, bytes] = {
        "etc/cargohold-seed": f"{seed}\n".encode(),
        "etc/cargohold-platform": f"{platform}\n".encode(),
        "data/random.bin": rng.randbytes(payload_size),
        "data/hello.txt": f"hello from test image seed={seed}\n".encode(),
    }
    files.update(extra_files or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(name).parent) for name in files} | ({"bin"} if busybox else set()))
        for d in dirs:
            _tar_add(tar, d + "/", kind=tarfile.DIRTYPE, mode=0o755)
        if busybox:
            _tar_add(tar, "bin/busybox", data=BUSYBOX_PATH.read_bytes(), mode=0o755)
            for applet in BUSYBOX_APPLETS:
                _tar_add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, linkname="busybox", mode=0o777)
        for name in sorted(files):
            _tar_add(tar, name, data=files[name])
    return buf.getvalue()


def gzip_deterministic(data: bytes) -> bytes:
    """gzip with mtime 0 and no file name in the header, so equal input → equal output."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


# --------------------------------------------------------------------------- images


def build_platform_image(
    seed: int,
    os_name: str = "linux",
    architecture: str = "amd64",
    *,
    busybox: bool = False,
    layer_count: int = 1,
    payload_size: int = 4096,
) -> PlatformImage:
    """Layers + config + OCI manifest for one platform (nothing written to disk)."""
    platform = f"{os_name}/{architecture}"
    if busybox and architecture != "amd64":
        busybox = False  # the Debian busybox-static binary is amd64 only
    layers: list[Blob] = []
    diff_ids: list[str] = []
    for i in range(layer_count):
        tar = build_layer_tar(
            seed * 1000 + i,
            platform=platform,
            busybox=busybox and i == 0,
            payload_size=payload_size,
        )
        diff_ids.append(sha256_digest(tar))
        layers.append(Blob(OCI_LAYER_GZIP, gzip_deterministic(tar)))
    config_obj: dict[str, Any] = {
        "architecture": architecture,
        "os": os_name,
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh"] if busybox else ["/bin/true"],
            "Labels": {"org.cargohold.test.seed": str(seed)},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2023-11-14T22:13:20Z", "created_by": f"cargohold test seed {seed}"}
        ]
        * layer_count,
    }
    config = Blob(OCI_CONFIG, canonical_json(config_obj))
    manifest_obj = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    manifest = Blob(OCI_MANIFEST, canonical_json(manifest_obj))
    return PlatformImage(
        os=os_name,
        architecture=architecture,
        manifest=manifest,
        config=config,
        layers=tuple(layers),
        diff_ids=tuple(diff_ids),
    )


def build_index(platform_images: list[PlatformImage]) -> Blob:
    """An OCI image index naming each platform manifest."""
    index_obj = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            p.manifest.descriptor(platform={"architecture": p.architecture, "os": p.os})
            for p in platform_images
        ],
    }
    return Blob(OCI_INDEX, canonical_json(index_obj))


def write_layout(layout: Path, tag: str, blobs: list[Blob], top: Blob) -> None:
    """Write an OCI image layout at ``layout`` whose ``index.json`` tags ``top`` as ``tag``."""
    blob_dir = layout / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for blob in blobs:
        path = blob_dir / blob.digest.removeprefix("sha256:")
        if not path.exists():
            path.write_bytes(blob.data)
    index_json = {
        "schemaVersion": 2,
        "manifests": [top.descriptor(annotations={REF_NAME_ANNOTATION: tag})],
    }
    (layout / "index.json").write_bytes(canonical_json(index_json))


def build_image(
    layout: Path,
    *,
    tag: str = "latest",
    seed: int = 0,
    multi_arch: bool = False,
    platforms: tuple[tuple[str, str], ...] | None = None,
    busybox: bool = False,
    layer_count: int = 1,
    payload_size: int = 4096,
) -> TestImage:
    """Build a deterministic image and write it as an OCI layout at ``layout``.

    ``multi_arch=True`` (or several ``platforms``) makes an image index of one
    manifest per platform (default linux/amd64 + linux/arm64). ``busybox=True``
    puts ``/bin/busybox`` and a few applet symlinks into the amd64 layer so the
    image can actually run (``docker run IMAGE echo hi``). Each layer carries
    ``payload_size`` random bytes (``/data/random.bin``): raise it for big blobs.
    """
    if platforms is None:
        platforms = MULTI_ARCH_PLATFORMS if multi_arch else DEFAULT_PLATFORMS
    if len(platforms) > 1:
        multi_arch = True
    images = [
        build_platform_image(
            seed,
            os_name,
            arch,
            busybox=busybox,
            layer_count=layer_count,
            payload_size=payload_size,
        )
        for os_name, arch in platforms
    ]
    index = build_index(images) if multi_arch else None
    image = TestImage(layout=layout, tag=tag, platforms=tuple(images), index=index)
    write_layout(layout, tag, image.all_blobs(), image.top)
    return image


class ImageCache:
    """Builds each distinct test image once under ``base`` (treat layouts as read-only)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._cache: dict[tuple[int, bool, bool, str, int, int], TestImage] = {}

    def get(
        self,
        seed: int = 0,
        *,
        multi_arch: bool = False,
        busybox: bool = False,
        tag: str = "latest",
        layer_count: int = 1,
        payload_size: int = 4096,
    ) -> TestImage:
        key = (seed, multi_arch, busybox, tag, layer_count, payload_size)
        if key not in self._cache:
            name = f"s{seed}-{'multi' if multi_arch else 'single'}"
            name += f"{'-busybox' if busybox else ''}-{tag}-l{layer_count}-p{payload_size}"
            self._cache[key] = build_image(
                self.base / name,
                tag=tag,
                seed=seed,
                multi_arch=multi_arch,
                busybox=busybox,
                layer_count=layer_count,
                payload_size=payload_size,
            )
        return self._cache[key]


# --------------------------------------------------------------------------- HTTP helpers


def _check(resp: requests.Response, expected: tuple[int, ...], what: str) -> requests.Response:
    if resp.status_code not in expected:
        raise AssertionError(
            f"{what}: {resp.request.method} {resp.url} -> {resp.status_code} "
            f"(expected {expected})\nheaders: {dict(resp.headers)}\nbody: {resp.text[:2000]}"
        )
    return resp


def _absolute(base_url: str, location: str) -> str:
    return location if location.startswith(("http://", "https://")) else base_url + location


def push_blob(
    base_url: str,
    repo: str,
    data: bytes,
    *,
    session: requests.Session | None = None,
    timeout: float = 60,
) -> str:
    """Monolithic upload: ``POST /blobs/uploads/`` then ``PUT <location>?digest=`` with the body."""
    http = session or requests.Session()
    digest = sha256_digest(data)
    resp = _check(
        http.post(f"{base_url}/v2/{repo}/blobs/uploads/", timeout=timeout), (202,), "start upload"
    )
    location = _absolute(base_url, resp.headers["Location"])
    sep = "&" if "?" in location else "?"
    resp = http.put(
        f"{location}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=timeout,
    )
    _check(resp, (201,), "complete upload")
    return digest


def push_manifest(
    base_url: str,
    repo: str,
    reference: str,
    data: bytes,
    media_type: str = OCI_MANIFEST,
    *,
    session: requests.Session | None = None,
    timeout: float = 60,
) -> requests.Response:
    """``PUT /v2/<repo>/manifests/<reference>``; returns the (201) response."""
    http = session or requests.Session()
    resp = http.put(
        f"{base_url}/v2/{repo}/manifests/{reference}",
        data=data,
        headers={"Content-Type": media_type},
        timeout=timeout,
    )
    return _check(resp, (201,), "put manifest")


def push_image(
    base_url: str,
    repo: str,
    image: TestImage,
    tag: str | None = None,
    *,
    session: requests.Session | None = None,
) -> str:
    """Push every blob and manifest of ``image`` over plain HTTP; returns the tagged digest."""
    http = session or requests.Session()
    for p in image.platforms:
        for blob in p.blobs:
            push_blob(base_url, repo, blob.data, session=http)
        ref = p.manifest.digest if image.is_multi_arch else (tag or image.tag)
        push_manifest(base_url, repo, ref, p.manifest.data, p.manifest.media_type, session=http)
    if image.index is not None:
        push_manifest(
            base_url, repo, tag or image.tag, image.index.data, image.index.media_type, session=http
        )
    return image.digest


def get_manifest(
    base_url: str,
    repo: str,
    reference: str,
    *,
    accept: str = MANIFEST_ACCEPT,
    method: str = "GET",
    timeout: float = 30,
) -> requests.Response:
    """Fetch (or HEAD) a manifest with every manifest type accepted; status is not checked."""
    return requests.request(
        method,
        f"{base_url}/v2/{repo}/manifests/{reference}",
        headers={"Accept": accept},
        timeout=timeout,
    )


def layout_descriptor(layout: Path, tag: str) -> dict[str, Any]:
    """The ``index.json`` descriptor tagged ``tag`` in an OCI layout (e.g. one skopeo wrote)."""
    index = json.loads((layout / "index.json").read_text())
    for desc in index.get("manifests", []):
        if desc.get("annotations", {}).get(REF_NAME_ANNOTATION) == tag:
            result: dict[str, Any] = desc
            return result
    raise AssertionError(f"tag {tag!r} not in {layout}/index.json: {index}")


def layout_blob(layout: Path, digest: str) -> bytes:
    """Read ``blobs/<alg>/<hex>`` from an OCI layout."""
    alg, _, hexdigest = digest.partition(":")
    return (layout / "blobs" / alg / hexdigest).read_bytes()
