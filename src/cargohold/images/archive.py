"""Reading ``docker save`` archives and OCI image layouts into images ready to publish.

Reading happens in two steps so that a broken archive is refused before anything is written:

1. :func:`read_archive` parses the metadata (``manifest.json`` / ``index.json``, manifests,
   configs), checks every manifest and config against its digest and every referenced file for
   presence and size. It is cheap and produces :class:`ArchiveImage` objects whose blobs are
   :class:`BlobPlan` entries not yet hashed.
2. :func:`verify_blob` reads each blob once, checks it against its digest (and a docker layer
   against the ``diff_id`` its config records), and for docker layers that are to be compressed
   writes the gzip'd layer to a temporary file. Only then does the importer publish anything.

An OCI layout (including the one inside a Docker 25+ ``docker save``) is imported verbatim, so
every digest is preserved. A classic docker-save archive has no registry manifest at all: one is
built here as a Docker v2 schema 2 manifest whose config is the archive's config byte for byte
(so the image ID does not change) and whose layers are either the saved tars gzip-compressed
deterministically (the default, as ``docker push`` does) or the saved tars as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cargohold import mediatypes as mt
from cargohold.images.files import (
    CHUNK,
    GZIP_MAGIC,
    ZSTD_MAGIC,
    ArchiveError,
    Files,
    Gunzip,
    gunzip_chunks,
    read_small,
)
from cargohold.images.names import DEFAULT_PLATFORM, Platform, Ref, parse_archive_name

GZIP_LEVEL = 6  # gzip's and Go's default: what `docker push` produces
HEX_RE = re.compile(r"(?:^|/)([0-9a-f]{64})(?:\.json|\.tar)?$")


@dataclass(frozen=True, slots=True)
class ManifestDoc:
    """A manifest (or index) exactly as it will be stored: its bytes decide its digest."""

    media_type: str
    data: bytes
    digest: str
    platform: Platform | None = None

    @classmethod
    def build(cls, media_type: str, doc: dict[str, Any]) -> ManifestDoc:
        data = json.dumps(doc, indent=3).encode()  # Docker's own formatting of schema 2
        return cls(media_type, data, sha256_of(data))


@dataclass(eq=False)
class BlobPlan:
    """One blob to publish: where it is in the archive, and how to check (and transform) it.

    ``digest``/``size`` are what the registry will store: known up front for OCI blobs, known
    after :func:`verify_blob` for layers that are compressed on the way.
    """

    path: str
    media_type: str
    what: str
    digest: str | None = None
    size: int | None = None
    diff_id: str | None = None  # docker layers: sha256 of the uncompressed tar
    compress: bool = False  # gzip a plain tar into ``spool`` during verification
    stored_gzip: bool = False  # the archive holds it gzip'd: check diff_id after gunzip
    source_size: int = 0  # bytes read from the archive (for progress)
    spool: str | None = None  # temporary file holding the bytes to upload, if not the archive's
    verified: bool = False

    @property
    def final_digest(self) -> str:
        assert self.digest is not None, "blob not verified yet"
        return self.digest

    @property
    def final_size(self) -> int:
        assert self.size is not None, "blob not verified yet"
        return self.size


@dataclass(eq=False)
class ArchiveImage:
    """One image (or index) of the archive, with every name the archive gives it."""

    refs: list[Ref]
    label: str
    blobs: list[BlobPlan]
    manifests: list[ManifestDoc] = field(default_factory=list)  # children first, top last
    builder: Callable[[], ManifestDoc] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def top(self) -> ManifestDoc:
        return self.manifests[-1]

    def finish(self) -> None:
        """Build the registry manifest of a docker-save image once its layers are verified."""
        if self.builder is not None:
            self.manifests = [self.builder()]
            self.builder = None

    @property
    def layer_count(self) -> int:
        return sum(1 for b in self.blobs if b.media_type not in (mt.DOCKER_CONFIG, mt.OCI_CONFIG))


@dataclass
class Archive:
    format: str
    images: list[ArchiveImage]


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArchiveError(f"{what} is not valid JSON ({e}): the archive is corrupt") from None


def _sniff(files: Files, path: str) -> bytes:
    with files.open(path) as f:
        return f.read(4)


def read_archive(
    files: Files, *, platform: Platform | None = None, compress: bool = True
) -> Archive:
    """Parse and check the metadata of a docker-save archive or an OCI layout."""
    if files.exists("index.json"):
        fmt = "docker-save (OCI layout)" if files.exists("manifest.json") else "OCI layout"
        return Archive(fmt, _read_oci(files, platform))
    if files.exists("manifest.json"):
        return Archive("docker-save", _read_docker(files, compress))
    if files.exists("repositories"):
        raise ArchiveError(
            f"{files.description} is a docker-save archive of the pre-1.10 format (no "
            "manifest.json), which is not supported: save it again with a current docker"
        )
    raise ArchiveError(
        f"{files.description} is neither a docker-save archive (no manifest.json) nor an OCI "
        "image layout (no index.json)"
    )


# --------------------------------------------------------------------------- docker save


def _read_docker(files: Files, compress: bool) -> list[ArchiveImage]:
    entries = _json(read_small(files, "manifest.json"), "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ArchiveError("manifest.json lists no images")
    plans: dict[tuple[str, bool], BlobPlan] = {}
    images: list[ArchiveImage] = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ArchiveError(f"manifest.json entry {n} has no Config")
        tags = entry.get("RepoTags") or []
        layers = entry.get("Layers") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ArchiveError(f"manifest.json entry {n}: RepoTags must be a list of strings")
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ArchiveError(f"manifest.json entry {n}: Layers must be a list of strings")
        if entry.get("LayerSources"):
            raise ArchiveError(
                "the archive has foreign (non-distributable) layers, which cannot be imported"
            )
        refs = [parse_archive_name(t) for t in tags]
        label = ", ".join(tags) or f"image {n + 1}"
        config_path = entry["Config"]
        config_data = read_small(files, config_path)
        config_digest = sha256_of(config_data)
        named = HEX_RE.search(config_path)
        if named and f"sha256:{named.group(1)}" != config_digest:
            raise ArchiveError(
                f"the config of {label} ({config_path}) is corrupt: its content hashes to "
                f"{config_digest}"
            )
        config = _json(config_data, f"the config of {label}")
        diff_ids = (
            (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else None
        )
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            raise ArchiveError(
                f"{label}: the config lists {len(diff_ids or [])} layers but manifest.json "
                f"{len(layers)}"
            )
        config_plan = BlobPlan(
            config_path,
            mt.DOCKER_CONFIG,
            f"config of {label}",
            digest=config_digest,
            size=len(config_data),
            source_size=len(config_data),
        )
        blob_list = [config_plan]
        for i, (path, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
            if not isinstance(diff_id, str) or not diff_id.startswith("sha256:"):
                raise ArchiveError(f"{label}: invalid diff_id {diff_id!r} in the config")
            size = files.size(path)
            magic = _sniff(files, path)
            key = (path, compress)
            plan = plans.get(key)
            if plan is None:
                what = f"layer {i + 1} of {label} ({path})"
                if magic.startswith(ZSTD_MAGIC):
                    raise ArchiveError(f"{what} is zstd-compressed, which docker-save cannot hold")
                if magic.startswith(GZIP_MAGIC):
                    named = HEX_RE.search(path)
                    plan = BlobPlan(
                        path,
                        mt.DOCKER_LAYER_GZIP,
                        what,
                        digest=f"sha256:{named.group(1)}" if named else None,
                        diff_id=diff_id,
                        stored_gzip=True,
                        source_size=size,
                    )
                elif compress:
                    plan = BlobPlan(
                        path, mt.DOCKER_LAYER_GZIP, what, diff_id=diff_id, compress=True,
                        source_size=size,
                    )  # fmt: skip
                else:
                    plan = BlobPlan(
                        path, mt.DOCKER_LAYER, what, digest=diff_id, size=size, diff_id=diff_id,
                        source_size=size,
                    )  # fmt: skip
                plans[key] = plan
            elif plan.diff_id != diff_id:
                raise ArchiveError(
                    f"{path} is used as two different layers: the archive is corrupt"
                )
            blob_list.append(plan)
        image = ArchiveImage(refs, label, blob_list)
        image.builder = _docker_manifest_builder(config_plan, blob_list[1:])
        images.append(image)
    return images


def _docker_manifest_builder(config: BlobPlan, layers: list[BlobPlan]) -> Callable[[], ManifestDoc]:
    def build() -> ManifestDoc:
        doc = {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST_V2,
            "config": _descriptor(config),
            "layers": [_descriptor(layer) for layer in layers],
        }
        return ManifestDoc.build(mt.DOCKER_MANIFEST_V2, doc)

    return build


def _descriptor(plan: BlobPlan) -> dict[str, Any]:
    return {"mediaType": plan.media_type, "size": plan.final_size, "digest": plan.final_digest}


# --------------------------------------------------------------------------- OCI layout


def blob_path(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    return f"blobs/{alg}/{hexpart}"


class _OciReader:
    def __init__(self, files: Files, platform: Platform | None) -> None:
        self.files = files
        self.platform = platform
        self.plans: dict[str, BlobPlan] = {}

    def descriptor(self, raw: Any, where: str) -> tuple[str, str, int, dict[str, Any]]:
        if not isinstance(raw, dict):
            raise ArchiveError(f"{where}: descriptor is not an object")
        digest, size, media_type = raw.get("digest"), raw.get("size"), raw.get("mediaType")
        if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            if isinstance(digest, str) and digest.startswith("sha512:"):
                raise ArchiveError(f"{where}: sha512 digests are not supported by this importer")
            raise ArchiveError(f"{where}: invalid digest {str(digest)[:80]!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArchiveError(f"{where}: invalid size")
        return digest, media_type if isinstance(media_type, str) else "", size, raw

    def manifest(
        self, digest: str, size: int, media_type: str, where: str
    ) -> tuple[ManifestDoc, Any]:
        path = blob_path(digest)
        if not self.files.exists(path):
            raise ArchiveError(f"{where} ({digest}) is missing from the archive")
        data = read_small(self.files, path, 4 << 20)
        if len(data) != size or sha256_of(data) != digest:
            raise ArchiveError(f"{where} ({path}) is corrupt: it does not match its digest")
        doc = _json(data, f"{where} ({path})")
        if not isinstance(doc, dict):
            raise ArchiveError(f"{where} ({path}) is not a manifest")
        media_type = doc.get("mediaType") or media_type
        if not media_type:
            media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
        if media_type not in mt.SUPPORTED:
            raise ArchiveError(f"{where} has the unsupported media type {media_type!r}")
        return ManifestDoc(media_type, data, digest), doc

    def blob(self, raw: Any, where: str) -> BlobPlan | None:
        digest, media_type, size, desc = self.descriptor(raw, where)
        path = blob_path(digest)
        plan = self.plans.get(digest)
        if plan is not None:
            return plan
        if not self.files.exists(path):
            if desc.get("urls"):
                return None  # a foreign layer: the registry points at its URL instead
            raise ArchiveError(f"{where} ({digest}) is missing from the archive")
        actual = self.files.size(path)
        if actual != size:
            raise ArchiveError(
                f"{where} ({path}) is {actual} bytes but its descriptor says {size}: the archive "
                "is corrupt"
            )
        plan = BlobPlan(path, media_type, where, digest=digest, size=size, source_size=size)
        self.plans[digest] = plan
        return plan

    def tree(
        self, digest: str, size: int, media_type: str, where: str, out: list[ManifestDoc],
        blobs: list[BlobPlan],
    ) -> ManifestDoc:  # fmt: skip
        """Collect a manifest and everything below it, children before parents."""
        doc, parsed = self.manifest(digest, size, media_type, where)
        if doc.media_type in mt.INDEXES:
            children = parsed.get("manifests")
            if not isinstance(children, list):
                raise ArchiveError(f"{where} has no manifests list")
            for i, child in enumerate(children):
                c_digest, c_type, c_size, _ = self.descriptor(child, f"{where}, manifest {i + 1}")
                self.tree(c_digest, c_size, c_type, f"manifest {i + 1} of {where}", out, blobs)
        else:
            config = parsed.get("config")
            layers = parsed.get("layers") or []
            if config is None or not isinstance(layers, list):
                raise ArchiveError(f"{where} is not a valid image manifest")
            for i, raw in enumerate([config, *layers]):
                what = f"config of {where}" if i == 0 else f"layer {i} of {where}"
                plan = self.blob(raw, what)
                if plan is not None and plan not in blobs:
                    blobs.append(plan)
            subject = parsed.get("subject")
            if subject is not None:
                self.descriptor(subject, f"subject of {where}")
        if doc.digest not in {d.digest for d in out}:
            out.append(doc)
        return doc

    def select_platform(
        self, parsed: Any, label: str, *, partial: bool
    ) -> tuple[str, str, int, Platform | None] | None:
        """The child of an index to import alone: asked for, the default, or the only one."""
        candidates: list[tuple[str, str, int, Platform | None]] = []
        for i, child in enumerate(parsed.get("manifests") or []):
            c_digest, c_type, c_size, raw = self.descriptor(child, f"{label}, manifest {i + 1}")
            if partial and not self.files.exists(blob_path(c_digest)):
                continue
            plat = Platform.of(raw.get("platform"))
            if plat is not None and plat.os == "unknown":
                continue  # buildx attestations, not runnable images
            candidates.append((c_digest, c_type, c_size, plat))
        if self.platform is not None:
            for c in candidates:
                if c[3] is not None and self.platform.matches(c[3]):
                    return c
            return None
        for c in candidates:
            if c[3] is not None and DEFAULT_PLATFORM.matches(c[3]):
                return c
        if len(candidates) == 1:
            return candidates[0]
        return None


def _platforms_of(parsed: Any) -> str:
    found = []
    for child in parsed.get("manifests") or []:
        plat = Platform.of(child.get("platform") if isinstance(child, dict) else None)
        found.append(str(plat) if plat else "?")
    return ", ".join(found) or "none"


def _read_oci(files: Files, platform: Platform | None) -> list[ArchiveImage]:
    index = _json(read_small(files, "index.json"), "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ArchiveError("index.json has no manifests list")
    docker_names = _docker_names(files)
    reader = _OciReader(files, platform)
    by_digest: dict[str, ArchiveImage] = {}
    images: list[ArchiveImage] = []
    for n, raw in enumerate(index["manifests"]):
        digest, media_type, size, desc = reader.descriptor(raw, f"index.json entry {n + 1}")
        annotations = desc.get("annotations") or {}
        refs: list[Ref] = []
        for key in (mt.CONTAINERD_NAME, mt.REF_NAME):
            value = annotations.get(key) if isinstance(annotations, dict) else None
            if isinstance(value, str) and value:
                ref = parse_archive_name(value)
                if ref.repo is not None or not refs:
                    refs.append(ref)
        if refs and refs[0].repo is not None:
            refs = [refs[0]]  # containerd's full name; the ref name is then just its tag
        if digest in by_digest:
            by_digest[digest].refs.extend(r for r in refs if r not in by_digest[digest].refs)
            continue
        label = str(refs[0]) if refs and refs[0].repo else f"index.json entry {n + 1}"
        if refs and refs[0].repo is None:
            label = f"{label} (tag {refs[0].tag})"
        image = _read_oci_image(reader, digest, media_type, size, label)
        if image is None:
            continue
        image.refs = refs
        if not any(r.repo for r in refs):
            config = next((b for b in image.blobs if b.media_type in _CONFIG_TYPES), None)
            for tag in docker_names.get((config.digest if config else None) or "", []):
                ref = parse_archive_name(tag)
                if ref not in image.refs:
                    image.refs.append(ref)
            image.refs = [r for r in image.refs if r.repo] or image.refs
        by_digest[digest] = image
        images.append(image)
    if not images:
        raise ArchiveError("index.json names no image")
    return images


_CONFIG_TYPES = frozenset({mt.DOCKER_CONFIG, mt.OCI_CONFIG})


def _read_oci_image(
    reader: _OciReader, digest: str, media_type: str, size: int, label: str
) -> ArchiveImage | None:
    files = reader.files
    if media_type and media_type not in mt.SUPPORTED:
        return None  # an artifact blob listed in index.json: nothing to tag
    notes: list[str] = []
    top, parsed = reader.manifest(digest, size, media_type, label)
    if top.media_type in mt.INDEXES:
        children = parsed.get("manifests") or []
        missing = [
            c
            for c in children
            if isinstance(c, dict) and not files.exists(blob_path(str(c.get("digest"))))
        ]
        if missing or reader.platform is not None:
            picked = reader.select_platform(parsed, label, partial=bool(missing))
            if picked is None:
                want = str(reader.platform or DEFAULT_PLATFORM)
                why = (
                    f"the archive holds only part of the multi-platform image {label}"
                    if missing
                    else f"{label} has no {want} image"
                )
                raise ArchiveError(
                    f"{why} (platforms: {_platforms_of(parsed)}); choose one of those present "
                    "with --platform os/arch"
                )
            c_digest, c_type, c_size, plat = picked
            if missing:
                notes.append(
                    f"{label}: the archive holds {len(children) - len(missing)} of the "
                    f"{len(children)} platform images of its index; importing {plat or 'one'} "
                    "alone (the tag will point at that manifest, not at the index)"
                )
            docs: list[ManifestDoc] = []
            blobs: list[BlobPlan] = []
            child = reader.tree(c_digest, c_size, c_type, f"{label} [{plat}]", docs, blobs)
            docs[-1] = ManifestDoc(child.media_type, child.data, child.digest, plat)
            return ArchiveImage([], label, blobs, docs, notes=notes)
    docs = []
    blobs = []
    reader.tree(digest, size, media_type, label, docs, blobs)
    return ArchiveImage([], label, blobs, docs, notes=notes)


def _docker_names(files: Files) -> dict[str, list[str]]:
    """Config digest → RepoTags from the manifest.json of a Docker 25+ save, if there is one."""
    if not files.exists("manifest.json"):
        return {}
    try:
        entries = json.loads(read_small(files, "manifest.json"))
    except (ValueError, UnicodeDecodeError):
        return {}
    names: dict[str, list[str]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            continue
        m = HEX_RE.search(entry["Config"])
        tags = entry.get("RepoTags") or []
        if m and isinstance(tags, list):
            names.setdefault(f"sha256:{m.group(1)}", []).extend(
                t for t in tags if isinstance(t, str)
            )
    return names


# --------------------------------------------------------------------------- verification


def _chunks(files: Files, path: str, on_bytes: Callable[[int], None]) -> Iterator[bytes]:
    with files.open(path) as f:
        while chunk := f.read(CHUNK):
            on_bytes(len(chunk))
            yield chunk


def verify_blob(files: Files, plan: BlobPlan, tmpdir: str, on_bytes: Callable[[int], None]) -> None:
    """Read one blob from the archive and prove it is what the metadata says (thread-safe).

    Raises :class:`ArchiveError` naming the blob and what it hashed to. A compressed docker
    layer is written to a temporary file in ``tmpdir`` as a side effect.
    """
    stored = hashlib.sha256()
    unpacked = GunzipHasher(plan.what) if plan.stored_gzip and plan.diff_id else None
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if plan.compress else None
    packed = hashlib.sha256()
    spool_f = None
    total = 0
    packed_size = 0
    try:
        if packer is not None:
            fd, spool = tempfile.mkstemp(prefix="layer-", suffix=".tar.gz", dir=tmpdir)
            spool_f = os.fdopen(fd, "wb")
            plan.spool = spool
        for chunk in _chunks(files, plan.path, on_bytes):
            stored.update(chunk)
            if unpacked is not None:
                unpacked.update(chunk)
            total += len(chunk)
            if packer is not None and spool_f is not None:
                out = packer.compress(chunk)
                if out:
                    packed.update(out)
                    spool_f.write(out)
                    packed_size += len(out)
        if packer is not None and spool_f is not None:
            out = packer.flush()
            packed.update(out)
            spool_f.write(out)
            packed_size += len(out)
    finally:
        if spool_f is not None:
            spool_f.close()
    stored_digest = "sha256:" + stored.hexdigest()
    if plan.stored_gzip:
        if plan.digest is not None and stored_digest != plan.digest:
            raise ArchiveError(f"{plan.what} is corrupt: its content hashes to {stored_digest}")
        if unpacked is not None and unpacked.finish() != plan.diff_id:
            raise ArchiveError(
                f"{plan.what} is corrupt: its uncompressed content does not match the "
                f"image config's {plan.diff_id}"
            )
        plan.digest, plan.size = stored_digest, total
    elif plan.diff_id is not None:
        if stored_digest != plan.diff_id:
            raise ArchiveError(
                f"{plan.what} is corrupt: its content hashes to {stored_digest}, the image "
                f"config says {plan.diff_id}"
            )
        if plan.compress:
            plan.digest, plan.size = "sha256:" + packed.hexdigest(), packed_size
    else:
        if stored_digest != plan.digest or total != plan.size:
            raise ArchiveError(
                f"{plan.what} is corrupt: its content hashes to {stored_digest}, "
                f"expected {plan.digest}"
            )
    plan.verified = True


class GunzipHasher:
    """Hash the decompressed form of a gzip stream fed chunk by chunk (see :class:`Gunzip`:
    multi-member aware, bounded output, truncation and corruption raise naming ``what``)."""

    def __init__(self, what: str, sink: Callable[[bytes], object] | None = None) -> None:
        self.what = what
        self.sink = sink
        self.hasher = hashlib.sha256()
        self._gunzip = Gunzip(what)

    def update(self, data: bytes) -> None:
        for out in self._gunzip.feed(data):
            self._emit(out)

    def _emit(self, out: bytes) -> None:
        if out:
            self.hasher.update(out)
            if self.sink is not None:
                self.sink(out)

    def finish(self) -> str:
        self._emit(self._gunzip.finish())
        return "sha256:" + self.hasher.hexdigest()


__all__ = [
    "Archive",
    "ArchiveError",
    "ArchiveImage",
    "BlobPlan",
    "GunzipHasher",
    "ManifestDoc",
    "gunzip_chunks",
    "read_archive",
    "verify_blob",
]
