"""registry:2's ``log`` section: level, formatter (text, json), fields, access log on and off."""

from __future__ import annotations

import json
import time

import requests
from support.servers import unique_repo


def _lines(reg, wait_for: str | None = None) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        text = reg.log_path.read_text(errors="replace")
        if wait_for is None or wait_for in text or time.monotonic() > deadline:
            return [line for line in text.splitlines() if line and not line.startswith("===")]
        time.sleep(0.1)


def test_json_logs_with_fields_and_access_log(make_registry):
    config = {
        "log": {
            "level": "debug",
            "formatter": "json",
            "fields": {"service": "registry", "env": "t"},
        }
    }
    reg = make_registry(config=config)
    repo = unique_repo("logs")
    assert requests.get(f"{reg.url}/v2/{repo}/tags/list", timeout=10).status_code == 404
    lines = _lines(reg, wait_for="tags/list")
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert entries and len(entries) == len(lines), "every line is a JSON object"
    for entry in entries:
        assert entry["service"] == "registry" and entry["env"] == "t"
        assert {"time", "level", "msg"} <= set(entry)
    access = [e for e in entries if e.get("logger") == "cargohold.access"]
    assert any(f"/v2/{repo}/tags/list" in e["msg"] and " 404 " in e["msg"] for e in access)
    assert any(e["level"] == "debug" for e in entries)


def test_text_logs_level_and_access_log_off(make_registry):
    config = {"log": {"level": "warn", "accesslog": {"disabled": True}, "fields": {"k": "v"}}}
    reg = make_registry(config=config)
    for _ in range(3):
        assert requests.get(f"{reg.url}/v2/", timeout=10).status_code == 200
    time.sleep(0.5)
    lines = _lines(reg)
    assert not any("GET /v2/" in line for line in lines), "the access log is off"
    assert not any(" INFO " in line for line in lines), "info is below warn"

    reg2 = make_registry(config={"log": {"level": "info", "fields": {"k": "v"}}})
    assert requests.get(f"{reg2.url}/v2/", timeout=10).status_code == 200
    lines = _lines(reg2, wait_for="GET /v2/")
    assert any("GET /v2/" in line and line.endswith("k=v") for line in lines)
    assert any(" INFO " in line and "listening" in line for line in lines)
