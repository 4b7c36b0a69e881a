"""Content digests (``algorithm:hex``) and the repository-name and tag grammars of the spec.

Everything that later becomes part of a storage path passes through here first, so these
checks are also what keeps a request from reaching outside the storage root.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from typing import Final

from cargohold.errors import ErrorCode, RegistryError

ALGORITHMS: Final[dict[str, int]] = {"sha256": 64, "sha512": 128}

# \Z, not $: "$" also matches before a final newline, which would let "v1\n" (%0A in a path)
# through as a tag, a name or a digest.
_LOWER_HEX = re.compile(r"^[0-9a-f]+\Z")
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)\Z")
# The spec's repository name grammar, path components separated by "/".
NAME_RE = re.compile(
    r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*\Z"
)
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
MAX_NAME_LENGTH: Final = 255


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str, code: ErrorCode = ErrorCode.DIGEST_INVALID) -> Digest:
        """Parse and validate; unsupported algorithms and malformed hex raise ``code``."""
        digest = cls.try_parse(value)
        if digest is None:
            raise RegistryError(code, "invalid digest", {"digest": value[:200]})
        return digest

    @classmethod
    def try_parse(cls, value: str) -> Digest | None:
        m = _DIGEST_RE.match(value)
        if not m:
            return None
        alg, hexpart = m.group(1), m.group(2)
        length = ALGORITHMS.get(alg)
        if length is None or len(hexpart) != length or not _LOWER_HEX.match(hexpart):
            return None
        return cls(sys.intern(alg), hexpart)  # one "sha256" for all: stores hold many digests

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


def check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not NAME_RE.match(name):
        raise RegistryError(ErrorCode.NAME_INVALID, "invalid repository name", {"name": name[:300]})
    return name


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise RegistryError(ErrorCode.TAG_INVALID, "invalid tag", {"tag": tag[:200]})
    return tag


def is_digest_reference(reference: str) -> bool:
    return ":" in reference
