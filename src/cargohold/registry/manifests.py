"""Manifests: parsing, validation, storage by digest, tags and the referrers index.

Manifests are stored as blobs and linked under ``_manifests/revisions`` as registry:2 does; the
media type is not stored but read back from the content, so a store stays readable by registry:2.
Content by digest never changes, which lets every process keep a bounded cache of parsed
manifests without any cross-process invalidation: only the *links* (revisions, tags) are re-read
on each request, and those are tiny files.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cargohold import mediatypes as mt
from cargohold import memory, metrics
from cargohold.coalesce import Coalescer
from cargohold.config import ValidationConfig
from cargohold.digest import TAG_RE, Digest, check_tag, is_digest_reference
from cargohold.errors import ErrorCode, RegistryError
from cargohold.faults import crash_point
from cargohold.registry.blobs import EMPTY_JSON_DIGEST, BlobStore
from cargohold.registry.governance import Governance, Rules
from cargohold.storage import paths
from cargohold.storage.driver import PathNotFoundError, StorageDriver

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
# The per-process cache of parsed manifests (the pull path's): an LRU of at most this many
# manifests and this many bytes of their raw JSON (a typical image manifest is ~1 KiB and costs
# ~3 KiB parsed, so ~12 MiB when full of those; a few large indexes cannot take more than the
# byte budget plus one manifest).
CACHE_ENTRIES = memory.scaled(4096)  # both scaled by CARGOHOLD_CACHE_SCALE (cargohold.memory)
CACHE_BYTES = round(16 * 1024 * 1024 * memory.scale())
_NO_RULES = Rules()


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    platform: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed, validated manifest and everything the registry needs to know about it."""

    data: bytes
    digest: Digest
    media_type: str
    blobs: tuple[Descriptor, ...] = ()  # config + layers of an image manifest
    children: tuple[Descriptor, ...] = ()  # manifests of an index
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


def _fail(
    message: str, code: ErrorCode = ErrorCode.MANIFEST_INVALID, **detail: Any
) -> RegistryError:
    return RegistryError(code, message, detail or None)


def _descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise _fail(f"{where}: descriptor must be an object")
    media_type = raw.get("mediaType")
    digest = raw.get("digest")
    size = raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise _fail(f"{where}: mediaType missing")
    if not isinstance(digest, str) or (parsed := Digest.try_parse(digest)) is None:
        raise _fail(f"{where}: invalid digest {str(digest)[:150]!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _fail(f"{where}: size must be a non-negative integer")
    urls = raw.get("urls") or ()
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise _fail(f"{where}: urls must be a list of strings")
    platform = raw.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise _fail(f"{where}: platform must be an object")
    return Descriptor(media_type, parsed, size, tuple(urls), platform)


def parse_manifest(
    data: bytes, content_type: str | None, digest: Digest | None = None, pushed: bool = False
) -> Manifest:
    """Parse and check a manifest's own structure (not yet whether what it references exists).

    A ``pushed`` manifest must name its type, in its Content-Type or its ``mediaType`` field
    (a stored one, read back without a Content-Type, is recognised by its fields)."""
    if len(data) > MAX_MANIFEST_SIZE:
        raise RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f"manifest is larger than {MAX_MANIFEST_SIZE} bytes",
            status=413,
        )
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise _fail(f"manifest is not valid JSON: {e}") from None
    except RecursionError:  # nested thousands of levels deep: no manifest is
        raise _fail("manifest is nested too deeply") from None
    if not isinstance(doc, dict):
        raise _fail("manifest must be a JSON object")
    content_type = (content_type or "").split(";", 1)[0].strip().lower()
    declared = doc.get("mediaType")
    if doc.get("schemaVersion") == 1 or content_type in mt.SCHEMA1 - {"application/json"}:
        raise _fail(
            "Docker schema 1 manifests are not supported; push with a current client",
            ErrorCode.MANIFEST_INVALID,
        )
    if doc.get("schemaVersion") != 2:
        raise _fail("schemaVersion must be 2")
    if declared is not None and not isinstance(declared, str):
        raise _fail("mediaType must be a string")
    if declared and content_type in mt.SUPPORTED and declared != content_type:
        raise _fail(f"mediaType {declared!r} does not match Content-Type {content_type!r}")
    media_type = declared or (content_type if content_type in mt.SUPPORTED else None)
    if media_type is None and pushed:
        raise _fail(
            f"Content-Type {content_type or '(none)'!r} names no manifest type and the manifest "
            "has no mediaType"
        )
    if media_type is None:
        media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if media_type not in mt.SUPPORTED:
        raise _fail(f"unsupported manifest media type {media_type!r}")
    if digest is None:
        digest = Digest.of(data)
    else:
        actual = Digest.of(data, digest.algorithm)
        if actual != digest:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID, detail={"expected": str(digest), "actual": str(actual)}
            )
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _fail("artifactType must be a string")
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise _fail("annotations must be an object")
    if media_type in mt.IMAGE_MANIFESTS:
        if "config" not in doc:
            raise _fail("image manifest has no config")
        config = _descriptor(doc["config"], "config")
        layers = doc.get("layers")
        if layers is None and media_type == mt.OCI_MANIFEST:
            layers = []
        if not isinstance(layers, list):
            raise _fail("layers must be a list")
        blobs = (config, *(_descriptor(x, f"layers[{i}]") for i, x in enumerate(layers)))
        return Manifest(
            data,
            digest,
            media_type,
            blobs=blobs,
            subject=subject,
            artifact_type=artifact_type,
            annotations=annotations,
        )
    children_raw = doc.get("manifests")
    if not isinstance(children_raw, list):
        raise _fail("index must have a manifests list")
    children = tuple(_descriptor(x, f"manifests[{i}]") for i, x in enumerate(children_raw))
    return Manifest(
        data,
        digest,
        media_type,
        children=children,
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )


