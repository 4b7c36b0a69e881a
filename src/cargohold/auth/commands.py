"""``cargohold cert`` and ``cargohold htpasswd``: the openssl and htpasswd steps of a registry:2
set-up, without either tool.

    cargohold cert --out DIR --host registry.example.com --host 10.0.0.5 [--port 5000]
    cargohold cert --out DIR --client ci-runner            # a client certificate for mTLS
    cargohold htpasswd add FILE USER [--password-stdin]    # bcrypt ($2y$), atomic rewrite
    cargohold htpasswd delete FILE USER
    cargohold htpasswd list FILE
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from cargohold.auth import htpasswd

COMMANDS = ("cert", "htpasswd")
# certs.LEAF_DAYS, repeated so that building the command line does not import cryptography
# (which would then sit in every server process); tests/auth checks that the two agree.
LEAF_DAYS = 825


def register(subparsers: Any) -> None:
    """Add the ``cert`` and ``htpasswd`` subcommands to the main parser's subparsers."""
    cert = subparsers.add_parser(
        "cert",
        help="make a private CA and a server (or client) certificate",
        description="Make a private CA (reused when DIR already has one) and a server "
        "certificate for the given host names and IP addresses, then print where each client "
        "(docker, podman, skopeo, containerd, the system store) wants the CA. With --client "
        "NAME, issue a client certificate for mutual TLS instead.",
    )
    cert.add_argument("--out", required=True, metavar="DIR", help="directory for the files")
    cert.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="DNS name or IP address the registry is reached at (repeatable; the first is the "
        "certificate's common name)",
    )
    cert.add_argument(
        "--port", type=int, default=5000, help="registry port, for the printed paths (5000)"
    )
    cert.add_argument("--client", metavar="NAME", help="issue a client certificate NAME.cert")
    cert.add_argument("--days", type=int, default=LEAF_DAYS, help=f"validity ({LEAF_DAYS} days)")
    cert.add_argument(
        "--key-type", choices=("ec", "rsa"), default="ec", help="ECDSA P-256 (default) or RSA"
    )

    ht = subparsers.add_parser(
        "htpasswd",
        help="add, delete or list users of an htpasswd file",
        description="Edit a registry:2-compatible htpasswd file: bcrypt ($2y$) entries, as "
        "`htpasswd -B` writes them. The file is replaced atomically; a running registry picks "
        "the change up within a second.",
    )
    actions = ht.add_subparsers(dest="htpasswd_action", metavar="ACTION")
    add = actions.add_parser("add", help="add a user or change their password")
    add.add_argument("file")
    add.add_argument("user")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (one line) instead of prompting",
    )
    add.add_argument(
        "--cost", type=int, default=htpasswd.DEFAULT_COST, help="bcrypt cost, 4-16 (10)"
    )
    delete = actions.add_parser("delete", help="remove a user")
    delete.add_argument("file")
    delete.add_argument("user")
    listing = actions.add_parser("list", help="print the user names")
    listing.add_argument("file")


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "cert":
            return _cert(args)
        if args.command == "htpasswd":
            return _htpasswd(args)
    except (OSError, ValueError) as exc:
        print(f"cargohold {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2


def _cert(args: argparse.Namespace) -> int:
    from cargohold.auth import certs

    if not 1 <= args.port <= 65535:
        raise ValueError("--port must be 1-65535")
    if args.days < 1:
        raise ValueError("--days must be positive")
    if args.client:
        issued = certs.make_client_files(args.out, args.client, args.key_type, args.days)
        print(certs.client_instructions(issued, args.client, args.host, args.port), end="")
        return 0
    if not args.host:
        raise ValueError("give at least one --host (DNS name or IP address clients use)")
    certs.parse_hosts(args.host)  # reject a bad name before writing anything
    issued = certs.make_server_files(args.out, args.host, args.key_type, args.days)
    print(certs.server_instructions(issued, args.host, args.port), end="")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        data = sys.stdin.read()
        return data.removesuffix("\n").removesuffix("\r")
    if not sys.stdin.isatty():
        raise ValueError("no terminal to prompt on: pass the password with --password-stdin")
    first = getpass.getpass(f"Password for {args.user}: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("passwords do not match")
    return first


def _htpasswd(args: argparse.Namespace) -> int:
    action = args.htpasswd_action
    if action == "add":
        if not 4 <= args.cost <= 16:
            raise ValueError("--cost must be 4-16")
        htpasswd.check_user_name(args.user)
        existed = htpasswd.set_user(args.file, args.user, _read_password(args), args.cost)
        print(f"{'updated' if existed else 'added'} {args.user} in {args.file}", file=sys.stderr)
        return 0
    if action == "delete":
        if not htpasswd.delete_user(args.file, args.user):
            print(f"cargohold htpasswd: no user {args.user} in {args.file}", file=sys.stderr)
            return 1
        print(f"deleted {args.user} from {args.file}", file=sys.stderr)
        return 0
    if action == "list":
        if not os.path.exists(args.file):
            raise FileNotFoundError(f"no such file: {args.file}")
        for user, hashed in htpasswd.read_entries(args.file):
            note = "" if hashed.startswith(htpasswd.BCRYPT_PREFIXES) else "  (not bcrypt: ignored)"
            print(f"{user}{note}")
        return 0
    print("cargohold htpasswd: expected add, delete or list", file=sys.stderr)
    return 2
