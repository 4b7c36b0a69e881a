"""Where images go to and come from: a local storage root, or a registry over HTTP.

Both sides of each pair offer the same few operations, so the importer and exporter never know
which one they talk to:

- :class:`LocalTarget` / :class:`LocalSource` drive the domain layer
  (:class:`~cargohold.registry.core.Registry`) directly on a storage root: no server needed,
  and the same rules as a push (upload verification, atomic publication of blobs, manifest
  validation). A local import keeps a journal of every link it creates so that a failure after
  the first write can be rolled back: a broken import leaves no repository, manifest or tag.
- :class:`RemoteTarget` / :class:`RemoteSource` speak the distribution HTTP API through
  :class:`~cargohold.images.client.RegistryClient`. Blobs are sent only after the whole archive
  verified, and manifests only after every blob is in; an interrupted remote import can leave
  unreferenced blobs, which the registry's garbage collection removes, but never a tag.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from cargohold.digest import Digest
from cargohold.errors import RegistryError
from cargohold.images.archive import ManifestDoc, sha256_of
from cargohold.images.client import BodyFactory, RegistryClient
from cargohold.images.files import CHUNK
from cargohold.registry.core import Registry
from cargohold.registry.readinto import ChunkBody
from cargohold.storage import paths
from cargohold.storage.driver import PathNotFoundError


class TargetError(Exception):
    """Publishing or fetching failed in the registry (local or remote); the message says why."""


def registry_error_text(e: RegistryError) -> str:
    text = f"{e.code.name}: {e.message}"
    if e.detail:
        text += f" ({e.detail})"
    return text


class ImportTarget(Protocol):
    description: str

    async def start(self, repos: list[str]) -> None: ...

    async def has_blob(self, repo: str, digest: str, size: int) -> bool: ...

    async def reuse_blob(self, repo: str, digest: str) -> None: ...

    async def upload_blob(
        self, repo: str, digest: str, size: int, body: BodyFactory, verify: Callable[[], str]
    ) -> None: ...

    async def put_manifest(self, repo: str, reference: str, doc: ManifestDoc) -> None: ...

    async def rollback(self) -> None: ...

    async def close(self) -> None: ...


class ExportSource(Protocol):
    description: str

    async def start(self, repos: list[str]) -> None: ...

    async def get_manifest(self, repo: str, reference: str) -> ManifestDoc: ...

    def blob_chunks(self, repo: str, digest: str) -> AsyncGenerator[bytes, None]: ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------- local


@dataclass
class _Journal:
    """Everything a local import created, to undo it if a later step fails."""

    new_dirs: list[str] = field(default_factory=list)  # top-most repository dirs created
    links: list[tuple[str, Digest]] = field(default_factory=list)
    revisions: list[tuple[str, Digest]] = field(default_factory=list)
    tags: list[tuple[str, str, bytes | None]] = field(default_factory=list)


class LocalTarget:
    def __init__(self, registry: Registry, description: str) -> None:
        self.registry = registry
        self.description = description
        self.journal = _Journal()

    async def start(self, repos: list[str]) -> None:
        try:
            self.registry.require_writable()
        except RegistryError as e:
            raise TargetError(e.message) from None
        driver = self.registry.driver
        for repo in repos:
            parts = repo.split("/")
            for i in range(1, len(parts) + 1):
                path = paths.repository("/".join(parts[:i]))
                try:
                    await driver.stat(path)
                except PathNotFoundError:
                    if path not in self.journal.new_dirs:
                        self.journal.new_dirs.append(path)
                    break

    async def has_blob(self, repo: str, digest: str, size: int) -> bool:
        # Any blob of the root can be reused: whoever runs this command owns the whole root, so
        # there is no cross-repository secrecy to keep as over HTTP.
        return await self.registry.blobs.stat(Digest.parse(digest)) == size

    async def reuse_blob(self, repo: str, digest: str) -> None:
        d = Digest.parse(digest)
        if not await self.registry.blobs.is_linked(repo, d):
            await self.registry.blobs.link(repo, d)
            self.journal.links.append((repo, d))

    async def upload_blob(
        self, repo: str, digest: str, size: int, body: BodyFactory, verify: Callable[[], str]
    ) -> None:
        """Through the upload machinery: bytes land in ``_uploads`` and move in once verified."""
        uploads = self.registry.uploads
        d = Digest.parse(digest)
        was_linked = await self.registry.blobs.is_linked(repo, d)
        upload_id = await uploads.start(repo)
        try:
            await uploads.append(repo, upload_id, ChunkBody(body()))
            sent = verify()
            if sent != digest:
                raise TargetError(f"{digest}: the bytes read hash to {sent}; the file changed")
            await uploads.finish(repo, upload_id, d)
        except BaseException:
            with contextlib.suppress(Exception):
                await uploads.cancel(repo, upload_id)
            raise
        if not was_linked:
            self.journal.links.append((repo, d))

    async def put_manifest(self, repo: str, reference: str, doc: ManifestDoc) -> None:
        manifests = self.registry.manifests
        d = Digest.parse(doc.digest)
        is_tag = ":" not in reference
        previous: bytes | None = None
        if is_tag:
            with contextlib.suppress(PathNotFoundError):
                previous = await self.registry.driver.get_content(
                    paths.tag_current_link(repo, reference)
                )
        existed = await manifests.exists(repo, d)
        try:
            stored = await manifests.put(repo, reference, doc.data, doc.media_type)
        except RegistryError as e:
            raise TargetError(f"{repo}:{reference} refused: {registry_error_text(e)}") from None
        if str(stored.digest) != doc.digest:
            raise TargetError(f"{repo}: stored as {stored.digest}, expected {doc.digest}")
        if not existed:
            self.journal.revisions.append((repo, d))
        if is_tag:
            self.journal.tags.append((repo, reference, previous))

    async def rollback(self) -> None:
        """Undo in reverse order; blob data stays (verified, content-addressed, GC-able)."""
        driver = self.registry.driver
        j, self.journal = self.journal, _Journal()
        for repo, tag, previous in reversed(j.tags):
            with contextlib.suppress(Exception):
                if previous is None:
                    await driver.delete(paths.tag_dir(repo, tag))
                else:
                    await driver.put_content(paths.tag_current_link(repo, tag), previous)
        for repo, d in reversed(j.revisions):
            with contextlib.suppress(Exception):
                await driver.delete(paths.revision_dir(repo, d))
        for repo, d in reversed(j.links):
            with contextlib.suppress(Exception):
                await self.registry.blobs.unlink(repo, d)
        for path in reversed(j.new_dirs):
            with contextlib.suppress(Exception):
                await driver.delete(path)

    async def close(self) -> None:
        pass


class LocalSource:
    def __init__(self, registry: Registry, description: str) -> None:
        self.registry = registry
        self.description = description

    async def start(self, repos: list[str]) -> None:
        pass

    async def get_manifest(self, repo: str, reference: str) -> ManifestDoc:
        try:
            manifest = await self.registry.manifests.get(repo, reference)
        except RegistryError as e:
            sep = "@" if ":" in reference else ":"
            raise TargetError(
                f"{repo}{sep}{reference} is not in {self.description} ({e.code.name})"
            ) from None
        return ManifestDoc(manifest.media_type, manifest.data, str(manifest.digest))

    async def blob_chunks(self, repo: str, digest: str) -> AsyncGenerator[bytes, None]:
        d = Digest.parse(digest)
        try:
            await self.registry.blobs.describe(repo, d)
        except RegistryError:
            raise TargetError(
                f"blob {digest} of {repo} is missing from {self.description}"
            ) from None
        async for chunk in self.registry.driver.reader(paths.blob_data(d)):
            yield chunk

    async def close(self) -> None:
        pass


# --------------------------------------------------------------------------- remote


class RemoteTarget:
    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self.description = client.host

    async def start(self, repos: list[str]) -> None:
        await self.client.__aenter__()
        await self.client.ping(f"repository:{repos[0]}:pull,push" if repos else None)

    async def has_blob(self, repo: str, digest: str, size: int) -> bool:
        found = await self.client.blob_size(repo, digest)
        return found is not None and found in (size, 0)

    async def reuse_blob(self, repo: str, digest: str) -> None:
        pass  # HEAD said this repository already has it

    async def upload_blob(
        self, repo: str, digest: str, size: int, body: BodyFactory, verify: Callable[[], str]
    ) -> None:
        await self.client.upload_blob(repo, digest, size, body, verify)

    async def put_manifest(self, repo: str, reference: str, doc: ManifestDoc) -> None:
        got = await self.client.put_manifest(repo, reference, doc.data, doc.media_type)
        if got and got != doc.digest:
            raise TargetError(
                f"{self.description} stored {repo}:{reference} as {got}, not {doc.digest}"
            )

    async def rollback(self) -> None:
        pass  # nothing is tagged before everything is in; stray blobs are left to GC

    async def close(self) -> None:
        await self.client.__aexit__(None, None, None)


class RemoteSource:
    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self.description = client.host

    async def start(self, repos: list[str]) -> None:
        await self.client.__aenter__()
        await self.client.ping(f"repository:{repos[0]}:pull" if repos else None)

    async def get_manifest(self, repo: str, reference: str) -> ManifestDoc:
        data, media_type = await self.client.get_manifest(repo, reference)
        digest = sha256_of(data)
        if ":" in reference and reference.startswith("sha256:") and digest != reference:
            raise TargetError(f"{self.description} answered {repo}@{reference} with other bytes")
        return ManifestDoc(media_type, data, digest)

    async def blob_chunks(self, repo: str, digest: str) -> AsyncGenerator[bytes, None]:
        resp = await self.client.open_blob(repo, digest)
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                yield chunk
        finally:
            resp.release()

    async def close(self) -> None:
        await self.client.__aexit__(None, None, None)


# --------------------------------------------------------------------------- helpers


def file_body(
    opener: Callable[[], BinaryIO], on_bytes: Callable[[int], None]
) -> tuple[BodyFactory, Callable[[], str]]:
    """A re-startable body read from a file in a thread, and a function giving its digest.

    The digest is of the bytes actually handed out, so a file that changes between verification
    and upload is caught before the upload completes.
    """
    hashers = [hashlib.sha256()]

    async def body() -> AsyncIterator[bytes]:
        hasher = hashlib.sha256()
        hashers[0] = hasher
        f = opener()
        try:
            while True:
                chunk = await asyncio.to_thread(f.read, CHUNK)
                if not chunk:
                    return
                hasher.update(chunk)
                on_bytes(len(chunk))
                yield chunk
        finally:
            f.close()

    def digest() -> str:
        return "sha256:" + hashers[0].hexdigest()

    return body, digest
