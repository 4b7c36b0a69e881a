"""What the ``cargohold import`` and ``cargohold export`` subcommands do (their arguments are
in :mod:`.arguments`, which ``cargohold.cli`` loads; this module only when one of them runs).

Where images go or come from is one of: ``--root DIR`` (a storage root, offline),
``--config FILE`` (the registry:2 YAML a server uses: same storage, same validation rules; also
``$REGISTRY_CONFIGURATION_PATH``), or ``--to``/``--from HOST[:PORT]`` (a running registry, over
HTTP, with the TLS and login options). Exit codes: 0 done, 1 the archive or the registry said
no (nothing imported), 2 usage or configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import aiohttp

from cargohold.config import ConfigError, locate_config
from cargohold.errors import RegistryError
from cargohold.images.archive import read_archive
from cargohold.images.client import RegistryClient, RemoteError
from cargohold.images.exporter import Exporter, ExportItem, run_export
from cargohold.images.exporter import summary_lines as export_summary
from cargohold.images.files import ArchiveError, open_files
from cargohold.images.importer import (
    default_workers,
    plan_jobs,
    publish,
    verify_all,
)
from cargohold.images.importer import summary_lines as import_summary
from cargohold.images.names import Platform, UsageError, parse_destination, parse_reference
from cargohold.images.progress import Progress, human_size
from cargohold.images.target import (
    ExportSource,
    ImportTarget,
    LocalSource,
    LocalTarget,
    RemoteSource,
    RemoteTarget,
    TargetError,
)
from cargohold.registry.core import Registry


def run(args: argparse.Namespace) -> int:
    command = args.command
    progress = Progress("quiet" if args.quiet else None)
    try:
        with progress:
            if command == "import":
                return asyncio.run(_import(args, progress))
            return asyncio.run(_export(args, progress))
    except UsageError as e:
        progress.stop()
        print(f"cargohold {command}: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        progress.stop()
        print(f"cargohold {command}: configuration error: {e}", file=sys.stderr)
        return 2
    except (ArchiveError, TargetError, RemoteError) as e:
        progress.stop()
        tail = "; nothing was imported" if command == "import" else "; nothing was written"
        print(f"cargohold {command}: error: {e}{tail}", file=sys.stderr)
        return 1
    except RegistryError as e:
        progress.stop()
        print(f"cargohold {command}: error: {e.code.name}: {e.message}", file=sys.stderr)
        return 1
    except (OSError, aiohttp.ClientError) as e:
        # OSError: disk full, permissions, timeouts; ClientError: a connection dropped mid-body
        progress.stop()
        tail = "; nothing was imported" if command == "import" else "; nothing was written"
        print(f"cargohold {command}: error: {type(e).__name__}: {e}{tail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.stop()
        print(f"cargohold {command}: interrupted", file=sys.stderr)
        return 130


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        if args.password:
            raise UsageError("--password and --password-stdin exclude each other")
        if not args.username:
            raise UsageError("--password-stdin needs --username")
        return sys.stdin.readline().rstrip("\r\n")
    if args.password and not args.username:
        raise UsageError("--password needs --username")
    return str(args.password) if args.password is not None else None


def _client(args: argparse.Namespace) -> RegistryClient:
    return RegistryClient(
        args.remote,
        plain_http=args.plain_http,
        insecure=args.insecure,
        ca_cert=args.ca_cert,
        username=args.username,
        password=_password(args),
    )


def _check_remote_options(args: argparse.Namespace) -> None:
    remote_only = [
        flag
        for flag, value in (
            ("--plain-http", args.plain_http),
            ("--insecure", args.insecure),
            ("--ca-cert", args.ca_cert),
            ("--username", args.username),
            ("--password", args.password),
            ("--password-stdin", args.password_stdin),
        )
        if value
    ]
    if remote_only and not args.remote:
        verb = "--to" if args.command == "import" else "--from"
        raise UsageError(f"{', '.join(remote_only)} only apply with {verb} HOST")


def _local_registry(args: argparse.Namespace) -> tuple[Registry, str]:
    """The storage an offline command works on: --root, --config or $REGISTRY_CONFIGURATION_PATH."""
    # --root names the storage itself, so $REGISTRY_CONFIGURATION_PATH does not apply then.
    location = locate_config(args.config, root=args.root, from_environment=not args.root)
    path = location.path
    if not path and not args.root:
        verb = "--to" if args.command == "import" else "--from"
        raise UsageError(f"say where the images are: --root DIR, --config FILE or {verb} HOST")
    config = location.load()
    if args.root:
        config.storage.driver = "filesystem"
        config.storage.params = {**config.storage.params, "rootdirectory": args.root}
    description = args.root or f"{config.storage.rootdirectory} (from {path})"
    if args.command == "export" and not os.path.isdir(config.storage.rootdirectory):
        raise UsageError(f"{config.storage.rootdirectory} does not exist")
    return Registry(config), description


@contextlib.contextmanager
def _scratch(args: argparse.Namespace) -> Any:
    base = args.tmpdir or None
    path = tempfile.mkdtemp(prefix="cargohold-", dir=base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _import(args: argparse.Namespace, progress: Progress) -> int:
    _check_remote_options(args)
    dest = parse_destination(args.dest) if args.dest else None
    platform = Platform.parse(args.platform) if args.platform else None
    target: ImportTarget
    if args.remote:
        target = RemoteTarget(_client(args))
    else:
        registry, description = _local_registry(args)
        target = LocalTarget(registry, description)
    with _scratch(args) as tmpdir:
        tasks = []

        def on_gunzip(size: int) -> Callable[[int], None]:
            tasks.append(progress.task("decompressing archive", size))
            return tasks[-1].advance

        files, _ = open_files(args.file, tmpdir, on_gunzip)
        try:
            for task in tasks:
                task.finish()
            archive = read_archive(files, platform=platform, compress=args.compression == "gzip")
            jobs = plan_jobs(archive, dest)
            progress.info(
                f"{args.file}: {archive.format}, "
                + ", ".join(f"{job.repo}:{','.join(job.tags)}" for job in jobs)
            )
            for job in jobs:
                for note in job.image.notes:
                    progress.warn(note)
            try:
                # Connect (and log in) first: a typo in --to should not cost a full verification.
                await target.start(sorted({job.repo for job in jobs}))
                await asyncio.to_thread(
                    verify_all, files, jobs, tmpdir, progress, default_workers()
                )
                results = await publish(target, files, jobs, progress)
            finally:
                await target.close()
        finally:
            files.close()
    progress.stop()
    for line in import_summary(results, target.description):
        progress.result(line)
    return 0


async def _export(args: argparse.Namespace, progress: Progress) -> int:
    _check_remote_options(args)
    items = []
    for text in args.refs:
        repo, reference = parse_reference(text)
        items.append(ExportItem(repo, reference))
    if args.name:
        if len(items) != 1:
            raise UsageError("--name applies to a single image")
        items[0].name = args.name
    platform = Platform.parse(args.platform) if args.platform else None
    source: ExportSource
    if args.remote:
        source = RemoteSource(_client(args))
    else:
        registry, description = _local_registry(args)
        source = LocalSource(registry, description)
    output = args.output
    if args.format == "docker" and os.path.isdir(output):
        raise UsageError(f"{output} is a directory; the docker format is a single tar file")
    with _scratch(args) as tmpdir:
        await source.start([item.repo for item in items])
        try:
            exporter = Exporter(source, progress, tmpdir, platform)
            results = await run_export(exporter, items, output, args.format)
        finally:
            await source.close()
    progress.stop()
    kind = (
        args.format
        if args.format == "docker"
        else ("OCI layout tar" if output.endswith(".tar") else "OCI layout")
    )
    for line in export_summary(results, output, kind):
        progress.result(line)
    progress.result(f"wrote {output}: {human_size(_disk_size(output))}")
    return 0


def _disk_size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for directory, _, names in os.walk(path):
        total += sum(os.path.getsize(os.path.join(directory, n)) for n in names)
    return total
