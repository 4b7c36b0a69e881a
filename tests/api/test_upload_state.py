"""The signed ``_state`` in upload URLs (``http.secret``), as registry:2 carries it."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from .helpers import absolute, assert_error, codes, fetch_blob, repo, sha256, with_query

SECRET = {"http": {"secret": "a-shared-secret-for-the-tests"}}


def _parts(url: str) -> tuple[str, str]:
    """(URL without query, the _state value)."""
    split = urlsplit(url)
    state = parse_qs(split.query)["_state"][0]
    return url.split("?", 1)[0], state


def _with_state(base: str, state: str) -> str:
    return f"{base}?{urlencode({'_state': state})}"


def _tamper(state: str) -> str:
    payload, mac = state.split(".")
    flipped = ("B" if mac[0] == "A" else "A") + mac[1:]
    return f"{payload}.{flipped}"


def _start(base: str, name: str) -> str:
    r = requests.post(f"{base}/v2/{name}/blobs/uploads/")
    assert r.status_code == 202
    return absolute(base, r.headers["Location"])


def test_locations_carry_a_state(registry):
    url = _start(registry.url, repo())
    _base, state = _parts(url)
    assert state.count(".") == 1
    r = requests.patch(url, data=b"abc")
    assert r.status_code == 202
    _base2, state2 = _parts(absolute(registry.url, r.headers["Location"]))
    assert state2 != state  # the offset is part of what is signed


def _assert_invalid_state(r: requests.Response) -> None:
    assert r.status_code in (400, 404), (r.status_code, r.text)
    assert codes(r) == ["BLOB_UPLOAD_INVALID"]


def test_tampered_state_is_refused_and_changes_nothing(registry):
    name = repo()
    url = _start(registry.url, name)
    assert requests.patch(url, data=b"0123", headers={"Content-Range": "0-3"}).status_code == 202
    base, state = _parts(url)
    bad = _with_state(base, _tamper(state))
    _assert_invalid_state(requests.get(bad))
    _assert_invalid_state(requests.patch(bad, data=b"4567", headers={"Content-Range": "4-7"}))
    _assert_invalid_state(requests.put(with_query(bad, f"digest={sha256(b'0123')}")))
    _assert_invalid_state(requests.delete(bad))
    for garbage in ("", "x", "a.b.c", "%%%.%%%", "A" * 5000):
        _assert_invalid_state(requests.get(_with_state(base, garbage)))
    st = requests.get(base)
    assert st.status_code == 204
    assert st.headers["Range"] == "0-3"
    r = requests.put(with_query(base, f"digest={sha256(b'0123')}"))
    assert r.status_code == 201, r.text
    assert fetch_blob(registry.url, name, sha256(b"0123")).content == b"0123"


def test_invalid_state_status_is_404(registry):
    url = _start(registry.url, repo())
    base, state = _parts(url)
    assert_error(requests.get(_with_state(base, _tamper(state))), 404, "BLOB_UPLOAD_INVALID")


def test_state_of_another_upload_is_unknown(registry):
    name = repo()
    first = _start(registry.url, name)
    second = _start(registry.url, name)
    base1, _ = _parts(first)
    _, state2 = _parts(second)
    r = requests.patch(_with_state(base1, state2), data=b"abc")
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    assert requests.get(base1).headers["Range"] == "0-0"


def test_state_of_another_repository_is_unknown(registry):
    url_a = _start(registry.url, repo())
    url_b = _start(registry.url, repo())
    base_b, _ = _parts(url_b)
    _, state_a = _parts(url_a)
    assert_error(requests.get(_with_state(base_b, state_a)), 404, "BLOB_UPLOAD_UNKNOWN")


def test_missing_state_is_accepted(registry):
    name = repo()
    base, _ = _parts(_start(registry.url, name))
    data = b"no state"
    assert requests.patch(base, data=data).status_code == 202
    assert requests.put(with_query(base, f"digest={sha256(data)}")).status_code == 201


def test_replicas_sharing_the_secret_accept_each_others_urls(make_registry):
    a = make_registry(config=SECRET)
    b = make_registry(config=SECRET, root=a.root)
    name = repo()
    data = b"0123456789"
    url = _start(a.url, name)
    r = requests.patch(url.replace(a.url, b.url), data=data[:5], headers={"Content-Range": "0-4"})
    assert r.status_code == 202, r.text
    url = absolute(a.url, r.headers["Location"])  # back to the first replica
    r = requests.patch(url, data=data[5:], headers={"Content-Range": "5-9"})
    assert r.status_code == 202, r.text
    url = absolute(b.url, r.headers["Location"])
    r = requests.put(with_query(url, f"digest={sha256(data)}"))
    assert r.status_code == 201, r.text
    assert fetch_blob(a.url, name, sha256(data)).content == data


def test_replicas_with_different_secrets_refuse_each_others_urls(make_registry):
    a = make_registry(config={"http": {"secret": "one-secret"}})
    b = make_registry(config={"http": {"secret": "another-secret"}}, root=a.root)
    url = _start(a.url, repo())
    _assert_invalid_state(requests.patch(url.replace(a.url, b.url), data=b"abc"))
    assert requests.get(url).headers["Range"] == "0-0"


def test_expired_state_is_refused_while_the_upload_remains(make_registry):
    # states live as long as the purging age; the purge itself runs once after ~1 s, then hourly
    reg = make_registry(
        config={
            "storage": {
                "maintenance": {
                    "uploadpurging": {
                        "enabled": True,
                        "age": "2s",
                        "interval": "1h",
                        "dryrun": False,
                    }
                }
            }
        }
    )
    url = _start(reg.url, repo())
    base, _ = _parts(url)
    deadline = time.monotonic() + 15
    r = requests.get(url)
    while r.status_code == 204 and time.monotonic() < deadline:
        time.sleep(0.25)
        r = requests.get(url)
    _assert_invalid_state(r)
    assert requests.get(base).status_code == 204
