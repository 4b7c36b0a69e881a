"""The whole storage layout in one place, identical to registry:2's ``paths.go``.

Keeping the layout byte-for-byte compatible is what lets a team switch from registry:2 to
cargohold and back on the same directory or bucket. Every function takes already validated
components (see :mod:`cargohold.digest`), so no path built here can leave the root.

::

    /docker/registry/v2/blobs/<alg>/<hex[:2]>/<hex>/data
    /docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link
    /docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
    /docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
    /docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link
    /docker/registry/v2/repositories/<name>/_uploads/<id>/data
    /docker/registry/v2/repositories/<name>/_uploads/<id>/startedat
    /docker/registry/v2/repositories/<name>/_referrers/<subject alg>/<subject hex>/<alg>/<hex>/link

``_referrers`` is cargohold's own (registry:2 has no referrers API); registry:2 ignores it.
So are ``_pulls`` (when each tag was last pulled, for retention) and everything under
``/docker/registry/v2/_cargohold`` (online garbage collection's bookkeeping)::

    /docker/registry/v2/repositories/<name>/_pulls/<tag>
    /docker/registry/v2/_cargohold/gc/lease
    /docker/registry/v2/_cargohold/gc/condemned/<batch>
    /docker/registry/v2/_cargohold/gc/claims/<batch>/<alg>/<hex>
    /docker/registry/v2/_cargohold/gc/deleted/<batch>
    /docker/registry/v2/_cargohold/repository-index/<name, "/" written "!">   (see below)
    /docker/registry/v2/_cargohold/repository-index-built
    /docker/registry/v2/_cargohold/tmp/<id>          files being written, before their rename
    /docker/registry/v2/_cargohold/trash/<id>        trees being deleted, after their rename
    /docker/registry/v2/_cargohold/quarantine/<alg>/<hex>/data   blobs fsck found corrupt
    /docker/registry/v2/_cargohold/mirror/fetch/...           (pull-through mirrors' fetch files)
    /docker/registry/v2/_cargohold/mirror/incoming/<id>       (a fetched blob on its way in)
    /docker/registry/v2/_cargohold/mirror/stats/<mirror>/<process>   (hits and misses)

The repository index (:mod:`cargohold.registry.repoindex`, object stores only) is one empty
file per repository, all in one directory, named by the repository name with every ``/``
written as ``!``: ``library/alpine`` is ``library!alpine``. ``!`` sorts below every character a
name may contain (``-``, ``.``, ``0-9``, ``_``, ``a-z``), so the byte order of the file names,
which is the order an S3 listing returns, is registry:2's component order of the names
(``a/b`` before ``a-c``), and a ``_catalog`` page is one listing that starts after ``last``.
Indexes written before (``_cargohold/catalog/<name>/_repository``, marker
``_cargohold/catalog-built``; their order was not the catalog's) are replaced once and removed.

``tmp`` and ``trash`` keep every half-done write or delete out of the layout proper, so a
process killed at any instant leaves nothing that registry:2 or cargohold would read
(``docs/ordering.md``).

:func:`parse` reads a path back into what it is and its parts (name, digest, tag, ...), so the
walks over the store (inventory, the repository index, the blob descriptor cache) need no
regular expressions of their own.
"""

from __future__ import annotations

import enum
import functools
import re
import sys
from typing import NamedTuple

from cargohold import memory
from cargohold.digest import ALGORITHMS, MAX_NAME_LENGTH, NAME_RE, TAG_RE, Digest

ROOT = "/docker/registry/v2"
BLOBS = f"{ROOT}/blobs"
REPOSITORIES = f"{ROOT}/repositories"


def blob_dir(d: Digest) -> str:
    return f"{BLOBS}/{d.algorithm}/{d.hex[:2]}/{d.hex}"


def blob_data(d: Digest) -> str:
    return f"{blob_dir(d)}/data"


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def layers(name: str) -> str:
    return f"{repository(name)}/_layers"


def layer_dir(name: str, d: Digest) -> str:
    return f"{layers(name)}/{d.algorithm}/{d.hex}"


def layer_link(name: str, d: Digest) -> str:
    return f"{layer_dir(name, d)}/link"


def manifests(name: str) -> str:
    return f"{repository(name)}/_manifests"


def revisions(name: str) -> str:
    return f"{manifests(name)}/revisions"


def revision_dir(name: str, d: Digest) -> str:
    return f"{revisions(name)}/{d.algorithm}/{d.hex}"


