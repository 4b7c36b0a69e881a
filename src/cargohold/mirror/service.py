"""Mirrored repositories: which names are mirrored, and how their content is fetched and served.

A repository name is mirrored when it falls under a mirror's prefix (``hub/library/alpine`` is
``library/alpine`` upstream) or when the whole registry is registry:2's ``proxy``. Its content is
stored under its own (local) name in the ordinary layout, so catalog, ``du``, garbage collection
and registry:2 itself see a mirrored repository like any other; only *how it fills* differs:

- a manifest by digest is fetched once and never asked again (content by digest is immutable);
- a tag is checked upstream with a ``HEAD`` (which Docker Hub does not count against its pull
  limit) unless it was checked within ``tagfreshness``; the manifest is fetched only when its
  digest is not stored yet; one check per tag runs at a time on a host, and the requests that
  arrive meanwhile take its outcome;
- a blob is fetched on the first request, coalesced across every request of the host
  (:mod:`cargohold.mirror.fetch`).

When the upstream is down, slow or answers 5xx, cached content is served (a warning and the
``cargohold_mirror_stale_serves`` metric); content that is not cached fails with 503
``UNAVAILABLE``; what the upstream does not have is a 404 here too.

A ``HEAD`` of a manifest that is not stored asks the upstream with a ``HEAD`` and stores
nothing (:meth:`Mirrors.describe`). Tools that only look (update checkers such as Watchtower
or Renovate, ``crane digest``) HEAD precisely because Docker Hub does not count a HEAD as a
pull; fetching on their behalf would spend the pull limit on manifests nobody pulls. A client
that HEADs and then pulls (containerd resolves a tag with HEAD, then GETs by digest) costs the
upstream one HEAD and one GET either way. A client whose Accept header rules out what the
upstream has gets the manifest fetched, as on a GET (only a stored index can be negotiated).

In read-only mode (``storage.maintenance.readonly``: a garbage collection or a backup is
running, or the storage is mounted read-only) nothing is written: cached content is served as
usual, a tag is still checked upstream (its cached digest served when it matches, the local
tag left alone), and what is not cached is passed through from the upstream, verified against
its digest as it goes, and not stored: pulls keep working as a plain proxy would serve them,
only without coalescing, and the cache fills again once writes are allowed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

from cargohold import metrics
from cargohold.config import MirrorConfig, MirrorsConfig, RedisConfig
from cargohold.digest import Digest, check_tag, is_digest_reference
from cargohold.errors import ErrorCode, RegistryError
from cargohold.globs import glob_match
from cargohold.mirror.fetch import BlobFetches, Described, Tail, error_of, stored
from cargohold.mirror.replicas import ReplicaLocks
from cargohold.mirror.upkeep import Stats
from cargohold.mirror.upstream import NotFound, Response, Unreachable, Upstream, UpstreamError
from cargohold.registry.blobs import BlobStore
from cargohold.registry.integrity import Identity
from cargohold.registry.manifests import Manifest, ManifestStore, link_digest, parse_manifest
from cargohold.storage import paths
from cargohold.storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger("cargohold.mirror")


class Relay:
    """A blob passed through from the upstream without storing it (read-only mode): the body
    is the upstream's, to be hashed as it is sent."""

    def __init__(self, response: Response, digest: Digest) -> None:
        self.response = response
        self.digest = digest
        self.size = _content_length(response)

    def chunks(self) -> AsyncIterator[bytes]:
        return cast("AsyncIterator[bytes]", self.response.chunks())

    def close(self) -> None:
        self.response.release()


def _content_length(response: Response) -> int | None:
    raw = response.headers.get("Content-Length")
    return int(raw) if raw is not None and raw.isdigit() else None


# After a check found the upstream down (or slow), requests for that tag take that outcome for
# this long instead of each waiting out the timeouts again.
DOWN_HOLD = 30.0


class Mirror:
    """One upstream and what this process remembers about it."""

    def __init__(self, config: MirrorConfig) -> None:
        self.config = config
        self.label = config.label
        self.upstream = Upstream(config)

    def allows(self, remote: str) -> bool:
        allow = self.config.repositories
        return not allow or any(glob_match(p, remote) for p in allow)


@dataclass(frozen=True, slots=True)
class Route:
    mirror: Mirror
    remote: str  # the repository's name upstream

    @property
    def label(self) -> str:
        return self.mirror.label


