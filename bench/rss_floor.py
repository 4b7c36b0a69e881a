#!/usr/bin/env python3
"""The memory floor of a Python S3 replica: the RSS of bare processes holding only what any
Python registry on S3 with aiohttp must hold, beside which a replica's own RSS can be read.

    python bench/rss_floor.py [--json OUT]

Each level is a fresh ``python3`` (this interpreter, ``-I``: no site-packages of the user, no
PYTHONPATH) that does its part, reports ready on stdout and waits; its RSS and PSS are then read
from /proc (and it is ended). The levels:

- ``python3``: the interpreter alone;
- ``+ aiohttp``: ``import aiohttp`` and ``aiohttp.web`` (the server side a replica runs);
- ``+ aiobotocore S3 client``: and one aiobotocore S3 client created on a running event loop
  (the S3 service model and endpoint tables loaded), as a replica holds for its whole life;
- ``+ one presigned URL``: and one ``generate_presigned_url`` on it (the signer loaded), the
  one S3 call a replica makes per blob GET with redirect on.

No S3 server is needed: creating a client and presigning are local. Compare with the replicas'
RSS at rest in ``bench/replica_storm.py``'s output (``rss_rest_each_mib``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from procs import read_rss_pss

MiB = 1 << 20

_CLIENT = """
import asyncio, sys
import aiohttp, aiohttp.web
from aiobotocore.session import get_session

async def main():
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench-secret",
    ) as s3:
        if PRESIGN:
            await s3.generate_presigned_url(
                "get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=1200
            )
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)

asyncio.run(main())
"""

LEVELS = {
    "python3": "import sys\nprint('ready', flush=True)\nsys.stdin.read()\n",
    "+ aiohttp": "import sys, aiohttp, aiohttp.web\nprint('ready', flush=True)\nsys.stdin.read()\n",
    "+ aiobotocore S3 client": "PRESIGN = False\n" + _CLIENT,
    "+ one presigned URL": "PRESIGN = True\n" + _CLIENT,
}


def measure(code: str) -> tuple[float, float]:
    """(RSS, PSS) in MiB of a fresh interpreter once it has run ``code`` up to ready."""
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"the probe did not start: {line!r}, exit {proc.wait()}")
        rss, pss = read_rss_pss(proc.pid)
        proc.stdin.close()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return round(rss / MiB, 1), round(pss / MiB, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3, help="fresh processes per level (median)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    report: dict[str, dict[str, float]] = {}
    print("| Process | RSS (MiB) | PSS (MiB) |\n|---|---:|---:|")
    for name, code in LEVELS.items():
        samples = sorted(measure(code) for _ in range(args.reps))
        rss, pss = samples[len(samples) // 2]
        report[name] = {"rss_mib": rss, "pss_mib": pss}
        print(f"| {name} | {rss:g} | {pss:g} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
