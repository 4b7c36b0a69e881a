"""A short history of garbage collections, kept in the store so every worker can show it.

Online collections run in worker 0 and offline ones in another process entirely, so the web
UI (served by any worker or replica) cannot ask the collector what it did. Each finished
collection therefore writes a small JSON summary to
``/docker/registry/v2/_cargohold/gc/runs/<finished>-<id>`` (registry:2 ignores ``_cargohold``).
The name starts with the finish time, zero-padded, so a listing sorts oldest first; only the
newest :data:`KEEP` records are kept. Recording is best effort: a store that refuses the write
must not turn a successful collection into a failed one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from cargohold.registry.gc import GCReport
from cargohold.storage import paths
from cargohold.storage.driver import PathNotFoundError, StorageDriver, StorageError

log = logging.getLogger("cargohold.gc")

RUNS = f"{paths.GC}/runs"
KEEP = 20


@dataclass(frozen=True, slots=True)
class GCRun:
    id: str
    started: float
    finished: float
    dry_run: bool
    delete_untagged: bool
    online: bool
    blobs_deleted: int
    manifests_deleted: int
    bytes_freed: int
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started": self.started,
            "finished": self.finished,
            "dryRun": self.dry_run,
            "deleteUntagged": self.delete_untagged,
            "online": self.online,
            "blobsDeleted": self.blobs_deleted,
            "manifestsDeleted": self.manifests_deleted,
            "bytesFreed": self.bytes_freed,
            "error": self.error,
        }


def _safe_id(text: str) -> str:
    return "".join(c for c in text if c.isalnum() or c in "-_")[:64] or "run"


async def record(driver: StorageDriver, report: GCReport) -> None:
    """Write the summary of a finished collection and drop records beyond :data:`KEEP`."""
    run = GCRun(
        id=report.id,
        started=report.started,
        finished=report.finished or report.started,
        dry_run=report.dry_run,
        delete_untagged=report.delete_untagged,
        online=report.online,
        blobs_deleted=len(report.blobs_deleted),
        manifests_deleted=len(report.manifests_deleted),
        bytes_freed=report.bytes_freed,
        error=report.error,
    )
    name = f"{int(run.finished * 1000):015d}-{_safe_id(run.id)}"
    try:
        await driver.put_content(f"{RUNS}/{name}", json.dumps(run.to_json()).encode())
        entries = sorted(await driver.list(RUNS))
        for old in entries[:-KEEP]:
            with contextlib.suppress(PathNotFoundError):
                await driver.delete(old)
    except (StorageError, OSError) as exc:
        log.warning("could not record the garbage collection run %s: %s", run.id, exc)


async def recent(driver: StorageDriver, limit: int = KEEP) -> list[GCRun]:
    """The newest runs first; unreadable records are skipped."""
    try:
        entries = sorted(await driver.list(RUNS), reverse=True)[:limit]
    except PathNotFoundError:
        return []
    runs: list[GCRun] = []
    for entry in entries:
        try:
            doc = json.loads(await driver.get_content(entry))
            runs.append(
                GCRun(
                    id=str(doc["id"]),
                    started=float(doc["started"]),
                    finished=float(doc["finished"]),
                    dry_run=bool(doc["dryRun"]),
                    delete_untagged=bool(doc["deleteUntagged"]),
                    online=bool(doc["online"]),
                    blobs_deleted=int(doc["blobsDeleted"]),
                    manifests_deleted=int(doc["manifestsDeleted"]),
                    bytes_freed=int(doc["bytesFreed"]),
                    error=None if doc.get("error") is None else str(doc["error"]),
                )
            )
        except (PathNotFoundError, ValueError, KeyError, TypeError):
            continue
    return runs
