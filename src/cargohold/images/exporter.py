"""``cargohold export``: registry → ``docker load`` archive or OCI layout.

Every byte written is checked on the way: each blob against its digest, and for the docker
format each layer's uncompressed tar against the ``diff_id`` in its config (that is what
``docker load`` checks, and a mismatch would otherwise surface only there).

OCI output is the registry's content verbatim (manifests, index, configs, compressed layers), so
the digests survive a round trip. The docker format cannot hold a registry manifest at all: it
keeps the config (the image ID is unchanged) and uncompressed layers, and whoever pushes the
loaded image again produces a new manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from cargohold import mediatypes as mt
from cargohold.images.archive import GunzipHasher, ManifestDoc
from cargohold.images.files import GZIP_MAGIC, ZSTD_MAGIC, ArchiveError
from cargohold.images.names import DEFAULT_PLATFORM, Platform, UsageError
from cargohold.images.progress import Progress, Task, human_size, short_digest
from cargohold.images.target import ExportSource, TargetError
from cargohold.images.writers import DockerArchiveWriter, OciLayoutWriter


@dataclass
class ExportItem:
    repo: str
    reference: str  # tag or digest
    name: str | None = None  # RepoTag / image name written into the archive


@dataclass
class ExportResult:
    name: str
    digest: str
    media_type: str
    size: int
    layers: int
    platform: str | None = None
    notes: list[str] = field(default_factory=list)


def _parse(doc: ManifestDoc, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(doc.data)
    except ValueError:
        raise TargetError(f"{what} is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise TargetError(f"{what} is not a manifest")
    return parsed


def _media_type(doc: ManifestDoc, parsed: dict[str, Any]) -> str:
    declared = parsed.get("mediaType")
    if isinstance(declared, str) and declared in mt.SUPPORTED:
        return declared
    if doc.media_type in mt.SUPPORTED:
        return doc.media_type
    return mt.OCI_INDEX if "manifests" in parsed else mt.OCI_MANIFEST


def pick_platform(
    parsed: dict[str, Any], wanted: Platform | None
) -> tuple[dict[str, Any], Platform | None] | None:
    """The index entry to export alone: the platform asked for, else linux/amd64 or the only."""
    entries: list[tuple[dict[str, Any], Platform | None]] = []
    for child in parsed.get("manifests") or []:
        if not isinstance(child, dict):
            continue
        plat = Platform.of(child.get("platform"))
        if plat is not None and plat.os == "unknown":
            continue  # attestation manifests
        entries.append((child, plat))
    for want in [wanted] if wanted else [DEFAULT_PLATFORM]:
        for child, plat in entries:
            if plat is not None and want.matches(plat):
                return child, plat
    if wanted is None and len(entries) == 1:
        return entries[0]
    return None


def platforms_text(parsed: dict[str, Any]) -> str:
    out = []
    for child in parsed.get("manifests") or []:
        plat = Platform.of(child.get("platform")) if isinstance(child, dict) else None
        out.append(str(plat) if plat else "?")
    return ", ".join(out) or "none"


class Exporter:
    def __init__(
        self, source: ExportSource, progress: Progress, tmpdir: str, platform: Platform | None
    ) -> None:
        self.source = source
        self.progress = progress
        self.tmpdir = tmpdir
        self.platform = platform

    async def _select(
        self, item: ExportItem, top: ManifestDoc, *, whole_index: bool
    ) -> tuple[ManifestDoc, dict[str, Any], Platform | None]:
        parsed = _parse(top, f"{item.repo}:{item.reference}")
        media_type = _media_type(top, parsed)
        top = ManifestDoc(media_type, top.data, top.digest)
        if media_type not in mt.INDEXES or (whole_index and self.platform is None):
            return top, parsed, None
        picked = pick_platform(parsed, self.platform)
        if picked is None:
            want = str(self.platform) if self.platform else "linux/amd64 (the default)"
            raise UsageError(
                f"{item.repo}:{item.reference} is a multi-platform image without {want}; "
                f"choose one of {platforms_text(parsed)} with --platform"
            )
        child_desc, plat = picked
        child = await self.source.get_manifest(item.repo, str(child_desc.get("digest")))
        if child.digest != child_desc.get("digest"):
            raise TargetError(f"manifest {child_desc.get('digest')} does not match its digest")
        child_parsed = _parse(child, f"{item.repo}@{child.digest}")
        child = ManifestDoc(_media_type(child, child_parsed), child.data, child.digest, plat)
        return child, child_parsed, plat

    async def _stream_blob(self, repo: str, digest: str, size: int, sink: Any, task: Task) -> None:
        """Copy one blob into ``sink`` (begin/write/end), verifying size and digest."""
        hasher = hashlib.sha256()
        sink.begin(digest, size)
        got = 0
        async with contextlib.aclosing(self.source.blob_chunks(repo, digest)) as chunks:
            async for chunk in chunks:
                hasher.update(chunk)
                got += len(chunk)
                if got > size:
                    break
                sink.write(chunk)
                task.advance(len(chunk))
        actual = "sha256:" + hasher.hexdigest()
        if got != size or actual != digest:
            raise TargetError(
                f"blob {digest} of {repo} is corrupt in {self.source.description}: "
                f"{got} bytes hashing to {actual}"
            )
        sink.end(digest)

    async def _read_blob(self, repo: str, digest: str, limit: int = 16 << 20) -> bytes:
        parts: list[bytes] = []
        total = 0
        async for chunk in self.source.blob_chunks(repo, digest):
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise TargetError(f"blob {digest} is too large for a config")
        data = b"".join(parts)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise TargetError(f"blob {digest} of {repo} is corrupt in {self.source.description}")
        return data

    # -- OCI ---------------------------------------------------------------------------------

    async def export_oci(self, items: list[ExportItem], output: str) -> list[ExportResult]:
        writer = OciLayoutWriter(output)
        results: list[ExportResult] = []
        try:
            for item in items:
                top = await self.source.get_manifest(item.repo, item.reference)
                top, parsed, plat = await self._select(item, top, whole_index=True)
                size, layers = await self._oci_tree(item.repo, top, parsed, writer)
                annotations: dict[str, str] = {}
                tag = None if item.reference.startswith("sha256:") else item.reference
                name = item.name or (f"{item.repo}:{tag}" if tag else f"{item.repo}@{top.digest}")
                annotations[mt.CONTAINERD_NAME] = name
                ref_tag = name.rsplit(":", 1)[-1] if "@" not in name and ":" in name else tag
                if ref_tag:
                    annotations[mt.REF_NAME] = ref_tag
                descriptor: dict[str, Any] = {
                    "mediaType": top.media_type,
                    "digest": top.digest,
                    "size": len(top.data),
                }
                if plat is not None:
                    descriptor["platform"] = _platform_dict(plat)
                descriptor["annotations"] = annotations
                writer.add_ref(descriptor)
                results.append(
                    ExportResult(name, top.digest, top.media_type, size, layers, _s(plat))
                )
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return results

    async def _oci_tree(
        self, repo: str, doc: ManifestDoc, parsed: dict[str, Any], writer: OciLayoutWriter
    ) -> tuple[int, int]:
        """Write a manifest and everything below it; returns (bytes, layers)."""
        size, layers = len(doc.data), 0
        if doc.media_type in mt.INDEXES:
            for child_desc in parsed.get("manifests") or []:
                digest = str(child_desc.get("digest"))
                child = await self.source.get_manifest(repo, digest)
                if child.digest != digest:
                    raise TargetError(f"manifest {digest} of {repo} does not match its digest")
                child_parsed = _parse(child, f"{repo}@{digest}")
                child = ManifestDoc(_media_type(child, child_parsed), child.data, digest)
                s, n = await self._oci_tree(repo, child, child_parsed, writer)
                size += s
                layers += n
        else:
            descriptors = [parsed.get("config"), *(parsed.get("layers") or [])]
            for i, desc in enumerate(descriptors):
                if not isinstance(desc, dict):
                    continue
                digest, blob_size = str(desc.get("digest")), int(desc.get("size") or 0)
                if desc.get("urls"):
                    continue  # non-distributable: the layout may leave it out
                size += blob_size
                layers += 1 if i else 0
                if writer.has(digest):
                    continue
                task = self.progress.task(f"{short_digest(digest)}", blob_size)
                try:
                    await self._stream_blob(repo, digest, blob_size, writer, task)
                except BaseException:
                    writer.drop_partial()
                    raise
                task.finish("written")
        writer.add_bytes(doc.digest, doc.data)
        return size, layers

    # -- docker ------------------------------------------------------------------------------

    async def export_docker(self, items: list[ExportItem], output: str) -> list[ExportResult]:
        writer = DockerArchiveWriter(output)
        results: list[ExportResult] = []
        try:
            for item in items:
                top = await self.source.get_manifest(item.repo, item.reference)
                doc, parsed, plat = await self._select(item, top, whole_index=False)
                if doc.media_type not in mt.IMAGE_MANIFESTS:
                    raise UsageError(f"{item.repo}:{item.reference} is not an image")
                results.append(await self._docker_image(item, doc, parsed, plat, writer))
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return results

    async def _docker_image(
        self,
        item: ExportItem,
        doc: ManifestDoc,
        parsed: dict[str, Any],
        plat: Platform | None,
        writer: DockerArchiveWriter,
    ) -> ExportResult:
        repo = item.repo
        config_desc = parsed.get("config") or {}
        config_digest = str(config_desc.get("digest"))
        config_data = await self._read_blob(repo, config_digest)
        try:
            config = json.loads(config_data)
            diff_ids = list(config["rootfs"]["diff_ids"])
        except (ValueError, KeyError, TypeError):
            raise TargetError(
                f"{repo}: the config {config_digest} is not an image config; only container "
                "images can be exported in docker format (try --format oci)"
            ) from None
        layers = [d for d in parsed.get("layers") or [] if isinstance(d, dict)]
        if len(diff_ids) != len(layers):
            raise TargetError(
                f"{repo}: the manifest has {len(layers)} layers, its config {len(diff_ids)}"
            )
        names: list[str] = []
        size = len(config_data)
        for desc, diff_id in zip(layers, diff_ids, strict=True):
            name = f"{str(diff_id).partition(':')[2]}.tar"
            names.append(name)
            size += int(desc.get("size") or 0)
            if writer.has(name):
                continue
            await self._docker_layer(repo, desc, str(diff_id), name, writer)
        config_name = f"{config_digest.partition(':')[2]}.json"
        writer.add_bytes(config_name, config_data)
        tag = None if item.reference.startswith("sha256:") else item.reference
        name = item.name or (f"{repo}:{tag}" if tag else "")
        writer.add_image(config_name, [name] if name else [], names)
        return ExportResult(
            name or f"{repo}@{doc.digest}", doc.digest, doc.media_type, size, len(layers), _s(plat)
        )

    async def _docker_layer(
        self, repo: str, desc: dict[str, Any], diff_id: str, name: str, writer: DockerArchiveWriter
    ) -> None:
        """A layer as ``docker load`` wants it: uncompressed, checked against its diff_id."""
        digest, size = str(desc.get("digest")), int(desc.get("size") or 0)
        media_type = str(desc.get("mediaType") or "")
        if desc.get("urls"):
            raise TargetError(f"layer {digest} is non-distributable (foreign): not in the registry")
        if mt.is_zstd_layer(media_type):
            raise TargetError(
                f"layer {digest} is zstd-compressed, which the docker format cannot hold: "
                "use --format oci"
            )
        task = self.progress.task(f"{short_digest(digest)}", size)
        compressed = mt.is_gzip_layer(media_type)
        fd, spool = tempfile.mkstemp(prefix="layer-", suffix=".tar", dir=self.tmpdir)
        try:
            with os.fdopen(fd, "wb") as out:
                raw_hash = hashlib.sha256()
                tar_hash = hashlib.sha256()
                gunzip: GunzipHasher | None = None
                got = 0
                first = True
                async for chunk in self.source.blob_chunks(repo, digest):
                    if first:
                        first = False
                        if chunk.startswith(ZSTD_MAGIC):
                            raise TargetError(f"layer {digest} is zstd data: use --format oci")
                        compressed = chunk.startswith(GZIP_MAGIC)
                        if compressed:
                            gunzip = GunzipHasher(f"layer {digest}", out.write)
                    raw_hash.update(chunk)
                    got += len(chunk)
                    task.advance(len(chunk))
                    if gunzip is not None:
                        gunzip.update(chunk)
                    else:
                        tar_hash.update(chunk)
                        out.write(chunk)
                actual = "sha256:" + raw_hash.hexdigest()
                if actual != digest or got != size:
                    raise TargetError(f"blob {digest} of {repo} is corrupt: hashes to {actual}")
                unpacked = (
                    gunzip.finish() if gunzip is not None else "sha256:" + tar_hash.hexdigest()
                )
            if unpacked != diff_id:
                raise TargetError(
                    f"layer {digest} of {repo} does not match the config's diff_id {diff_id}"
                )
            tar_size = os.path.getsize(spool)
            writer.begin(name, tar_size)
            with open(spool, "rb") as f:
                while chunk := f.read(1 << 20):
                    writer.write(chunk)
            writer.end(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spool)
        task.finish("unpacked" if compressed else "written")


def _platform_dict(plat: Platform) -> dict[str, str]:
    out = {"architecture": plat.architecture, "os": plat.os}
    if plat.variant:
        out["variant"] = plat.variant
    return out


def _s(plat: Platform | None) -> str | None:
    return str(plat) if plat else None


def summary_lines(results: list[ExportResult], output: str, fmt: str) -> list[str]:
    lines = []
    for r in results:
        plat = f" [{r.platform}]" if r.platform else ""
        lines.append(
            f"exported {r.name}{plat} to {output} ({fmt}): digest {r.digest}, "
            f"{human_size(r.size)}, {r.layers} layers"
        )
    return lines


async def run_export(
    exporter: Exporter, items: list[ExportItem], output: str, fmt: str
) -> list[ExportResult]:
    if fmt == "oci":
        return await exporter.export_oci(items, output)
    return await exporter.export_docker(items, output)


__all__ = [
    "ArchiveError",
    "ExportItem",
    "ExportResult",
    "Exporter",
    "pick_platform",
    "run_export",
    "summary_lines",
]