@functools.lru_cache(maxsize=memory.scaled(4096))
def link_digest(raw: bytes) -> Digest | None:
    """The digest a link file holds (parsed once per distinct content: tags are read a lot).

    The last 4,096 distinct contents are remembered, ~450 bytes each (~1.8 MiB per process):
    parsing one again costs about a microsecond, so a bigger bound only held memory (65,536
    was ~29 MiB per worker once a store with churn had filled it with digests long deleted)."""
    return Digest.try_parse(raw.decode("ascii", "replace").strip())


memory.register_lru("link_digests", link_digest)


def referrer_artifact_type(m: Manifest) -> str | None:
    """The spec's rule: ``artifactType`` if set, else the config's media type for images."""
    if m.artifact_type:
        return m.artifact_type
    if m.blobs:
        return m.blobs[0].media_type
    return None


@dataclass(frozen=True, slots=True)
class Pushed:
    """A stored manifest and, when the push moved a tag, the digest the tag had before."""

    manifest: Manifest
    previous: Digest | None = None


class ManifestStore:
    def __init__(
        self,
        driver: StorageDriver,
        blobs: BlobStore,
        validation: ValidationConfig,
        governance: Governance | None = None,
    ) -> None:
        self.driver = driver
        self.blobs = blobs
        self.validation = validation
        self.governance = governance
        self._cache: OrderedDict[Digest, Manifest] = OrderedDict()  # LRU: see _remember
        self._cache_bytes = 0
        memory.register("manifests", self, lambda s: (len(s._cache), CACHE_ENTRIES))
        # Loads under way: concurrent misses of one manifest (a pull storm's clients all ask
        # at once, before the first answer is cached) share one read of the store. Manifests
        # are content-addressed, so a shared answer is right for every caller that gets one;
        # a caller whose shared read failed reads again itself.
        self._loading: Coalescer[Digest, Manifest] = Coalescer()
        # Writes and deletes of one repository's manifests take turns within a process, so a
        # delete can never interleave with a push of the same manifest and strand its tags.
        self._repo_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # Called with the repository's name after a push or delete through this process
        # (the web UI's summaries); cheap and synchronous, never raising.
        self.listeners: list[Callable[[str], None]] = []
        self._allow = [re.compile(p) for p in validation.urls_allow]
        self._deny = [re.compile(p) for p in validation.urls_deny]

    # -- reading -----------------------------------------------------------------------------

    async def resolve(self, name: str, reference: str) -> Digest:
        """Tag or digest → digest, MANIFEST_UNKNOWN when this repository does not have it."""
        if is_digest_reference(reference):
            digest = Digest.try_parse(reference)
            if digest is None:
                raise RegistryError(
                    ErrorCode.MANIFEST_UNKNOWN,
                    "invalid digest reference",
                    {"reference": reference[:200]},
                    status=404,
                )
            if not await self.exists(name, digest):
                raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"digest": reference})
            return digest
        if TAG_RE.match(reference) is None:
            # Neither a tag nor a digest names nothing here: 404, as registry:2 answers a GET
            # or HEAD (a PUT with it is still TAG_INVALID).
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                "neither a valid tag nor a digest",
                {"reference": reference[:200]},
                status=404,
            )
        try:
            raw = await self.driver.get_content(paths.tag_current_link(name, reference))
        except PathNotFoundError:
            await self._raise_unknown(name, reference)
        digest = link_digest(raw)
        if digest is None or not await self.exists(name, digest):
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"tag": reference})
        return digest

    async def _raise_unknown(self, name: str, reference: str) -> Any:
        try:
            await self.driver.stat(paths.repository(name))
        except PathNotFoundError:
            raise RegistryError(ErrorCode.NAME_UNKNOWN, detail={"name": name}) from None
        raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"tag": reference})

    async def exists(self, name: str, digest: Digest) -> bool:
        return await self.driver.exists(paths.revision_link(name, digest))

    async def load(self, digest: Digest) -> Manifest:
        cached = self._cache.get(digest)
        metrics.cache("manifest", cached is not None)
        if cached is not None:
            self._cache.move_to_end(digest)
            return cached
        task = self._loading.running(digest)
        if task is not None:
            with contextlib.suppress(RegistryError):
                return await asyncio.shield(task)
            return await self._read(digest)
        return await asyncio.shield(self._loading.start(digest, self._read(digest)))

    async def _read(self, digest: Digest) -> Manifest:
        try:
            data = await self.blobs.get(digest)
        except PathNotFoundError:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN, detail={"digest": str(digest)}
            ) from None
        manifest = parse_manifest(data, None, digest)
        self._remember(manifest)
        return manifest

    def _remember(self, manifest: Manifest) -> None:
        """Cache ``manifest`` as the most recently used, evicting the least recently used
        beyond CACHE_ENTRIES manifests or CACHE_BYTES bytes of manifest data."""
        old = self._cache.pop(manifest.digest, None)
        if old is not None:
            self._cache_bytes -= len(old.data)
        self._cache[manifest.digest] = manifest
        self._cache_bytes += len(manifest.data)
        while len(self._cache) > 1 and (
            len(self._cache) > CACHE_ENTRIES or self._cache_bytes > CACHE_BYTES
        ):
            _, evicted = self._cache.popitem(last=False)
            self._cache_bytes -= len(evicted.data)

    async def get(self, name: str, reference: str) -> Manifest:
        return await self.load(await self.resolve(name, reference))

    # -- writing -----------------------------------------------------------------------------

    async def put(
        self,
        name: str,
        reference: str,
        data: bytes,
        content_type: str | None,
        tags: Sequence[str] = (),
    ) -> Manifest:
        return (await self.push(name, reference, data, content_type, tags)).manifest

    async def push(
        self,
        name: str,
        reference: str,
        data: bytes,
        content_type: str | None,
        tags: Sequence[str] = (),
    ) -> Pushed:
        """Store a manifest pushed by tag or by digest; ``tags`` (OCI 1.1's ``?tag=`` on a push
        by digest) are set too, all checked before anything is written. What the first tag
        pointed at before comes back."""
        expected: Digest | None = None
        if is_digest_reference(reference):
            expected = Digest.parse(reference)
        else:
            check_tag(reference)
        for tag in tags:
            check_tag(tag)
        manifest = parse_manifest(data, content_type, expected, pushed=True)
        wanted = list(dict.fromkeys([*([] if expected else [reference]), *tags]))
        async with self._repo_lock(name):
            return await self._put_locked(name, manifest, wanted)

    @property
    def rules(self) -> Rules:
        return self.governance.rules if self.governance is not None else _NO_RULES

    async def _current(self, name: str, tag: str) -> Digest | None:
        try:
            return link_digest(await self.driver.get_content(paths.tag_current_link(name, tag)))
        except PathNotFoundError:
            return None

    async def _guard_tag(self, name: str, tag: str, digest: Digest) -> Digest | None:
        """The tag's current digest; DENIED when an ``immutable`` rule forbids moving it.
        Pushing the digest it already has is no move and is allowed."""
        previous = await self._current(name, tag)
        if previous is not None and previous != digest:
            rules = self.rules
            rule = rules.immutable_rule(name, tag)
            if rule is not None:
                raise rules.immutable_error(name, tag, rule, f"it stays at {previous}")
        return previous

    def _repo_lock(self, name: str) -> asyncio.Lock:
        lock = self._repo_locks.get(name)
        if lock is None:
            lock = asyncio.Lock()
            self._repo_locks[name] = lock
        return lock

    async def _put_locked(self, name: str, manifest: Manifest, tags: list[str]) -> Pushed:
        previous = None
        for i, tag in enumerate(tags):
            before = await self._guard_tag(name, tag, manifest.digest)
            if i == 0:
                previous = before
        fence = self.blobs.fence
        if fence is not None:  # garbage collection may be deleting what this one names
            refs = [manifest.digest, *(d.digest for d in (*manifest.blobs, *manifest.children))]
            await fence.guard(refs, name)
        await self._verify_references(name, manifest)
        # The quota is charged before anything of this manifest is written: refused, the
        # repository is exactly as it was. Blobs charged at upload count again as nothing.
        held = [(manifest.digest, len(manifest.data))]
        held += [(d.digest, d.size) for d in manifest.blobs if not d.urls]
        await self.blobs.charge(name, held)
        # The order of docs/ordering.md: content, then what points at it, the tag last.
        await self.blobs.put(manifest.data, manifest.digest.algorithm)
        crash_point("manifest.put.after-blob")
        if manifest.subject is not None:
            # Before the revision: a referrer link alone is ignored by every reader (they check
            # the revision), a revision without its referrer link would be missed by the API.
            await self.driver.put_content(
                paths.referrer_link(name, manifest.subject.digest, manifest.digest),
                str(manifest.digest).encode(),
            )
            crash_point("manifest.put.after-referrer")
        await self.driver.put_content(
            paths.revision_link(name, manifest.digest), str(manifest.digest).encode()
        )
        crash_point("manifest.put.after-revision")
        for tag in tags:
            await self._write_tag(name, tag, manifest.digest)
        self._remember(manifest)
        self._changed(name)
        return Pushed(manifest, previous if previous != manifest.digest else None)

    def _changed(self, name: str) -> None:
        for listener in self.listeners:
            listener(name)

    def forget(self, digests: set[Digest]) -> None:
        """Drop deleted manifests (garbage collection) from this process's cache."""
        for d in digests:
            gone = self._cache.pop(d, None)
            if gone is not None:
                self._cache_bytes -= len(gone.data)

    async def tag(self, name: str, tag: str, digest: Digest) -> Digest | None:
        """Point ``tag`` at ``digest`` (``immutable`` rules apply); the previous digest."""
        previous = await self._guard_tag(name, tag, digest)
        await self._write_tag(name, tag, digest)
        return previous

    async def _write_tag(self, name: str, tag: str, digest: Digest) -> None:
        """``current/link`` first: it creates the tag directory, which must never exist without
        it (tag listings show it); the index entry is history that nothing needs."""
        await self.driver.put_content(paths.tag_current_link(name, tag), str(digest).encode())
        crash_point("manifest.tag.after-current")
        await self.driver.put_content(paths.tag_index_link(name, tag, digest), str(digest).encode())

    async def _verify_references(self, name: str, m: Manifest) -> None:
        """Every referenced blob and child must be here; ``validation.disabled`` only lifts the
        layer-URL policy, exactly as in registry:2 (it never allowed dangling references)."""
        missing: list[str] = []
        for d in m.blobs:
            if d.urls:
                if not self.validation.disabled:
                    self._check_urls(d)
                continue
            if d.digest == EMPTY_JSON_DIGEST:
                await self.blobs.ensure_empty_json(name)
            if not await self.blobs.is_linked(name, d.digest):
                missing.append(str(d.digest))
                continue
            size = await self.blobs.stat(d.digest)
            if size is None:
                missing.append(str(d.digest))
            elif size != d.size:
                raise _fail(f"descriptor of {d.digest} says {d.size} bytes, the blob has {size}")
        for d in m.children:
            if not self._index_child_required(d):
                continue
            if not await self.exists(name, d.digest):
                missing.append(str(d.digest))
        if missing:
            raise RegistryError(ErrorCode.MANIFEST_BLOB_UNKNOWN, detail={"missing": missing})

    def _index_child_required(self, d: Descriptor) -> bool:
        mode = self.validation.indexes_platforms
        if mode == "none":
            return False
        if mode == "list":
            p = d.platform or {}
            return any(
                p.get("architecture") == want.get("architecture") and p.get("os") == want.get("os")
                for want in self.validation.indexes_platformlist
            )
        return True

    def _check_urls(self, d: Descriptor) -> None:
        for url in d.urls:
            allowed = any(r.search(url) for r in self._allow) if self._allow else True
            if not allowed or any(r.search(url) for r in self._deny):
                raise _fail(f"layer URL not allowed: {url[:200]}")

    # -- deleting ----------------------------------------------------------------------------

    async def untag(self, name: str, tag: str) -> Digest | None:
        """Delete a tag (``immutable`` rules apply); the digest it pointed at."""
        check_tag(tag)
        rules = self.rules
        rule = rules.immutable_rule(name, tag)
        try:
            await self.driver.stat(paths.tag_current_link(name, tag))
            current = await self._current(name, tag)
            if rule is not None:
                raise rules.immutable_error(name, tag, rule, "it cannot be deleted")
            await self.driver.delete(paths.tag_dir(name, tag))
        except PathNotFoundError:
            await self._raise_unknown(name, tag)
        self._changed(name)
        return current

    async def delete(self, name: str, digest: Digest) -> None:
        """Remove a revision and every tag pointing at it, as registry:2 does.

        The tags go first, then the revision, then its referrers link (docs/ordering.md): a
        crash in between leaves an untagged manifest, or a referrers link that readers skip,
        never a tag naming a digest that is no longer a revision of the repository.
        """
        async with self._repo_lock(name):
            if not await self.exists(name, digest):
                raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"digest": str(digest)})
            tagged = [t for t in await self.tags(name) if await self._current(name, t) == digest]
            rules = self.rules
            for t in tagged:
                rule = rules.immutable_rule(name, t)
                if rule is not None:
                    what = f"its manifest {digest} cannot be deleted"
                    raise rules.immutable_error(name, t, rule, what)
            try:
                manifest: Manifest | None = await self.load(digest)
            except RegistryError:
                manifest = None
            for tag in await self.tags(name):
                try:
                    raw = await self.driver.get_content(paths.tag_current_link(name, tag))
                except PathNotFoundError:
                    continue
                if raw.decode("ascii", "replace").strip() == str(digest):
                    with contextlib.suppress(PathNotFoundError):
                        await self.driver.delete(paths.tag_dir(name, tag))
                    crash_point("manifest.delete.after-tag")
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(paths.revision_dir(name, digest))
            crash_point("manifest.delete.after-revision")
            if manifest is not None and manifest.subject is not None:
                with contextlib.suppress(PathNotFoundError):
                    await self.driver.delete(
                        paths.referrer_dir(name, manifest.subject.digest, digest)
                    )
            await self.blobs.release(name, [digest])
        self._changed(name)

    # -- listing -----------------------------------------------------------------------------

    async def tags(self, name: str) -> list[str]:
        try:
            entries = await self.driver.list(paths.tags(name))
        except PathNotFoundError:
            try:
                await self.driver.stat(paths.repository(name))
            except PathNotFoundError:
                raise RegistryError(ErrorCode.NAME_UNKNOWN, detail={"name": name}) from None
            return []
        cut = len(paths.tags(name)) + 1
        return sorted([e[cut:] for e in entries])

    async def referrers(self, name: str, subject: Digest) -> list[Manifest]:
        base = paths.referrers_dir(name, subject)
        found: list[Manifest] = []
        try:
            algorithms = await self.driver.list(base)
        except PathNotFoundError:
            return found
        for alg_path in algorithms:
            try:
                entries = await self.driver.list(alg_path)
            except PathNotFoundError:
                continue
            for entry in entries:
                parsed = paths.parse(entry)
                digest = parsed.digest if parsed.kind is paths.Kind.REFERRER_DIR else None
                if digest is None or not await self.exists(name, digest):
                    continue
                try:
                    found.append(await self.load(digest))
                except RegistryError:
                    continue
        found.sort(key=lambda m: str(m.digest))
        return found
