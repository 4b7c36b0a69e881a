"""The arguments of ``cargohold import`` and ``cargohold export``.

``cargohold.cli`` calls :func:`register` with its subparsers and :func:`run` for these two
commands. The work is in :mod:`.commands`, imported only when one of them runs: every other
command, ``serve`` above all, would otherwise load the archive, tar and registry-client code
into each worker (~1 MiB resident apiece).
"""

from __future__ import annotations

import argparse
from typing import Any

COMMANDS = ("import", "export")


def run(args: argparse.Namespace) -> int:
    from cargohold.images import commands

    return commands.run(args)


def register(subparsers: Any) -> None:
    """Add ``import`` and ``export`` to the ``cargohold`` subparsers."""
    imp = subparsers.add_parser(
        "import",
        help="load a docker save archive or OCI layout into a registry",
        description="Load the images of FILE (a `docker save` archive, or an OCI image layout as "
        "a directory or tar; gzip-compressed or not) into a local storage root or a running "
        "registry. Every blob is verified before anything is written; a broken archive is "
        "refused and leaves nothing behind. Without REPO every image is imported under the "
        "names the archive gives it; with REPO[:TAG] a single image is renamed, or the images "
        "of a multi-image archive named so are selected.",
    )
    imp.add_argument("file", metavar="FILE", help="archive (.tar, .tar.gz) or OCI layout dir")
    imp.add_argument("dest", metavar="REPO[:TAG]", nargs="?", help="repository (and tag)")
    where = imp.add_mutually_exclusive_group()
    _local_options(where)
    where.add_argument(
        "--to", metavar="HOST[:PORT]", dest="remote", help="a running registry (HTTP API)"
    )
    _remote_options(imp)
    imp.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="import only this platform of a multi-platform image (default: the whole index)",
    )
    imp.add_argument(
        "--compression",
        choices=("gzip", "none"),
        default="gzip",
        help="docker-save layers: gzip them as `docker push` does (default), or store them "
        "uncompressed as saved",
    )
    _common_options(imp)

    exp = subparsers.add_parser(
        "export",
        help="write images as a docker load archive or an OCI layout",
        description="Write images from a local storage root or a running registry to FILE: a "
        "`docker load`-compatible archive (--format docker, the default) or an OCI image layout "
        "(--format oci: a tar when FILE ends in .tar, else a directory). OCI output keeps every "
        "digest; the docker format keeps the image ID (config) but not the manifest.",
    )
    exp.add_argument("refs", metavar="REPO:TAG|REPO@DIGEST", nargs="+", help="images to export")
    exp.add_argument("-o", "--output", metavar="FILE", required=True, help="where to write")
    exp.add_argument("--format", choices=("docker", "oci"), default="docker")
    where = exp.add_mutually_exclusive_group()
    _local_options(where)
    where.add_argument(
        "--from", metavar="HOST[:PORT]", dest="remote", help="a running registry (HTTP API)"
    )
    _remote_options(exp)
    exp.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="of a multi-platform image export this platform (docker format default: "
        "linux/amd64 or the only one; OCI default: the whole index)",
    )
    exp.add_argument(
        "--name",
        metavar="NAME",
        help="image name written into the archive (RepoTags / io.containerd.image.name) "
        "instead of REPO:TAG; only with a single image",
    )
    _common_options(exp)


def _local_options(group: Any) -> None:
    group.add_argument("--root", metavar="DIR", help="local storage root (offline)")
    group.add_argument(
        "--config", metavar="FILE", help="registry:2 YAML config naming the storage (offline)"
    )


def _remote_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plain-http", action="store_true", help="talk http, not https")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="skip TLS verification, and fall back to http if the registry has no TLS",
    )
    parser.add_argument("--ca-cert", metavar="FILE", help="CA bundle to verify the registry with")
    parser.add_argument("-u", "--username", help="login for Basic or token authentication")
    parser.add_argument("-p", "--password", help="password (prefer --password-stdin)")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tmpdir", metavar="DIR", help="scratch space for decompressed archives and layers"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress, only the summary and errors"
    )
