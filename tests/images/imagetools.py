"""Helpers for the import/export tests: run the CLI, build archives, look into a storage root.

(A module of its own rather than the conftest, so tests can import it by name.)
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from support.clients import Skopeo
from support.images import TestImage
from support.servers import cargohold_env

REPOSITORIES = Path("docker/registry/v2/repositories")


def cargohold(
    *args: str | Path,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """``python -m cargohold ARGS`` with ``src/`` on the path; asserts success unless ``check``."""
    import os

    proc = subprocess.run(
        [sys.executable, "-m", "cargohold", *map(str, args)],
        capture_output=True,
        text=True,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        env={**os.environ, **cargohold_env(), **(env or {})},
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"cargohold {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc


def repo_dir(root: Path, repo: str) -> Path:
    return root / REPOSITORIES / repo


def tags_of(root: Path, repo: str) -> list[str]:
    tags = repo_dir(root, repo) / "_manifests" / "tags"
    return sorted(p.name for p in tags.iterdir()) if tags.is_dir() else []


def tagged_digest(root: Path, repo: str, tag: str) -> str:
    link = repo_dir(root, repo) / "_manifests" / "tags" / tag / "current" / "link"
    return link.read_text().strip()


def revisions_of(root: Path, repo: str) -> list[str]:
    revs = repo_dir(root, repo) / "_manifests" / "revisions" / "sha256"
    return sorted(f"sha256:{p.name}" for p in revs.iterdir()) if revs.is_dir() else []


def blob_bytes(root: Path, digest: str) -> bytes:
    hexpart = digest.removeprefix("sha256:")
    return (root / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data").read_bytes()


def stored_manifest(root: Path, repo: str, tag: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(blob_bytes(root, tagged_digest(root, repo, tag)))
    return data


def tar_directory(src: Path, dest: Path, *, compress: bool = False) -> Path:
    """A tar (optionally gzip'd) of the files below ``src``, names relative to it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
    data = buf.getvalue()
    dest.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return dest


def docker_archive(skopeo: Skopeo, image: TestImage, dest: Path, name: str) -> Path:
    """A ``docker save``-style archive of ``image`` (written by skopeo), tagged ``name``."""
    if dest.exists():
        dest.unlink()
    skopeo.copy(image.oci_ref(), f"docker-archive:{dest}:{name}")
    return dest


def merge_docker_archives(archives: list[Path], dest: Path) -> Path:
    """One multi-image docker-save archive from several (what `docker save a b` writes)."""
    entries: list[Any] = []
    seen: set[str] = set()
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
        for archive in archives:
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    if member.name == "manifest.json":
                        entries.extend(json.load(tar.extractfile(member)))  # type: ignore[arg-type]
                        continue
                    if member.name in seen or member.name == "repositories":
                        continue
                    seen.add(member.name)
                    fileobj = tar.extractfile(member) if member.isreg() else None
                    out.addfile(member, fileobj)
        data = json.dumps(entries).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
    return dest


def flip_byte_in_member(archive: Path, dest: Path, pick: Callable[[tarfile.TarInfo], bool]) -> Path:
    """Copy a tar, flipping one bit in the middle of the first member ``pick`` accepts."""
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.isreg() and pick(m))
    data = bytearray(archive.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x01
    dest.write_bytes(bytes(data))
    return dest


def copy_layout(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest
