"""Pieces of the web UI on their own: sessions, formatting, pull commands, the config switch,
and that a built wheel carries the templates and static files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

from cargohold.config import ConfigError, load_config
from cargohold.ui.render import ago, exact_time, human_size
from cargohold.ui.session import SessionSigner, fingerprint
from cargohold.ui.views import pull_commands

ROOT = Path(__file__).resolve().parents[2]
# with build isolation: pip brings the setuptools pyproject.toml asks for
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w"]


def test_sessions_are_signed_expire_and_carry_a_csrf_token_of_their_own() -> None:
    signer = SessionSigner("secret-a", lifetime=60)
    session = signer.new("dan", fingerprint("$2y$04$hash"))
    value = signer.encode(session)
    assert signer.decode(value) == session
    assert SessionSigner("secret-a").decode(value) == session  # another worker, same secret
    assert SessionSigner("secret-b").decode(value) is None  # another secret
    assert signer.decode(value, now=session.expires + 1) is None  # expired
    payload, mac = value.split(".")
    assert signer.decode(payload + "." + mac[:-2] + "AA") is None
    assert signer.decode("garbage") is None and signer.decode(None) is None
    token = signer.csrf_token(session)
    assert signer.check_csrf(session, token)
    assert not signer.check_csrf(signer.new("dan"), token)  # tied to the session's nonce
    assert fingerprint("$2y$04$a") != fingerprint("$2y$04$b") and fingerprint(None) == ""


def test_sizes_and_times_for_people() -> None:
    assert human_size(0) == "0 B" and human_size(812) == "812 B"
    assert human_size(1536) == "1.50 KiB"
    assert human_size(5 * 1024**3) == "5.00 GiB"
    assert human_size(123 * 1024**2) == "123 MiB"
    now = 1_700_000_000.0
    assert ago(now - 30, now) == "just now"
    assert ago(now - 3 * 86400, now) == "3 days ago"
    assert ago(now - 3600, now) == "1 hour ago"
    assert ago(now - 400 * 86400, now) == "1 year ago"
    assert ago(None) == "never" and ago(0) == "never"
    assert exact_time(now) == "2023-11-14 22:13:20 UTC"


def test_pull_commands_follow_the_public_host() -> None:
    public = {"name": "registry.example.com", "plain": False, "loopback": False}
    commands = {c["client"]: c["command"] for c in pull_commands(public, "team/app", "1.0")}
    assert commands == {
        "docker": "docker pull registry.example.com/team/app:1.0",
        "podman": "podman pull registry.example.com/team/app:1.0",
        "skopeo": "skopeo copy --all docker://registry.example.com/team/app:1.0 oci:app:1.0",
        "ctr": "ctr images pull registry.example.com/team/app:1.0",
    }
    plain = {"name": "10.0.0.5:5000", "plain": True, "loopback": False}
    digest = "sha256:" + "a" * 64
    commands = {c["client"]: c["command"] for c in pull_commands(plain, "app", digest)}
    assert commands["docker"] == f"docker pull 10.0.0.5:5000/app@{digest}"
    assert commands["podman"] == f"podman pull --tls-verify=false 10.0.0.5:5000/app@{digest}"
    assert "--src-tls-verify=false" in commands["skopeo"]
    assert commands["ctr"] == f"ctr images pull --plain-http 10.0.0.5:5000/app@{digest}"


def test_ui_config_section() -> None:
    assert load_config(None, {}).ui.enabled is True
    config = load_config(None, {"REGISTRY_UI_ENABLED": "false"})
    assert config.ui.enabled is False
    assert load_config(None, {"REGISTRY_UI_SESSIONLIFETIME": "30m"}).ui.sessionlifetime == 1800
    with pytest.raises(ConfigError, match=r"ui\.sessionlifetime"):
        load_config(None, {"REGISTRY_UI_SESSIONLIFETIME": "-1s"})


def test_ui_enabled_false_leaves_no_ui(make_registry) -> None:  # type: ignore[no-untyped-def]
    server = make_registry(config={"ui": {"enabled": False}})
    assert requests.get(f"{server.url}/ui/", timeout=30).status_code == 404
    assert requests.get(f"{server.url}/ui/api/repositories", timeout=30).status_code == 404
    browser = requests.get(
        f"{server.url}/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30
    )
    assert browser.status_code == 200 and browser.text == "cargohold registry\n"


def test_the_wheel_ships_templates_and_static_files(tmp_path: Path) -> None:
    """A non-editable install must find everything the pages need."""
    tree = tmp_path / "tree"  # built from a copy: nothing is left in the checkout
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    build = subprocess.run(
        [*PIP_WHEEL, str(tmp_path), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = tmp_path.glob("cargohold-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    source = ROOT / "src" / "cargohold" / "ui"
    expected = {
        f"cargohold/ui/{p.relative_to(source).as_posix()}"
        for pattern in ("templates/*.html", "static/*")
        for p in source.glob(pattern)
    }
    assert {"cargohold/ui/static/ui.css", "cargohold/ui/templates/base.html"} <= expected
    assert expected <= names, sorted(expected - names)


def test_public_host_and_secure_cookie_follow_http_host(make_registry) -> None:  # type: ignore[no-untyped-def]
    """Behind a TLS proxy (``http.host: https://...``) the commands name the public host and
    the session cookie is Secure, though the proxy talks plain HTTP to the registry."""
    server = make_registry(config={"http": {"host": "https://registry.example.com"}})
    page = requests.get(f"{server.url}/ui/", timeout=30)
    cookie = page.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "docker push registry.example.com/myapp:1.0" in page.text  # the empty state


def test_logins_through_the_builtin_token_servers_users(make_registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With ``auth.token.builtin`` the UI checks its htpasswd file and applies the policy the
    token server applies; the pages need no token."""
    from cargohold.auth import htpasswd

    from .conftest import PASSWORDS, POLICY
    from .helpers import login, names

    users = tmp_path / "htpasswd"
    for user in ("dan", "eve"):
        htpasswd.set_user(str(users), user, PASSWORDS[user], cost=4)
    builtin = {"htpasswd": str(users), "key": str(tmp_path / "keys" / "token.key")}
    server = make_registry(config={"auth": {"token": {"builtin": builtin}}, "access": POLICY})
    token = requests.get(
        f"{server.url}/auth/token?scope=repository:team/app:pull,push",
        auth=("dan", PASSWORDS["dan"]),
        timeout=30,
    ).json()["token"]
    push_headers = {"Authorization": f"Bearer {token}"}
    blob = requests.post(
        f"{server.url}/v2/team/app/blobs/uploads/", headers=push_headers, timeout=30
    )
    assert blob.status_code == 202  # the token works for the API...
    dan = login(server.url, "dan", PASSWORDS["dan"])  # ...and the password for the UI
    assert dan.get(f"{server.url}/ui/api/session").json()["user"] == "dan"
    assert names(dan.get(f"{server.url}/ui/api/repositories")) == []  # nothing pushed yet
    eve_page = login(server.url, "eve", PASSWORDS["eve"]).get(f"{server.url}/ui/r/team/app")
    assert eve_page.status_code == 404
