"""``cargohold garbage-collect``, ``du``, ``retention`` and ``fsck``.

``garbage-collect CONFIG`` behaves as registry:2's ``registry garbage-collect``: same flags
(``--dry-run/-d``, ``--delete-untagged/-m``, ``--quiet/-q``), same output, and like it, it
expects the registry to be stopped or read-only. ``--online`` instead asks the running
registry (its ``http.debug.addr`` listener) to collect while it keeps serving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from cargohold.config import Config, ConfigError, locate_config, parse_addr

COMMANDS = ("garbage-collect", "du", "retention", "fsck")


def register(sub: Any) -> None:
    gc = sub.add_parser(
        "garbage-collect",
        help="delete blobs no manifest references (registry:2's garbage-collect)",
        description="Mark every blob a manifest references, then delete the others. Like "
        "registry:2's command, run it with the registry stopped or read-only, or use --online.",
    )
    gc.add_argument("config", nargs="?", help="registry:2-format YAML config file")
    gc.add_argument("-d", "--dry-run", action="store_true", help="only print what would go")
    gc.add_argument(
        "-m",
        "--delete-untagged",
        action="store_true",
        help="also delete manifests that no tag points to (and what only they reference)",
    )
    gc.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    gc.add_argument(
        "--online",
        action="store_true",
        help="ask the running registry (http.debug.addr) to collect while it serves",
    )
    gc.add_argument("--json", action="store_true", help="print the report as JSON")

    du = sub.add_parser(
        "du",
        help="storage used per repository, shared blobs counted once",
        description="Storage used per repository (shared blobs counted once, and shown "
        "separately), and what garbage-collect would free.",
    )
    du.add_argument("config", nargs="?", help="registry:2-format YAML config file")
    du.add_argument("--json", action="store_true", help="print the report as JSON")
    du.add_argument("--bytes", action="store_true", help="exact byte counts")
    du.add_argument(
        "--rebuild",
        action="store_true",
        help="recompute the quota usage index from the storage (safe while serving)",
    )

    ret = sub.add_parser(
        "retention",
        help="show (or apply) what the retention policies would delete",
        description="Evaluate the config's retention policies. Without --apply this is a dry "
        "run; applied tags are removed and, for policies with delete_untagged, the manifests "
        "left untagged; blobs are freed by the next garbage collection.",
    )
    ret.add_argument("config", nargs="?", help="registry:2-format YAML config file")
    ret.add_argument("--apply", action="store_true", help="delete what the policies select")
    ret.add_argument("--json", action="store_true", help="print the report as JSON")

    fsck = sub.add_parser(
        "fsck",
        help="check the store (links, tags, manifests, blobs) and repair what can be repaired",
        description="Check the whole registry:2 layout: links, tags, every manifest's "
        "references and, with --verify-blobs, every blob's bytes. Exit 0 when clean, 1 when "
        "problems were found, 2 on usage errors or when another maintenance run holds the "
        "lease. Safe while the registry serves; --repair takes garbage collection's lease.",
    )
    fsck.add_argument("config", nargs="?", help="registry:2-format YAML config file")
    fsck.add_argument("--verify-blobs", action="store_true", help="hash every blob")
    fsck.add_argument(
        "--repair",
        action="store_true",
        help="remove dangling tags and links and debris, write missing links, quarantine "
        "corrupt blobs",
    )
    fsck.add_argument("--json", action="store_true", help="print the report as JSON")


def _config(args: argparse.Namespace) -> Config:
    return locate_config(args.config).load()


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except (ConfigError, OSError) as e:
        print(f"cargohold: configuration error: {e}", file=sys.stderr)
        return 2
    try:
        if args.command == "garbage-collect":
            if args.online:
                return _gc_online(config, args)
            return asyncio.run(_gc_offline(config, args))
        if args.command == "du":
            return asyncio.run(_du(config, args))
        if args.command == "retention":
            return asyncio.run(_retention(config, args))
        if args.command == "fsck":
            return asyncio.run(_fsck(config, args))
    except Exception as e:  # a clear line, not a traceback, for operators
        from cargohold.registry.gc import GCError

        if isinstance(e, GCError | OSError):
            print(f"cargohold: {args.command}: {e}", file=sys.stderr)
            return 1
        raise
    return 2


def _registry(config: Config) -> Any:
    from cargohold.mirror.mirrored import MirroredRegistry

    return MirroredRegistry(config)


async def _close(registry: Any) -> None:
    close = getattr(registry, "close", None)
    if close is not None:
        await close()


async def _gc_offline(config: Config, args: argparse.Namespace) -> int:
    from cargohold.registry import gcruns
    from cargohold.registry.gc import GarbageCollector, GCOptions

    registry = _registry(config)
    quiet = args.quiet or args.json
    collector = GarbageCollector(registry.driver, emit=None if quiet else print)
    try:
        report = await collector.run(
            GCOptions(dry_run=args.dry_run, delete_untagged=args.delete_untagged)
        )
        await gcruns.record(registry.driver, report)  # shown by the web UI's storage page
        if not args.dry_run and registry.quotas.active:
            await registry.quotas.rebuild()  # what was unlinked no longer counts
    finally:
        await _close(registry)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    return 0


def _gc_online(config: Config, args: argparse.Namespace) -> int:
    if not config.debug.addr:
        print("cargohold: --online needs http.debug.addr in the config", file=sys.stderr)
        return 2
    host, port = parse_addr(config.debug.addr)
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    query = urllib.parse.urlencode(
        {
            "dryrun": str(args.dry_run).lower(),
            "deleteuntagged": str(args.delete_untagged).lower(),
            "wait": "true",
        }
    )
    request = urllib.request.Request(f"http://{host}:{port}/admin/gc?{query}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=24 * 3600) as response:
            report = json.loads(response.read())
    except urllib.error.HTTPError as e:
        print(f"cargohold: the registry answered {e.code}: {e.read().decode()}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cargohold: cannot reach the registry at {host}:{port}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    elif not args.quiet:
        for item in report.get("manifestsDeleted", []):
            print(f"manifest deleted: {item['repository']}@{item['digest']}")
        for digest in report.get("blobsDeleted", []):
            print(f"blob {'eligible for deletion' if args.dry_run else 'deleted'}: {digest}")
        print(
            f"{report.get('blobsMarked', 0)} blobs marked, "
            f"{len(report.get('blobsDeleted', []))} blobs and "
            f"{len(report.get('manifestsDeleted', []))} manifests "
            f"{'eligible for deletion' if args.dry_run else 'deleted'}, "
            f"{report.get('bytesFreed', 0)} bytes"
        )
    return 0 if not report.get("error") else 1


async def _du(config: Config, args: argparse.Namespace) -> int:
    from cargohold.mirror.upkeep import format_usage, usage
    from cargohold.registry.quota import format_quotas
    from cargohold.registry.usage import disk_usage, format_report

    registry = _registry(config)
    quotas: list[dict[str, object]] = []
    try:
        if args.rebuild and not registry.quotas.active:
            print("cargohold: du --rebuild: the config has no quotas", file=sys.stderr)
            return 2
        report = await disk_usage(registry.driver)
        if registry.quotas.active:
            if args.rebuild:
                await registry.quotas.rebuild()
            quotas = await registry.quotas.report()
        mirrors = await usage(registry.mirrors)
    finally:
        await _close(registry)
    if args.json:
        doc = {**report.to_json(), "quotas": quotas}
        if mirrors:
            doc["mirrors"] = [m.to_json() for m in mirrors]
        print(json.dumps(doc, indent=2))
    else:
        print(format_report(report, exact=args.bytes))
        if quotas:
            print("\n" + format_quotas(quotas, exact=args.bytes))
        if mirrors:
            print("\n" + format_usage(mirrors, exact=args.bytes))
    return 0


async def _retention(config: Config, args: argparse.Namespace) -> int:
    from cargohold.registry.retention import RetentionEngine, format_report

    if config.retention is None or not config.retention.policies:
        print("cargohold: the config has no retention policies", file=sys.stderr)
        return 2
    registry = _registry(config)
    try:
        engine = RetentionEngine(
            registry.driver,
            config.retention,
            config.storage.gc.graceperiod,
            registry.governance.rules,  # immutable tags are kept
        )
        report = await engine.run(dry_run=not args.apply)
    finally:
        await _close(registry)
    _print_report(report, args.json, format_report)
    return 0


async def _fsck(config: Config, args: argparse.Namespace) -> int:
    from cargohold.registry.fsck import Fsck, FsckBusy, format_report

    registry = _registry(config)
    try:
        with _progress(enabled=args.verify_blobs and sys.stderr.isatty()) as progress:
            checker = Fsck(
                registry.driver,
                index_children=config.validation.indexes_platforms,
                platform_list=config.validation.indexes_platformlist,
                progress=progress,
            )
            report = await checker.run(repair=args.repair, verify_blobs=args.verify_blobs)
    except FsckBusy as e:
        print(f"cargohold: fsck: {e}", file=sys.stderr)
        return 2
    finally:
        await _close(registry)
    _print_report(report, args.json, format_report)
    return 0 if report.clean else 1


def _print_report(report: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """Every admin command prints its report the same way: JSON for scripts, text for people."""
    print(json.dumps(report.to_json(), indent=2) if as_json else text(report))


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A ``rich`` progress bar (bytes hashed) on a terminal; None elsewhere."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:

        def start(total: int) -> Any:
            task = bar.add_task("verifying blobs", total=total)
            return lambda done, _total: bar.advance(task, done)

        yield start
