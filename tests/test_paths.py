"""The layout's reverse: every path a builder writes parses back into the same parts, and
anything else (garbage, traversal attempts, near misses) is not mistaken for a layout path."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cargohold.digest import Digest
from cargohold.storage import paths
from cargohold.storage.paths import Kind, Parsed

D = Digest("sha256", "0123456789abcdef" * 4)
S = Digest("sha512", "fedcba9876543210" * 8)
NAMES = ["app", "library/ubuntu", "a/b/c/d/e/f/g/h", "my_org/sub__x/app-1.2", "x" * 255]
TAGS = ["latest", "v1.2.3", "_underscore", "A" * 128]
BATCH = "20261203T093000-1f2e"
UPLOAD = "3d9a6e9c-8f57-4c2b-9a8a-3bd2c6a9f0e1"

Case = tuple[Callable[[], str], Parsed]


def cases() -> list[Case]:
    out: list[Case] = [
        (lambda: paths.blob_dir(D), Parsed(Kind.BLOB_DIR, digest=D)),
        (lambda: paths.blob_data(D), Parsed(Kind.BLOB_DATA, digest=D)),
        (lambda: paths.blob_data(S), Parsed(Kind.BLOB_DATA, digest=S)),
        (lambda: paths.GC_LEASE, Parsed(Kind.GC_LEASE)),
        (lambda: paths.gc_condemned(BATCH), Parsed(Kind.GC_CONDEMNED, batch=BATCH)),
        (lambda: paths.gc_claims(BATCH), Parsed(Kind.GC_CLAIMS, batch=BATCH)),
        (lambda: paths.gc_claim(BATCH, D), Parsed(Kind.GC_CLAIM, digest=D, batch=BATCH)),
        (lambda: paths.gc_deleted(BATCH), Parsed(Kind.GC_DELETED, batch=BATCH)),
    ]
    for n in NAMES:
        out += [
            (lambda n=n: paths.repository(n), Parsed(Kind.REPOSITORY_DIR, n)),
            (lambda n=n: paths.catalog_entry(n), Parsed(Kind.CATALOG_ENTRY, n)),
            (lambda n=n: paths.layers(n), Parsed(Kind.REPOSITORY_AREA, n, "_layers")),
            (lambda n=n: paths.layer_dir(n, D), Parsed(Kind.LAYER_DIR, n, "_layers", D)),
            (lambda n=n: paths.layer_link(n, S), Parsed(Kind.LAYER_LINK, n, "_layers", S)),
            (lambda n=n: paths.manifests(n), Parsed(Kind.REPOSITORY_AREA, n, "_manifests")),
            (lambda n=n: paths.revisions(n), Parsed(Kind.REPOSITORY_AREA, n, "_manifests")),
            (lambda n=n: paths.tags(n), Parsed(Kind.REPOSITORY_AREA, n, "_manifests")),
            (
                lambda n=n: paths.revision_dir(n, D),
                Parsed(Kind.REVISION_DIR, n, "_manifests", D),
            ),
            (
                lambda n=n: paths.revision_link(n, D),
                Parsed(Kind.REVISION_LINK, n, "_manifests", D),
            ),
            (lambda n=n: paths.uploads(n), Parsed(Kind.REPOSITORY_AREA, n, "_uploads")),
            (
                lambda n=n: paths.upload_dir(n, UPLOAD),
                Parsed(Kind.UPLOAD_DIR, n, "_uploads", upload_id=UPLOAD),
            ),
            (
                lambda n=n: paths.upload_data(n, UPLOAD),
                Parsed(Kind.UPLOAD_DATA, n, "_uploads", upload_id=UPLOAD),
            ),
            (
                lambda n=n: paths.upload_startedat(n, UPLOAD),
                Parsed(Kind.UPLOAD_STARTEDAT, n, "_uploads", upload_id=UPLOAD),
            ),
            (
                lambda n=n: paths.referrers_dir(n, S),
                Parsed(Kind.REFERRERS_DIR, n, "_referrers", subject=S),
            ),
            (
                lambda n=n: paths.referrer_dir(n, S, D),
                Parsed(Kind.REFERRER_DIR, n, "_referrers", D, S),
            ),
            (
                lambda n=n: paths.referrer_link(n, S, D),
                Parsed(Kind.REFERRER_LINK, n, "_referrers", D, S),
            ),
            (lambda n=n: paths.pulls(n), Parsed(Kind.REPOSITORY_AREA, n, "_pulls")),
            (lambda n=n: paths.mirror_stats(n, "1234-ab"), Parsed(Kind.MIRROR_FILE)),
            (lambda: paths.mirror_incoming("f00d"), Parsed(Kind.MIRROR_FILE)),
        ]
        for t in TAGS:
            out += [
                (
                    lambda n=n, t=t: paths.tag_dir(n, t),
                    Parsed(Kind.TAG_DIR, n, "_manifests", tag=t),
                ),
                (
                    lambda n=n, t=t: paths.tag_current_link(n, t),
                    Parsed(Kind.TAG_CURRENT_LINK, n, "_manifests", tag=t),
                ),
                (
                    lambda n=n, t=t: paths.tag_index_dir(n, t, D),
                    Parsed(Kind.TAG_INDEX_DIR, n, "_manifests", D, tag=t),
                ),
                (
                    lambda n=n, t=t: paths.tag_index_link(n, t, D),
                    Parsed(Kind.TAG_INDEX_LINK, n, "_manifests", D, tag=t),
                ),
                (
                    lambda n=n, t=t: paths.pull_record(n, t),
                    Parsed(Kind.PULL_RECORD, n, "_pulls", tag=t),
                ),
            ]
    return out


CASES = cases()


@pytest.mark.parametrize(("build", "expected"), CASES)
def test_every_builder_parses_back_into_its_parts(
    build: Callable[[], str], expected: Parsed
) -> None:
    assert paths.parse(build()) == expected


def test_every_kind_has_a_builder() -> None:
    """A new builder without a kind (or the reverse) fails here, not in a walk much later."""
    built = {expected.kind for _, expected in CASES}
    assert set(Kind) - built == {Kind.UNKNOWN}


H = "0123456789abcdef" * 4
R = paths.REPOSITORIES
GARBAGE = [
    "",
    "/",
    paths.ROOT,
    paths.REPOSITORIES,
    paths.BLOBS,
    "/etc/passwd",
    "relative/docker/registry/v2/blobs",
    f"/elsewhere{paths.blob_data(D)}",
    # traversal and empty components, wherever they are
    f"{R}/../blobs/sha256/01/{H}/data",
    f"{R}/app/../../../etc/_layers/sha256/{H}/link",
    f"{R}/app/_layers/sha256/{H}/../../../../../x",
    f"{R}/app/_uploads/../data",
    f"{R}/app/_uploads/./data",
    f"{R}/app/_uploads/.hidden/data",
    f"{R}//app/_layers/sha256/{H}/link",
    f"{R}/app/_layers/sha256/{H}/link/",
    f"{paths.BLOBS}/sha256/01/{H}/data/",
    f"{paths.GC}/claims/../sha256/{H}",
    f"{paths.CATALOG}/../_repository",
    f"{paths.CATALOG}/_repository",
    # no repository name, or one outside the grammar
    f"{R}/_layers/sha256/{H}/link",
    f"{R}/App/_layers/sha256/{H}/link",
    f"{R}/a b/_layers/sha256/{H}/link",
    f"{R}/{'x' * 256}/_layers/sha256/{H}/link",
    f"{paths.CATALOG}/Bad Name/_repository",
    f"{paths.CATALOG}/a/b",  # a "/" is written "!" in an index entry; nothing is nested
    f"{paths.CATALOG}/a!!b",
    f"{paths.CATALOG}/!a",
    f"{paths.CATALOG}/a!",
    f"{paths.CATALOG}/Upper",
    f"{paths.CATALOG}/{'x' * 256}",
    f"{paths.LEGACY_CATALOG}/app/_repository",  # the first index's entries: only ever deleted
    # blobs that are not where their digest says
    f"{paths.BLOBS}/sha256/ff/{H}/data",
    f"{paths.BLOBS}/sha256/01/{H[:-1]}/data",
    f"{paths.BLOBS}/md5/01/{H}/data",
    f"{paths.BLOBS}/sha256/01/{H.upper()}/data",
    f"{paths.BLOBS}/sha256/01/{H}/data/more",
    f"{paths.BLOBS}/sha256/01",
    f"{paths.GC}/claims/{BATCH}/sha256/{H[:-2]}",
    f"{paths.GC}/lease/x",
    f"{paths.GC}/unknown/{BATCH}",
]


@pytest.mark.parametrize("path", GARBAGE)
def test_garbage_is_unknown(path: str) -> None:
    assert paths.parse(path) == paths.UNKNOWN


NEAR_MISSES = [
    f"{R}/app/_layers/sha256/{H}/linkx",
    f"{R}/app/_layers/sha256/{H[:10]}/link",
    f"{R}/app/_layers/sha999/{H}/link",
    f"{R}/app/_manifests/revisions/sha256/{H}/link/x",
    f"{R}/app/_manifests/tags/-bad-tag/current/link",
    f"{R}/app/_manifests/tags/v1/current",
    f"{R}/app/_manifests/tags/v1/index/sha256",
    f"{R}/app/_uploads/{UPLOAD}/hashstates/sha256/0",
    f"{R}/app/_referrers/sha256/{H}/sha256/{H}/notlink",
    f"{R}/app/_pulls/v1/x",
    f"{R}/app/_somethingelse/x",
]


@pytest.mark.parametrize("path", NEAR_MISSES)
def test_near_misses_inside_a_repository_are_only_its_area(path: str) -> None:
    """Inside a repository, an unrecognised path still names the repository and its area
    (inventory counts any ``_manifests`` file as the repository having manifests), but is
    none of the kinds whose parts would be trusted."""
    parsed = paths.parse(path)
    assert parsed.kind is Kind.REPOSITORY_AREA
    assert parsed.name == "app"
    assert parsed.area == path[len(R) + len("/app/") :].split("/")[0]
    assert (parsed.digest, parsed.subject, parsed.tag, parsed.upload_id) == (None, None, "", "")
