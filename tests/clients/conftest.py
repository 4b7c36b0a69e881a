"""Fixtures for the real-client tests.

``server`` is parametrized over cargohold (on local disk and on S3) and the reference
registry, so every client test that uses it runs against all three: a failure only on a
cargohold kind is a cargohold bug; a failure on all is a test (or environment) problem.
Tests for features the reference lacks (e.g. the referrers API) use ``registry``.
"""

from __future__ import annotations

import pytest
from support.clients import Skopeo
from support.servers import RegistryProcess

SERVER_KINDS = ("cargohold", "cargohold-s3", "reference")
_FIXTURE_FOR_KIND = {
    "cargohold": "registry",
    "cargohold-s3": "s3_cargohold",
    "reference": "reference_registry",
}


@pytest.fixture(params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> RegistryProcess:
    """The registry under test: cargohold or the reference registry (session-shared)."""
    fixture_name = _FIXTURE_FOR_KIND[request.param]
    srv: RegistryProcess = request.getfixturevalue(fixture_name)
    return srv


@pytest.fixture
def sk(skopeo: Skopeo, server: RegistryProcess) -> Skopeo:
    """skopeo whose failure messages include the tail of the server's log."""
    return skopeo.with_logs(server)
