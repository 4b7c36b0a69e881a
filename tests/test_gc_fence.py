"""The fence forgets a collection's condemned batch once the batch file is gone."""

from __future__ import annotations

import asyncio
import json
import time

from cargohold.digest import Digest
from cargohold.registry.gc import Fence
from cargohold.storage import paths
from cargohold.storage.inmemory import InMemoryDriver


def test_finished_batches_are_dropped_at_the_next_look() -> None:
    async def main() -> None:
        driver = InMemoryDriver()
        fence = Fence(driver)
        digests = [str(Digest("sha256", f"{i:064x}")) for i in range(100)]
        for batch in ("a", "b"):
            doc = {"id": batch, "expires": time.time() + 60, "digests": digests}
            await driver.put_content(paths.gc_condemned(batch), json.dumps(doc).encode())
        assert len(await fence._batches()) == 2
        assert len(fence._parsed) == 2
        await driver.delete(paths.gc_condemned("a"))  # that collection finished
        assert [b.id for b in await fence._batches()] == ["b"]
        assert [fence._parsed[p][2].id for p in fence._parsed] == ["b"]
        await driver.delete(paths.gc_condemned("b"))
        assert await fence._batches() == []
        assert fence._parsed == {}

    asyncio.run(main())
