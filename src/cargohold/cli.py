"""The ``cargohold`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cargohold import __version__
from cargohold.admin.commands import COMMANDS as ADMIN_COMMANDS
from cargohold.admin.commands import register as register_admin
from cargohold.admin.commands import run as run_admin
from cargohold.auth.commands import COMMANDS as AUTH_COMMANDS
from cargohold.auth.commands import register as register_auth
from cargohold.auth.commands import run as run_auth
from cargohold.config import ConfigError, locate_config
from cargohold.images.arguments import register as register_images
from cargohold.images.arguments import run as run_images


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cargohold",
        description="A fast, self-hosted container image registry; a drop-in for registry:2.",
    )
    parser.add_argument("--version", action="version", version=f"cargohold {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the registry",
        description="Run the registry. With no CONFIG it listens on :5000 and stores images "
        "under a local data directory; CONFIG is a registry:2 YAML file, and REGISTRY_* "
        "environment variables override it exactly as they do for registry:2.",
    )
    serve.add_argument(
        "config",
        nargs="?",
        help="registry:2-format YAML config file "
        "(default: $REGISTRY_CONFIGURATION_PATH, else the embedded default)",
    )
    serve.add_argument(
        "--addr", help="listen address, e.g. :5000 or 127.0.0.1:5000 (overrides http.addr)"
    )
    serve.add_argument(
        "--root", help="storage directory (overrides storage.filesystem.rootdirectory)"
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port (default 1)"
    )
    # Internal: how cargohold.supervisor starts a replacement for worker I.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    register_auth(sub)  # cert, htpasswd
    register_images(sub)
    register_admin(sub)  # garbage-collect, du, retention
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command in ADMIN_COMMANDS:
        return run_admin(args)
    if args.command in AUTH_COMMANDS:
        return run_auth(args)
    if args.command in ("import", "export"):
        return run_images(args)
    parser.print_help()
    return 2


def _serve(args: argparse.Namespace) -> int:
    from cargohold.server import serve

    try:
        config = locate_config(args.config, root=args.root).load()
    except (ConfigError, OSError) as e:
        print(f"cargohold: configuration error: {e}", file=sys.stderr)
        return 2
    if args.addr:
        config.http.addr = args.addr
    if args.root:
        if config.storage.driver != "filesystem":
            print("cargohold: --root only applies to filesystem storage", file=sys.stderr)
            return 2
        config.storage.params["rootdirectory"] = args.root
    if args.workers < 1:
        print("cargohold: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and config.storage.driver == "inmemory":
        print("cargohold: inmemory storage cannot be shared by several workers", file=sys.stderr)
        return 2
    try:
        return serve(config, args.workers, args.worker_index)
    except (OSError, ConfigError) as e:
        print(f"cargohold: cannot start: {e}", file=sys.stderr)
        return 1
