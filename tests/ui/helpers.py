"""Logging in through the UI's form with plain HTTP (the browser tests use a real browser)."""

from __future__ import annotations

import re

import requests

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def ui_session(base_url: str) -> tuple[requests.Session, str]:
    """A fresh (anonymous) UI session and its CSRF token."""
    http = requests.Session()
    page = http.get(f"{base_url}/ui/login", timeout=30)
    assert page.status_code == 200, page.text[:500]
    return http, csrf_of(page.text)


def login(base_url: str, user: str, password: str) -> requests.Session:
    http, csrf = ui_session(base_url)
    resp = http.post(
        f"{base_url}/ui/login",
        data={"username": user, "password": password, "csrf": csrf, "next": "/ui/"},
        allow_redirects=False,
        timeout=30,
    )
    assert resp.status_code == 303, resp.text[:1000]
    assert resp.headers["Location"] == "/ui/"
    return http


def names(resp: requests.Response) -> list[str]:
    assert resp.status_code == 200, resp.text[:500]
    return [r["name"] for r in resp.json()["repositories"]]
