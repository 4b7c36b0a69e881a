"""Every module a serving process imports stays resident in it for its life (issue 14 point 6):
what only a rare path needs is imported on that path. A real ``cargohold serve`` runs in a
child process whose own thread looks at ``sys.modules`` before and after the web UI is used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.servers import free_port

SRC = str(Path(__file__).resolve().parents[1] / "src")

PROBE = """
import json, os, signal, sys, threading, time, urllib.request
port, config, out = sys.argv[1], sys.argv[2], sys.argv[3]
base = f"http://127.0.0.1:{port}"

def get(path):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return r.status, r.read()

def probe():
    report = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                report["v2"] = get("/v2/")[0]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        report["at_rest"] = sorted(m for m in sys.modules if m.split(".")[0] == "jinja2")
        status, body = get("/ui/")
        report["ui"] = [status, b"<html" in body.lower()]
        report["after_ui"] = sorted(m for m in sys.modules if m.split(".")[0] == "jinja2")
    finally:
        with open(out, "w") as f:
            json.dump(report, f)
        os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=probe, daemon=True).start()
from cargohold.cli import main
main(["serve", config])
"""


def test_a_worker_imports_jinja2_at_its_first_page_not_before(tmp_path: Path) -> None:
    """Jinja2 (~2 MiB per worker) is loaded by the first page the web UI renders: a registry
    serving only the API never holds it, and the UI still works."""
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: worker-imports\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
    )
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(port), str(config), str(out)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": SRC, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.exists(), proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report.get("v2") == 200, (report, proc.stderr[-3000:])
    assert report["at_rest"] == []
    assert report["ui"] == [200, True]
    assert "jinja2" in report["after_ui"]
