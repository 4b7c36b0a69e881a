"""A moto S3 server that starts with objects already in it, put straight into moto's backend.

A bucket of 100,000 objects written over HTTP one PUT at a time takes minutes on these shared
2-core machines; put into the backend in the server's own process before it serves, it takes
seconds. What the tests then do goes over moto's real S3 wire protocol as with
:class:`support.stores.MotoServer`, of which this is one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from .stores import REGION, MotoServer

_SEED = r"""
import json, sys
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import main

spec = json.loads(open(sys.argv[1]).read())
backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
for bucket, objects in spec["buckets"].items():
    backend.create_bucket(bucket, spec["region"])
    for key, body in objects.items():
        backend.put_object(bucket, key, body.encode())
print("seeded", flush=True)
main(["-H", "127.0.0.1", "-p", sys.argv[2]])
"""


class SeededMotoServer(MotoServer):
    """``SeededMotoServer(workdir, {bucket: {key: body}})``; start with a timeout long enough
    for the seeding (about 10 s per 100,000 objects here, more under load)."""

    def __init__(self, workdir: Path, buckets: Mapping[str, Mapping[str, str]]) -> None:
        super().__init__(workdir)
        self.spec_path = workdir / "seed.json"
        self.spec_path.write_text(json.dumps({"region": REGION, "buckets": buckets}))

    def command(self) -> list[str]:
        return [sys.executable, "-c", _SEED, str(self.spec_path), str(self.port)]
