"""Image references and platforms, as the import/export commands and archives spell them.

Archives name images in several dialects: docker ``RepoTags`` (``busybox:latest``,
``localhost:5000/team/app:1``), containerd's ``io.containerd.image.name``
(``docker.io/library/busybox:latest``) and OCI's ``org.opencontainers.image.ref.name``, which
is usually a bare tag. A registry repository name has no host, so every dialect is reduced to
``(repository, tag)`` with the host dropped, and Docker Hub's implicit ``library/`` dropped too so
that ``docker.io/library/busybox`` and ``busybox`` name the same repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cargohold.digest import TAG_RE, Digest, check_name
from cargohold.errors import RegistryError

DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


class UsageError(Exception):
    """The command line asks for something impossible; the message says what to type instead."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A name found in an archive: either part may be missing (OCI ref names are bare tags)."""

    repo: str | None
    tag: str | None

    def __str__(self) -> str:
        if self.repo is None:
            return f":{self.tag}" if self.tag else "(unnamed)"
        return f"{self.repo}:{self.tag}" if self.tag else self.repo


def split_host(name: str) -> tuple[str | None, str]:
    """Docker's rule: a first component with ``.`` or ``:``, or ``localhost``, is a registry."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, name


def normalise_repo(name: str) -> str:
    host, path = split_host(name)
    if host in DOCKER_HUB_HOSTS and path.startswith("library/") and path.count("/") == 1:
        path = path.removeprefix("library/")
    return path


def parse_archive_name(name: str) -> Ref:
    """A docker ``RepoTag``, containerd image name or OCI ref name → :class:`Ref`.

    A string that is a valid tag and has no ``/`` or ``:`` is read as a bare tag, the way
    skopeo and buildkit write ``org.opencontainers.image.ref.name``.
    """
    name = name.strip()
    if "@" in name:
        name = name.split("@", 1)[0]
    if "/" not in name and ":" not in name and TAG_RE.match(name):
        # "latest", "v1.2": a bare tag. A bare repository name ("busybox") would need a tag to be
        # useful anyway, and OCI ref names are tags far more often than names.
        return Ref(None, name)
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag: str | None = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    repo = normalise_repo(name) if name else None
    return Ref(repo or None, tag or None)


def parse_destination(arg: str) -> tuple[str, str | None]:
    """``REPO[:TAG]`` from the import command line, validated."""
    slash = arg.rfind("/")
    colon = arg.rfind(":")
    tag: str | None = None
    repo = arg
    if colon > slash:
        repo, tag = arg[:colon], arg[colon + 1 :]
    check_repo(repo)
    if tag is not None:
        check_tag_text(tag)
    return repo, tag


def parse_reference(arg: str) -> tuple[str, str]:
    """``REPO:TAG`` or ``REPO@DIGEST`` from the export command line; a missing tag is latest."""
    if "@" in arg:
        repo, digest = arg.split("@", 1)
        if Digest.try_parse(digest) is None:
            raise UsageError(f"invalid digest in {arg!r}")
        check_repo(repo)
        return repo, digest
    repo, tag = parse_destination(arg)
    return repo, tag or "latest"


def check_repo(repo: str) -> str:
    try:
        return check_name(repo)
    except RegistryError:
        hint = ""
        if split_host(repo)[0] is not None:
            hint = " (give the repository without a registry host; the host goes in --to/--from)"
        raise UsageError(f"invalid repository name {repo!r}{hint}") from None


def check_tag_text(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise UsageError(f"invalid tag {tag!r}")
    return tag


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r} (expected os/arch[/variant])")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def of(cls, raw: Any) -> Platform | None:
        """From a descriptor's or config's ``platform`` object, None if it has none."""
        if not isinstance(raw, dict):
            return None
        os_name, arch = raw.get("os"), raw.get("architecture")
        if not isinstance(os_name, str) or not isinstance(arch, str):
            return None
        variant = raw.get("variant")
        return cls(os_name, arch, variant if isinstance(variant, str) and variant else None)

    def matches(self, other: Platform) -> bool:
        """``self`` is what the user asked for: no variant asked means any variant is fine."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return self.variant is None or self.variant == other.variant

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


DEFAULT_PLATFORM = Platform("linux", "amd64")
