"""The registry the server holds: the domain's :class:`Registry` and the pull-through mirrors
over its stores.

Put together here, above both, and not in ``registry.core``: the mirrors read and write through
the registry's blob and manifest stores, so ``mirror`` imports ``registry``; the registry
needs nothing of the mirrors, and importing them from ``registry.core`` made the two packages
point at each other (``tests/test_import_layers.py``)."""

from __future__ import annotations

from cargohold.config import Config
from cargohold.mirror.service import Mirrors
from cargohold.registry.core import Registry
from cargohold.storage.driver import StorageDriver


class MirroredRegistry(Registry):
    """A :class:`Registry` whose ``mirrors`` (none when the config names none) serve the
    mirrored names; what the HTTP API, the UI and the admin commands are given."""

    def __init__(self, config: Config, driver: StorageDriver | None = None) -> None:
        super().__init__(config, driver)
        self.mirrors = Mirrors(
            config.mirrors,
            self.driver,
            self.blobs,
            self.manifests,
            config.redis,
            readonly=config.storage.readonly,
            verified=self.verifier.trust,
        )

    async def close(self) -> None:
        await self.mirrors.close()
        await super().close()
