"""The registry as one object: the stores wired to one driver and the config's policies.

The HTTP layer holds a single :class:`Registry` and asks it for everything; policies that
registry:2 keeps in its config (deletes allowed, read-only mode) are enforced here so that every
entry point (HTTP today, tools tomorrow) obeys them alike.
"""

from __future__ import annotations

from typing import Any

from cargohold.config import Config
from cargohold.errors import ErrorCode, RegistryError
from cargohold.registry.blobs import BlobStore
from cargohold.registry.catalog import list_repositories
from cargohold.registry.manifests import ManifestStore
from cargohold.registry.uploads import UploadManager
from cargohold.storage.driver import StorageDriver
from cargohold.storage.filesystem import FilesystemDriver
from cargohold.storage.inmemory import InMemoryDriver


def make_driver(name: str, params: dict[str, Any]) -> StorageDriver:
    if name == "filesystem":
        return FilesystemDriver.from_params(params)
    if name == "inmemory":
        return InMemoryDriver()
    raise RegistryError(ErrorCode.UNSUPPORTED, f"storage driver {name!r} is not supported yet")


class Registry:
    def __init__(self, config: Config, driver: StorageDriver | None = None) -> None:
        self.config = config
        self.driver = driver or make_driver(config.storage.driver, config.storage.params)
        self.blobs = BlobStore(self.driver)
        self.uploads = UploadManager(self.driver, self.blobs)
        self.manifests = ManifestStore(self.driver, self.blobs, config.validation)

    @property
    def delete_enabled(self) -> bool:
        return self.config.storage.delete_enabled

    def require_delete(self) -> None:
        if not self.config.storage.delete_enabled:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                "deletes are disabled on this registry (storage.delete.enabled is false)",
            )

    def require_writable(self) -> None:
        if self.config.storage.readonly:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                "the registry is in read-only mode (storage.maintenance.readonly)",
            )

    async def repositories(self) -> list[str]:
        return await list_repositories(self.driver)

    async def purge_uploads(self) -> int:
        purging = self.config.storage.purging
        with_uploads = await list_repositories(self.driver, marker="_uploads")
        return await self.uploads.purge(with_uploads, purging.age, purging.dryrun)
