"""Helpers of the integrity tests: run ``cargohold fsck`` and read its report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.ops.helpers import V2, run_cli, write_config


def fsck(config: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    """``cargohold fsck CONFIG --json FLAGS``: exit code and the parsed report."""
    proc = run_cli("fsck", str(config), "--json", *flags, check=False)
    assert proc.returncode in (0, 1), (proc.returncode, proc.stdout, proc.stderr)
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    assert report["clean"] == (proc.returncode == 0), report
    return proc.returncode, report


def kinds(report: dict[str, Any]) -> list[str]:
    return sorted(p["kind"] for p in report["problems"])


def problem(report: dict[str, Any], kind: str, **match: str) -> dict[str, Any]:
    found = [
        p
        for p in report["problems"]
        if p["kind"] == kind and all(p.get(k) == v for k, v in match.items())
    ]
    assert len(found) == 1, (kind, match, report["problems"])
    return found[0]


def store_config(tmp_path: Path, root: Path, extra: dict[str, Any] | None = None) -> Path:
    return write_config(tmp_path / f"fsck-{os.urandom(3).hex()}.yml", root, extra)


def repo_dir(root: Path, name: str) -> Path:
    return root / V2 / "repositories" / name


def blob_file(root: Path, digest: str) -> Path:
    alg, hexpart = digest.split(":")
    return root / V2 / "blobs" / alg / hexpart[:2] / hexpart / "data"


def write_link(path: Path, digest: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(digest)
