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
"""

from __future__ import annotations

from cargohold.digest import Digest

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


def layer_link(name: str, d: Digest) -> str:
    return f"{layers(name)}/{d.algorithm}/{d.hex}/link"


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


def tag_index_link(name: str, tag: str, d: Digest) -> str:
    return f"{tag_dir(name, tag)}/index/{d.algorithm}/{d.hex}/link"


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


def referrer_link(name: str, subject: Digest, d: Digest) -> str:
    return f"{referrers_dir(name, subject)}/{d.algorithm}/{d.hex}/link"


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


def gc_condemned(batch: str) -> str:
    return f"{GC_CONDEMNED}/{batch}"


def gc_claims(batch: str) -> str:
    return f"{GC_CLAIMS}/{batch}"


def gc_claim(batch: str, d: Digest) -> str:
    return f"{GC_CLAIMS}/{batch}/{d.algorithm}/{d.hex}"


def gc_deleted(batch: str) -> str:
    return f"{GC_DELETED}/{batch}"
