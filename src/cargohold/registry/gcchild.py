"""An online garbage collection run in a child process, so its peak leaves with the child.

A collection's inventory (every link and blob of the store, the references of every manifest)
is the largest short-lived allocation a worker makes. Freed, it still is not returned to the
system: CPython's small-object allocator keeps an arena as long as one object in it lives, and
the requests the worker serves meanwhile leave cache entries and the like in the arenas the
peak created. In the soak the worker that ran the collections grew with them (+2 MiB/min,
issue 17 point 10) while the other stayed flat. A child process gives all of it back when it
exits; the worker only waits for its report.

The child builds its own driver stack from the worker's configuration (pickled on its stdin,
the report pickled back on its stdout: both ends are this program). It shares nothing with the
worker but the store, which is what other workers and replicas share with a collection
already: the lease, the condemned batches the writers check, and the journal of what was
deleted, from which every process drops its cached copies (:class:`gc.InvalidationWatcher`).
A store only one process can see (``inmemory``) is collected in the worker, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import sys
from typing import Any

from cargohold.config import Config
from cargohold.digest import Digest
from cargohold.registry.gc import GarbageCollector, GCError, GCOptions, GCReport

log = logging.getLogger("cargohold.gc")

SHARED_DRIVERS = frozenset({"filesystem", "s3"})


def usable(config: Config) -> bool:
    """Whether a child process sees the same store (not an in-memory one)."""
    return config.storage.driver in SHARED_DRIVERS


def deleted_digests(report: GCReport) -> set[Digest]:
    """What the collection deleted, for the worker's caches (the child's ``forget``)."""
    found = {Digest.try_parse(d) for _, d in report.manifests_deleted}
    found |= {Digest.try_parse(d) for d in report.blobs_deleted}
    return {d for d in found if d is not None}


async def collect(config: Config, options: GCOptions) -> GCReport:
    """Run ``GarbageCollector.run(options)`` in a child process; GCError (GCBusy included)
    raised there is raised here. Cancelled, the child is killed: a collection stopped at
    any point leaves the store consistent (its lease expires; ``docs/ordering.md``)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cargohold.registry.gcchild",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await proc.communicate(pickle.dumps((config, options)))
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await proc.wait()
        raise
    try:
        result = pickle.loads(out)
    except Exception:
        raise RuntimeError(
            f"the garbage collection process exited with {proc.returncode} and no report"
        ) from None
    if isinstance(result, BaseException):
        raise result
    if not isinstance(result, GCReport):
        raise RuntimeError(f"the garbage collection process answered {type(result).__name__}")
    return result


def _child() -> None:
    from cargohold.registry.core import make_driver
    from cargohold.registry.scaleout import layer_driver

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    config, options = pickle.loads(sys.stdin.buffer.read())
    storage = config.storage
    base = make_driver(storage.driver, storage.params, storage.redirect_expirydelay)
    driver = layer_driver(config, base).driver
    result: Any
    try:
        result = asyncio.run(GarbageCollector(driver).run(options))
    except GCError as e:
        result = e
    except Exception as e:  # reported by the worker like a collection that failed there
        log.exception("garbage collection failed")
        result = RuntimeError(f"{type(e).__name__}: {e}")
    sys.stdout.buffer.write(pickle.dumps(result))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    _child()