def revision_link(name: str, d: Digest) -> str:
    return f"{revision_dir(name, d)}/link"


def tags(name: str) -> str:
    return f"{manifests(name)}/tags"


def tag_dir(name: str, tag: str) -> str:
    return f"{tags(name)}/{tag}"


def tag_current_link(name: str, tag: str) -> str:
    return f"{tag_dir(name, tag)}/current/link"


def tag_index_dir(name: str, tag: str, d: Digest) -> str:
    return f"{tag_dir(name, tag)}/index/{d.algorithm}/{d.hex}"


def tag_index_link(name: str, tag: str, d: Digest) -> str:
    return f"{tag_index_dir(name, tag, d)}/link"


def uploads(name: str) -> str:
    return f"{repository(name)}/_uploads"


def upload_dir(name: str, upload_id: str) -> str:
    return f"{uploads(name)}/{upload_id}"


def upload_data(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/data"


def upload_startedat(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/startedat"


def referrers_dir(name: str, subject: Digest) -> str:
    return f"{repository(name)}/_referrers/{subject.algorithm}/{subject.hex}"


def referrer_dir(name: str, subject: Digest, d: Digest) -> str:
    return f"{referrers_dir(name, subject)}/{d.algorithm}/{d.hex}"


def referrer_link(name: str, subject: Digest, d: Digest) -> str:
    return f"{referrer_dir(name, subject, d)}/link"


def pulls(name: str) -> str:
    return f"{repository(name)}/_pulls"


def pull_record(name: str, tag: str) -> str:
    return f"{pulls(name)}/{tag}"


CARGOHOLD = f"{ROOT}/_cargohold"
GC = f"{CARGOHOLD}/gc"
GC_LEASE = f"{GC}/lease"
GC_CONDEMNED = f"{GC}/condemned"
GC_CLAIMS = f"{GC}/claims"
GC_DELETED = f"{GC}/deleted"
SCRATCH = f"{CARGOHOLD}/tmp"
TRASH = f"{CARGOHOLD}/trash"
QUARANTINE = f"{CARGOHOLD}/quarantine"


def gc_condemned(batch: str) -> str:
    return f"{GC_CONDEMNED}/{batch}"


def gc_claims(batch: str) -> str:
    return f"{GC_CLAIMS}/{batch}"


def gc_claim(batch: str, d: Digest) -> str:
    return f"{GC_CLAIMS}/{batch}/{d.algorithm}/{d.hex}"


def gc_deleted(batch: str) -> str:
    return f"{GC_DELETED}/{batch}"


CATALOG = f"{CARGOHOLD}/repository-index"
CATALOG_BUILT = f"{CARGOHOLD}/repository-index-built"
CATALOG_SEPARATOR = "!"  # "/" in an index entry's file name; sorts below every name character
# The first index (one directory per repository, listed in plain key order), removed on upgrade.
LEGACY_CATALOG = f"{CARGOHOLD}/catalog"
LEGACY_CATALOG_BUILT = f"{CARGOHOLD}/catalog-built"


def catalog_key(name: str) -> str:
    """The file name of ``name``'s index entry: byte order of keys is component order of names."""
    return name.replace("/", CATALOG_SEPARATOR)


def catalog_name(key: str) -> str | None:
    """The repository an index file name stands for; None for anything that is not one."""
    name = key.replace(CATALOG_SEPARATOR, "/")
    if "/" in key or len(name) > MAX_NAME_LENGTH or not NAME_RE.match(name):
        return None
    return name


def catalog_entry(name: str) -> str:
    return f"{CATALOG}/{catalog_key(name)}"


MIRROR = f"{CARGOHOLD}/mirror"
MIRROR_FETCH = f"{MIRROR}/fetch"  # lock, part and result files of coalesced fetches
MIRROR_INCOMING = f"{MIRROR}/incoming"
MIRROR_STATS = f"{MIRROR}/stats"


def mirror_incoming(fetch_id: str) -> str:
    return f"{MIRROR_INCOMING}/{fetch_id}"


def mirror_stats(label: str, process: str = "") -> str:
    """A mirror's statistics directory, or one process's file in it (``/`` in a prefix is
    ``_`` here, so every mirror is one directory)."""
    base = f"{MIRROR_STATS}/{label.replace('/', '_')}"
    return f"{base}/{process}" if process else base


# --------------------------------------------------------------------------- the reverse


class Kind(enum.Enum):
    """What a path in the layout is: one member per builder above, except that the area
    directories (``layers()``, ``manifests()``, ``revisions()``, ``tags()``, ``uploads()``,
    ``pulls()``) and anything unrecognised below a repository are ``REPOSITORY_AREA``."""

    UNKNOWN = enum.auto()
    BLOB_DIR = enum.auto()
    BLOB_DATA = enum.auto()
    REPOSITORY_DIR = enum.auto()  # repositories/<name>: a repository or a namespace directory
    REPOSITORY_AREA = enum.auto()  # any other path below a repository's ``_``-prefixed areas
    LAYER_DIR = enum.auto()
    LAYER_LINK = enum.auto()
    REVISION_DIR = enum.auto()
    REVISION_LINK = enum.auto()
    TAG_DIR = enum.auto()
    TAG_CURRENT_LINK = enum.auto()
    TAG_INDEX_DIR = enum.auto()
    TAG_INDEX_LINK = enum.auto()
    UPLOAD_DIR = enum.auto()
    UPLOAD_DATA = enum.auto()
    UPLOAD_STARTEDAT = enum.auto()
    REFERRERS_DIR = enum.auto()
    REFERRER_DIR = enum.auto()
    REFERRER_LINK = enum.auto()
    PULL_RECORD = enum.auto()
    GC_LEASE = enum.auto()
    GC_CONDEMNED = enum.auto()
    GC_CLAIMS = enum.auto()
    GC_CLAIM = enum.auto()
    GC_DELETED = enum.auto()
    CATALOG_ENTRY = enum.auto()
    MIRROR_FILE = enum.auto()  # anything below _cargohold/mirror (the mirrors' bookkeeping)


class Parsed(NamedTuple):
    """A path taken apart. ``area`` is the repository's first ``_`` component (``_layers``,
    ``_manifests``, ...); ``subject`` is a referrer link's subject. A tuple rather than a
    dataclass because it is built on every cached link read, and a tuple is built fastest."""

    kind: Kind
    name: str = ""
    area: str = ""
    digest: Digest | None = None
    subject: Digest | None = None
    tag: str = ""
    upload_id: str = ""
    batch: str = ""


UNKNOWN = Parsed(Kind.UNKNOWN)
_LOWER_HEX = re.compile(r"[0-9a-f]+")


def _digest(alg: str, hexpart: str) -> Digest | None:
    if ALGORITHMS.get(alg) != len(hexpart) or not _LOWER_HEX.fullmatch(hexpart):
        return None
    return Digest(sys.intern(alg), hexpart)  # shared: a walk of the store makes one per file


@functools.lru_cache(maxsize=memory.scaled(4096))
def parse(path: str) -> Parsed:
    """What ``path`` is, with its parts; :data:`UNKNOWN` for anything no builder here writes.

    The inverse of the builders: ``parse(layer_link(n, d))`` is ``(LAYER_LINK, n, d)``. The
    parts are validated as the builders' callers validate them (name and tag grammars, digest
    algorithm and length), and a path with an empty, ``.`` or ``..`` component is UNKNOWN, so
    whatever a walk of the store turns up can be trusted as far as this says. It runs on every
    link read of the blob descriptor cache, so it is kept as cheap as the regular expressions it
    replaced: string splits, no backtracking, and the answers for the last few thousand paths
    (the same links are read again and again) are remembered.
    """
    if "//" in path or "/." in path or path[-1:] == "/":
        return UNKNOWN
    if path.startswith(_REPOSITORIES_SLASH):
        return _parse_repository(path[len(_REPOSITORIES_SLASH) :].split("/"))
    if path.startswith(_BLOBS_SLASH):
        parts = path[len(_BLOBS_SLASH) :].split("/")
        n = len(parts)
        if (n == 3 or (n == 4 and parts[3] == "data")) and parts[1] == parts[2][:2]:
            d = _digest(parts[0], parts[2])
            if d is not None:
                return Parsed(Kind.BLOB_DIR if n == 3 else Kind.BLOB_DATA, digest=d)
        return UNKNOWN
    if path.startswith(_GC_SLASH):
        return _parse_gc(path[len(_GC_SLASH) :].split("/"))
    if path.startswith(_MIRROR_SLASH):
        return Parsed(Kind.MIRROR_FILE)
    if path.startswith(_CATALOG_SLASH):
        name = catalog_name(path[len(_CATALOG_SLASH) :])
        if name is not None:
            return Parsed(Kind.CATALOG_ENTRY, name)
    return UNKNOWN


memory.register_lru("paths", parse)


def parse_uncached(path: str) -> Parsed:
    """:func:`parse` without its cache, for the walks over the whole store (inventory, GC,
    fsck, du). A walk sees each path once, so caching its answers only pushes out the request
    paths that are read again and again, and it keeps the walk's last few thousand paths alive
    long after it: in the soak those one-off strings, made at the peak of an online GC, pinned
    the worker's memory arenas and it grew with every collection."""
    return parse.__wrapped__(path)


def _parse_repository(parts: list[str]) -> Parsed:
    i, count = 0, len(parts)
    while i < count and parts[i][:1] != "_":  # the name ends at the first "_" component
        i += 1
    name = "/".join(parts[:i])
    if not i or len(name) > MAX_NAME_LENGTH or not NAME_RE.match(name):
        return UNKNOWN
    if i == count:
        return Parsed(Kind.REPOSITORY_DIR, name)
    area, rest = parts[i], parts[i + 1 :]
    n = len(rest)
    if area == "_layers":
        if n == 2 or (n == 3 and rest[2] == "link"):
            d = _digest(rest[0], rest[1])
            if d is not None:
                return Parsed(Kind.LAYER_DIR if n == 2 else Kind.LAYER_LINK, name, area, d)
    elif area == "_manifests":
        if n and rest[0] == "revisions":
            if n == 3 or (n == 4 and rest[3] == "link"):
                d = _digest(rest[1], rest[2])
                if d is not None:
                    kind = Kind.REVISION_DIR if n == 3 else Kind.REVISION_LINK
                    return Parsed(kind, name, area, d)
        elif n >= 2 and rest[0] == "tags" and TAG_RE.match(rest[1]):
            tag = rest[1]
            if n == 2:
                return Parsed(Kind.TAG_DIR, name, area, tag=tag)
            if n == 4 and rest[2] == "current" and rest[3] == "link":
                return Parsed(Kind.TAG_CURRENT_LINK, name, area, tag=tag)
            if (n == 5 or (n == 6 and rest[5] == "link")) and rest[2] == "index":
                d = _digest(rest[3], rest[4])
                if d is not None:
                    kind = Kind.TAG_INDEX_DIR if n == 5 else Kind.TAG_INDEX_LINK
                    return Parsed(kind, name, area, d, tag=tag)
    elif area == "_uploads":
        if n == 1:
            return Parsed(Kind.UPLOAD_DIR, name, area, upload_id=rest[0])
        if n == 2 and rest[1] in _UPLOAD_FILES:
            return Parsed(_UPLOAD_FILES[rest[1]], name, area, upload_id=rest[0])
    elif area == "_referrers":
        subject = _digest(rest[0], rest[1]) if n in (2, 4, 5) else None
        if subject is not None and n == 2:
            return Parsed(Kind.REFERRERS_DIR, name, area, subject=subject)
        if subject is not None and (n == 4 or rest[4] == "link"):
            d = _digest(rest[2], rest[3])
            if d is not None:
                kind = Kind.REFERRER_DIR if n == 4 else Kind.REFERRER_LINK
                return Parsed(kind, name, area, d, subject)
    elif area == "_pulls" and n == 1 and TAG_RE.match(rest[0]):
        return Parsed(Kind.PULL_RECORD, name, area, tag=rest[0])
    return Parsed(Kind.REPOSITORY_AREA, name, area)


def _parse_gc(parts: list[str]) -> Parsed:
    n = len(parts)
    if parts == ["lease"]:
        return Parsed(Kind.GC_LEASE)
    if n == 2 and parts[0] in _GC_BATCHES:
        return Parsed(_GC_BATCHES[parts[0]], batch=parts[1])
    if n == 4 and parts[0] == "claims":
        d = _digest(parts[2], parts[3])
        if d is not None:
            return Parsed(Kind.GC_CLAIM, digest=d, batch=parts[1])
    return UNKNOWN


_REPOSITORIES_SLASH = REPOSITORIES + "/"
_BLOBS_SLASH = BLOBS + "/"
_GC_SLASH = GC + "/"
_MIRROR_SLASH = MIRROR + "/"
_CATALOG_SLASH = CATALOG + "/"
_UPLOAD_FILES = {"data": Kind.UPLOAD_DATA, "startedat": Kind.UPLOAD_STARTEDAT}
_GC_BATCHES = {"condemned": Kind.GC_CONDEMNED, "claims": Kind.GC_CLAIMS, "deleted": Kind.GC_DELETED}
def quarantine_data(d: Digest) -> str:
    return f"{QUARANTINE}/{d.algorithm}/{d.hex}/data"