class Mirrors:
    """Every mirror of the configuration, and the fetching and serving of their content."""

    def __init__(
        self,
        config: MirrorsConfig,
        driver: StorageDriver,
        blobs: BlobStore,
        manifests: ManifestStore,
        redis: RedisConfig | None = None,
        readonly: bool = False,
        verified: Callable[[Identity], None] | None = None,
    ) -> None:
        self.driver = driver
        self.readonly = readonly  # storage.maintenance.readonly: serve, pass through, never store
        self.redis = redis
        self.blobs = blobs
        self.manifests = manifests
        self.mirrors = [Mirror(c) for c in config.entries]
        # Longest prefix first, so nested prefixes could never shadow each other.
        self._by_prefix = sorted(
            (m for m in self.mirrors if m.config.prefix),
            key=lambda m: -len(m.config.prefix),
        )
        self._root = next((m for m in self.mirrors if not m.config.prefix), None)
        self._fetches: BlobFetches | None = None
        self._verified = verified
        self.stats = Stats()

    @property
    def enabled(self) -> bool:
        return bool(self.mirrors)

    @property
    def fetches(self) -> BlobFetches:
        if self._fetches is None:  # made on first use: a registry without mirrors has no files
            replicas = ReplicaLocks(self.redis) if self.redis is not None else None
            self._fetches = BlobFetches(self.driver, replicas, self._verified)
        return self._fetches

    def route(self, name: str) -> Route | None:
        """The mirror serving repository ``name``, or None for an ordinary repository."""
        if self._root is not None:
            return Route(self._root, name)
        for m in self._by_prefix:
            prefix = m.config.prefix
            if name.startswith(prefix) and name[len(prefix) : len(prefix) + 1] == "/":
                return Route(m, name[len(prefix) + 1 :])
        return None

    def allowed_route(self, name: str) -> Route | None:
        """:meth:`route`, refusing names outside the mirror's ``repositories`` allow-list."""
        route = self.route(name)
        if route is not None and not route.mirror.allows(route.remote):
            raise RegistryError(
                ErrorCode.NAME_UNKNOWN,
                "this repository is not in the mirror's allow-list",
                {"name": name},
            )
        return route

    def refuse_write(self, name: str | None) -> None:
        """Pushes and deletes are refused in mirrored repositories (and, with registry:2's
        ``proxy``, everywhere), with registry:2's ``UNSUPPORTED``."""
        if self._root is not None or (name is not None and self.route(name) is not None):
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                "this repository is a pull-through mirror: pushes and deletes are not allowed",
            )

    # -- manifests -------------------------------------------------------------------------

    def _lookup(self, route: Route, kind: str, hit: bool) -> None:
        metrics.mirror_lookup(route.label, kind, hit)
        self.stats.lookup(route.label, hit)

    async def manifest(self, name: str, reference: str) -> Manifest:
        m = await self._manifest(name, reference)
        assert isinstance(m, Manifest)  # described only for a HEAD
        if not is_digest_reference(reference):
            self.stats.pulled(name, reference)  # for maxsize's least-recently-pulled order
        return m

    async def describe(self, name: str, reference: str) -> Manifest | Described:
        """What a ``HEAD`` answers: the stored manifest, or the upstream's description of one
        that is not stored (asked with a HEAD; nothing fetched, nothing stored)."""
        return await self._manifest(name, reference, head=True)

    async def _manifest(
        self, name: str, reference: str, head: bool = False
    ) -> Manifest | Described:
        """A :class:`Manifest`; with ``head``, a :class:`Described` instead of fetching."""
        route = self.allowed_route(name)
        assert route is not None
        if is_digest_reference(reference):
            digest = Digest.try_parse(reference)
            if digest is None:
                raise RegistryError(
                    ErrorCode.MANIFEST_UNKNOWN, "invalid digest reference", status=404
                )
            if await self.manifests.exists(name, digest):
                self._lookup(route, "manifest", True)
                return await self.manifests.load(digest)
            if head:
                found = await self._head_upstream(route, digest)
                if found is not None and found.digest == digest:
                    return found
            if self.readonly:  # fetched, verified, not stored
                return await self._get_and_store(route, name, str(digest), digest)
            return await self._fetch_manifest(route, name, digest)
        check_tag(reference)
        if self.readonly:
            return await self._readonly_tag(route, name, reference, head)
        return await self._by_tag(route, name, reference, head)

    async def _head_upstream(self, route: Route, reference: Digest | str) -> Described | None:
        """The upstream's HEAD of a manifest; None when it named no digest or size."""
        try:
            raw, media_type, size = await route.mirror.upstream.head_manifest(
                route.remote, str(reference)
            )
        except UpstreamError as exc:
            if not isinstance(exc, NotFound):
                log.warning("upstream %s: %s; %s is not cached", route.label, exc, reference)
            raise error_of(exc, "manifest") from None
        digest = Digest.try_parse(raw) if raw else None
        if digest is None or size is None or not media_type:
            return None
        return Described(digest, media_type.split(";", 1)[0].strip(), size)

    async def _readonly_tag(
        self, route: Route, name: str, tag: str, head: bool
    ) -> Manifest | Described:
        """A tag in read-only mode: checked upstream every time (no outcome can be recorded),
        the cached manifest served when the digests agree (or the upstream is down), else the
        upstream's passed through; the local tag is not moved."""
        local = await self._local_tag(name, tag)
        try:
            found = await route.mirror.upstream.head_manifest(route.remote, tag)
        except NotFound:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN, "the upstream has no such tag", {"tag": tag}
            ) from None
        except UpstreamError as exc:
            if local is None:
                raise error_of(exc, "manifest") from None
            return await self._cached_instead(route, name, tag, local, exc)
        digest = Digest.try_parse(found[0]) if found[0] else None
        if digest is not None and await self.manifests.exists(name, digest):
            self._lookup(route, "manifest", True)
            return await self.manifests.load(digest)
        if head and digest is not None and found[1] and found[2] is not None:
            return Described(digest, found[1].split(";", 1)[0].strip(), found[2])
        try:
            return await self._get_and_store(route, name, str(digest) if digest else tag, digest)
        except RegistryError as exc:
            if exc.code is not ErrorCode.UNAVAILABLE or local is None:
                raise
            return await self._cached_instead(route, name, tag, local, exc)

    async def _cached_instead(
        self, route: Route, name: str, tag: str, local: Digest, exc: Exception
    ) -> Manifest:
        """The cached manifest of a tag whose upstream failed (down, or a body that stalled,
        was cut or did not verify): stale, served, logged and counted as such."""
        log.warning("upstream %s: %s; serving the cached %s:%s", route.label, exc, name, tag)
        metrics.mirror_stale(route.label)
        return await self.manifests.load(local)

    async def _by_tag(
        self, route: Route, name: str, tag: str, head: bool = False
    ) -> Manifest | Described:
        """A tag, checked upstream unless checked within ``tagfreshness``. The check (HEAD, and
        the manifest's GET when its digest is new) runs once per host at a time: requests that
        arrive meanwhile wait for it and take its outcome instead of asking again. With
        ``head``, a digest that is not stored is :class:`Described`, not fetched (and
        recorded as such, for the HEADs that waited: a GET still fetches)."""
        stem = self.fetches.tag_stem(name, tag)
        fresh = route.mirror.config.tagfreshness
        last = self.fetches.outcome(stem)
        if last is not None and (
            (last[1] == "ok" and time.time() - last[0] < fresh)
            or (last[1] == "down" and time.time() - last[0] < DOWN_HOLD)
        ):  # checked recently by any worker of the host: no need to ask (or wait) again
            local = await self._local_tag(name, tag)
            if local is not None:
                if last[1] == "down":
                    metrics.mirror_stale(route.label)
                self.stats.lookup(route.label, True)
                return await self.manifests.load(local)
            if last[1] == "down":
                raise error_of(Unreachable("checked just now"), "manifest")
        began = time.time()
        async with self.fetches.exclusive(stem):
            local = await self._local_tag(name, tag)
            # A check that ended after this request began is as fresh as one of its own: taken
            # whether this request waited for it or came just as it ended.
            outcome = self.fetches.outcome(stem)
            seen = self.fetches.described(stem) if head else None
            if seen is not None and seen[0] >= began and seen[1].digest != local:
                metrics.mirror_coalesced(route.label, "manifest")
                return seen[1]
            if outcome is not None and outcome[0] >= began and outcome[1] != "described":
                metrics.mirror_coalesced(route.label, "manifest")
                state = outcome[1]
                if state == "missing":
                    raise RegistryError(
                        ErrorCode.MANIFEST_UNKNOWN, "the upstream has no such tag", {"tag": tag}
                    )
                if local is not None:
                    self.stats.lookup(route.label, True)
                    if state == "down":
                        metrics.mirror_stale(route.label)
                    return await self.manifests.load(local)
                if state == "down":
                    raise error_of(Unreachable("checked just now"), "manifest")
            try:
                found = await self._check_tag(route, tag)
            except NotFound:
                self.fetches.record(stem, "missing")
                raise RegistryError(
                    ErrorCode.MANIFEST_UNKNOWN, "the upstream has no such tag", {"tag": tag}
                ) from None
            except UpstreamError as exc:
                self.fetches.record(stem, "down")
                if local is None:
                    log.warning("upstream %s: %s; %s:%s is not cached", route.label, exc, name, tag)
                    raise error_of(exc, "manifest") from None
                return await self._cached_instead(route, name, tag, local, exc)
            digest = found.digest if isinstance(found, Described) else found
            if (
                head
                and isinstance(found, Described)
                and found.digest != local
                and not await self.manifests.exists(name, found.digest)
            ):
                self.fetches.record(stem, "described", found)
                return found
            try:
                m = await self._tagged(route, name, tag, digest, local)
            except RegistryError as exc:
                # The tag moved upstream but its new manifest could not be had (its body
                # stalled or was cut, or did not verify): the cached one, as when it is down.
                if exc.code is not ErrorCode.UNAVAILABLE or local is None:
                    raise
                self.fetches.record(stem, "down")
                return await self._cached_instead(route, name, tag, local, exc)
            self.fetches.record(stem, "ok")
            return m

    async def _tagged(
        self, route: Route, name: str, tag: str, digest: Digest | None, local: Digest | None
    ) -> Manifest:
        """The manifest the upstream's tag names, fetched if new, and the local tag moved."""
        if digest is not None and digest == local:
            self._lookup(route, "manifest", True)
            return await self.manifests.load(local)
        if digest is not None and await self.manifests.exists(name, digest):
            await self.manifests.tag(name, tag, digest)
            self._lookup(route, "manifest", True)
            return await self.manifests.load(digest)
        m = await self._fetch_manifest(route, name, digest, tag=tag)
        await self.manifests.tag(name, tag, m.digest)
        return m

    async def _local_tag(self, name: str, tag: str) -> Digest | None:
        try:
            raw = await self.driver.get_content(paths.tag_current_link(name, tag))
        except PathNotFoundError:
            return None
        digest = link_digest(raw)
        if digest is None or not await self.manifests.exists(name, digest):
            return None
        return digest

    async def _check_tag(self, route: Route, tag: str) -> Described | Digest | None:
        """The tag's manifest upstream by ``HEAD`` (which Docker Hub does not count as a pull):
        described, or only its digest when it sent no size or type, or None when it did not
        even say the digest (the manifest is then fetched by tag)."""
        raw, media_type, size = await route.mirror.upstream.head_manifest(route.remote, tag)
        digest = Digest.try_parse(raw) if raw else None
        if digest is None or size is None or not media_type:
            return digest
        return Described(digest, media_type.split(";", 1)[0].strip(), size)

    async def _fetch_manifest(
        self, route: Route, name: str, digest: Digest | None, tag: str | None = None
    ) -> Manifest:
        """Fetch (once per host) and store a manifest by digest, or by tag when the upstream's
        HEAD named no digest."""
        if digest is None:
            assert tag is not None
            return await self._get_and_store(route, name, tag, None)
        async with self.fetches.exclusive(self.fetches.stem_of(digest)) as waited:
            if await self.manifests.exists(name, digest):
                if waited:
                    metrics.mirror_coalesced(route.label, "manifest")
                    self.stats.lookup(route.label, True)
                return await self.manifests.load(digest)
            if await self.blobs.stat(digest) is not None:  # another mirrored repo has it
                with contextlib.suppress(RegistryError):
                    m = await self.manifests.load(digest)
                    await self._store(name, m)
                    self._lookup(route, "manifest", True)
                    return m
            return await self._get_and_store(route, name, str(digest), digest)

    async def _get_and_store(
        self, route: Route, name: str, reference: str, digest: Digest | None
    ) -> Manifest:
        self._lookup(route, "manifest", False)
        try:
            data, content_type = await route.mirror.upstream.get_manifest(route.remote, reference)
        except UpstreamError as exc:
            if not isinstance(exc, NotFound):
                log.warning(
                    "upstream %s: %s; %s@%s is not cached", route.label, exc, name, reference
                )
            raise error_of(exc, "manifest") from None
        try:
            m = parse_manifest(data, content_type, digest)
        except RegistryError as exc:
            log.error("upstream %s sent a bad manifest for %s: %s", route.label, reference, exc)
            raise RegistryError(
                ErrorCode.UNAVAILABLE, "the upstream sent a manifest that does not verify"
            ) from None
        if not self.readonly:  # read-only: passed through, not kept
            await self._store(name, m)
        return m

    async def _store(self, name: str, m: Manifest) -> None:
        """A fetched manifest as if pushed, minus the check that its blobs are here (they come
        on demand); its blobs are linked so the repository may read them once fetched."""
        refs = [m.digest, *(d.digest for d in m.blobs)]
        if self.blobs.fence is not None:
            await self.blobs.fence.guard(refs, name)
        await self.blobs.put(m.data, m.digest.algorithm)
        for d in m.blobs:
            if not d.urls:
                await self.blobs.link(name, d.digest)
        if m.subject is not None:
            await self.driver.put_content(
                paths.referrer_link(name, m.subject.digest, m.digest), str(m.digest).encode()
            )
        await self.driver.put_content(paths.revision_link(name, m.digest), str(m.digest).encode())

    # -- blobs -----------------------------------------------------------------------------

    async def _stored(self, d: Digest) -> bool:
        # Not through self.fetches: in read-only mode not even its directory is made.
        return await stored(self.driver, d)

    async def open_blob(self, name: str, digest: Digest) -> Tail | Relay | None:
        """None when the blob is stored and linked (serve it as usual); else a :class:`Tail`
        following its fetch, or in read-only mode a :class:`Relay` of the upstream's body."""
        route = self.allowed_route(name)
        assert route is not None
        stored = await self._stored(digest)
        if stored and await self.blobs.is_linked(name, digest):
            self._lookup(route, "blob", True)
            return None
        if self.readonly:  # no fetch file, no link, no blob: the upstream's bytes, relayed
            self._lookup(route, "blob", False)
            try:
                response = await route.mirror.upstream.get_blob(route.remote, str(digest))
                return Relay(response, digest)
            except UpstreamError as exc:
                raise error_of(exc, "blob") from None
        if stored:
            # In the store for another repository: the upstream must show it has it here.
            try:
                await route.mirror.upstream.head_blob(route.remote, str(digest))
            except UpstreamError as exc:
                raise error_of(exc, "blob") from None
            await self.blobs.link(name, digest)
            self._lookup(route, "blob", True)
            return None
        upstream = route.mirror.upstream
        tail, coalesced = await self.fetches.open(
            digest, lambda: upstream.get_blob(route.remote, str(digest))
        )
        if coalesced:
            metrics.mirror_coalesced(route.label, "blob")
            self.stats.lookup(route.label, True)
        else:
            self._lookup(route, "blob", False)
        if self.blobs.fence is not None:
            await self.blobs.fence.guard([digest], name)
        await self.blobs.link(name, digest)
        return tail

    async def head_blob(self, name: str, digest: Digest) -> int | None:
        """The size of a blob that is not stored yet, from the upstream; None when it is."""
        route = self.allowed_route(name)
        assert route is not None
        if await self._stored(digest) and await self.blobs.is_linked(name, digest):
            return None
        try:
            size = await route.mirror.upstream.head_blob(route.remote, str(digest))
        except UpstreamError as exc:
            raise error_of(exc, "blob") from None
        if size is None:
            raise RegistryError(ErrorCode.UNAVAILABLE, "the upstream sent no blob size")
        return size

    # -- tags ------------------------------------------------------------------------------

    async def tags(self, name: str, query: dict[str, str]) -> dict[str, Any] | None:
        """The upstream's tag list (None: it cannot be reached, list the cached tags)."""
        route = self.allowed_route(name)
        assert route is not None
        try:
            doc = await route.mirror.upstream.tags(route.remote, query)
        except NotFound:
            raise RegistryError(ErrorCode.NAME_UNKNOWN, detail={"name": name}) from None
        except (Unreachable, UpstreamError) as exc:
            log.warning("upstream %s: %s; listing the cached tags of %s", route.label, exc, name)
            metrics.mirror_stale(route.label)
            return None
        tags = doc.get("tags") if isinstance(doc, dict) else None
        if not isinstance(tags, list):
            tags = []
        return {"name": name, "tags": sorted(t for t in tags if isinstance(t, str))}

    async def close(self) -> None:
        if self._fetches is not None:
            await self._fetches.close()
        for m in self.mirrors:
            await m.upstream.close()
