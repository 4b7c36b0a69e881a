"""The web UI in a real browser: Debian's chromium driven by Playwright (no browser download).

A user who may pull only ``team/**`` (and the public repositories) logs in through the form,
searches, opens a repository, a tag, its SBOM referrer, a multi-platform index and one of its
platforms, copies a pull command (read back from the clipboard), deletes a tag and sees it
gone, and logs out; a user with no access of her own never sees ``team/`` at all. Every
request the pages make is recorded: none may leave the registry's host, and no page may log
a console error. Screenshots at desktop and phone width, light and dark, are written under
``$CARGOHOLD_UI_SCREENSHOTS`` (default: the test's tmp directory) and their paths printed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import PASSWORDS, UiRegistry

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect  # waits without eval(), which the pages' CSP forbids
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


class Recorder:
    """Every request and every console error or page error of a browser context."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.refused: set[str] = set()  # pages a test opens to see them refused (4xx)

    def attach(self, page: Any) -> None:
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        if "the server responded with a status of 4" in message.text and where in self.refused:
            return
        self.errors.append(f"{message.text} ({where})")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("CARGOHOLD_UI_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def _context(browser: Any, url: str, recorder: Recorder, **options: Any) -> tuple[Any, Any]:
    context = browser.new_context(viewport=DESKTOP, **options)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page = context.new_page()
    recorder.attach(page)
    return context, page


def _log_in(page: Any, url: str, user: str) -> None:
    page.goto(f"{url}/ui/")
    page.get_by_role("link", name="Log in").first.click()
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORDS[user])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/ui/")
    assert page.locator(".who .user").inner_text() == user


def _repository_links(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("table.list td.name a").all_inner_texts()]


def _check_clean(recorder: Recorder, url: str) -> None:
    assert recorder.requests, "no request recorded"
    foreign = [r for r in recorder.requests if not r.startswith(url + "/")]
    assert foreign == [], f"requests left the registry's host: {foreign}"
    assert recorder.errors == [], f"console errors: {recorder.errors}"


def test_a_team_member_browses_copies_deletes_and_logs_out(
    browser: Any, ui_registry: UiRegistry, shots: Path
) -> None:
    url, seeded = ui_registry.url, ui_registry.seeded
    recorder = Recorder()
    context, page = _context(browser, url, recorder)

    # anonymous: only the public repository
    page.goto(f"{url}/ui/")
    assert _repository_links(page) == ["public/tools"]

    page.get_by_role("link", name="Log in").first.click()
    recorder.refused.add(f"{url}/ui/login")  # the wrong password's 401
    page.get_by_label("User name").fill("dan")
    page.get_by_label("Password").fill("not-his-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    page.screenshot(path=str(shots / "login-desktop.png"), full_page=True)
    _log_in(page, url, "dan")
    assert _repository_links(page) == ["public/tools", "team/api", "team/app"]

    # search as you type (the results are replaced in place, and the URL follows)
    page.keyboard.press("/")  # focuses the search box
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("api")
    expect(page.locator("table.list td.name a")).to_have_count(1)
    assert _repository_links(page) == ["team/api"]
    assert page.url.endswith("/ui/?q=api")
    page.fill("#q", "")
    expect(page.locator("table.list td.name a")).to_have_count(3)
    page.screenshot(path=str(shots / "repositories-desktop.png"), full_page=True)

    # a repository, then a tag
    page.get_by_role("link", name="team/app", exact=True).click()
    page.wait_for_url(f"{url}/ui/r/team/app")
    tag_links = page.locator("table.tags td.name a").all_inner_texts()
    assert sorted(tag_links) == ["1.0", "1.1", "latest", "old"]
    page.screenshot(path=str(shots / "repository-desktop.png"), full_page=True)
    page.get_by_role("link", name="1.0", exact=True).click()
    page.wait_for_url(f"{url}/ui/r/team/app/-/tag/1.0")
    assert seeded.digests["team/app:1.0"] in page.locator("dl.kv").first.inner_text()
    assert "cargohold test seed 31" in page.locator("ol.history").inner_text()

    # copy the docker pull command; the clipboard holds it
    page.get_by_role("button", name="Copy the docker command").click()
    expected = f"docker pull {ui_registry.server.host}/team/app:1.0"
    expect(page.locator("body")).to_have_attribute("data-copied", expected)
    assert page.evaluate("navigator.clipboard.readText()") == expected
    assert page.get_by_role("button", name="Copy the docker command").inner_text() == "Copied"
    page.screenshot(path=str(shots / "tag-desktop.png"), full_page=True)

    # the SBOM referrer, and back to its subject
    sboms = page.locator("h3", has_text="SBOMs (SPDX)")
    assert sboms.count() == 1
    page.locator(f'a[href$="/-/manifest/{seeded.sbom}"]').click()
    page.wait_for_url(f"{url}/ui/r/team/app/-/manifest/{seeded.sbom}")
    assert "application/spdx+json" in page.locator("dl.kv").first.inner_text()
    page.locator(f'dd a[href$="/-/manifest/{seeded.digests["team/app:1.0"]}"]').click()
    page.wait_for_url(f"{url}/ui/r/team/app/-/manifest/{seeded.digests['team/app:1.0']}")

    # a multi-platform index and one of its platforms
    page.goto(f"{url}/ui/r/team/api")
    page.get_by_role("link", name="2.0", exact=True).click()
    page.wait_for_url(f"{url}/ui/r/team/api/-/tag/2.0")
    assert page.locator(".badge").inner_text() == "Index"
    page.get_by_role("link", name="linux/arm64").click()
    page.wait_for_url(f"{url}/ui/r/team/api/-/manifest/{seeded.platforms['linux/arm64']}")
    assert "linux/arm64" in page.locator("section", has_text="Configuration").inner_text()

    # delete a tag: confirmation first, then it is gone
    page.goto(f"{url}/ui/r/team/app")
    page.get_by_role("link", name="Delete tag old").click()
    page.wait_for_url(f"{url}/ui/r/team/app/-/delete?tag=old")
    assert "Delete tag" in page.locator("h1").inner_text()
    page.get_by_role("button", name="Delete tag").click()
    page.wait_for_url(re.compile(r".*/ui/r/team/app\?deleted=tag(%3A|:)old$"))
    assert "Deleted tag" in page.locator(".notice").inner_text()
    assert sorted(page.locator("table.tags td.name a").all_inner_texts()) == [
        "1.0",
        "1.1",
        "latest",
    ]

    # phone width, light and dark
    for scheme in ("light", "dark"):
        phone = browser.new_context(viewport=PHONE, color_scheme=scheme, is_mobile=True)
        phone.add_cookies(context.cookies())
        phone_page = phone.new_page()
        recorder.attach(phone_page)
        for name, path in (("repositories", "/ui/"), ("tag", "/ui/r/team/app/-/tag/1.0")):
            phone_page.goto(url + path)
            width = phone_page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{path} scrolls sideways at phone width ({width}px)"
            phone_page.screenshot(path=str(shots / f"{name}-phone-{scheme}.png"), full_page=True)
        phone.close()
    dark = browser.new_context(viewport=DESKTOP, color_scheme="dark")
    dark.add_cookies(context.cookies())
    dark_page = dark.new_page()
    recorder.attach(dark_page)
    dark_page.goto(f"{url}/ui/r/team/app/-/tag/1.0")
    background = dark_page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(14, 17, 22)"  # the dark palette follows the system
    dark_page.screenshot(path=str(shots / "tag-desktop-dark.png"), full_page=True)
    dark.close()

    # log out: back to what anonymous visitors see
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{url}/ui/")
    assert _repository_links(page) == ["public/tools"]
    recorder.refused.add(f"{url}/ui/r/team/app")
    page.goto(f"{url}/ui/r/team/app")
    assert "Not found" in page.locator("h1").inner_text()

    context.close()
    _check_clean(recorder, url)
    print(f"\nUI screenshots: {shots}")
    for shot in sorted(shots.glob("*.png")):
        print(f"  {shot}")


def test_a_user_without_access_never_sees_a_repository(
    browser: Any, ui_registry: UiRegistry
) -> None:
    url, seeded = ui_registry.url, ui_registry.seeded
    recorder = Recorder()
    context, page = _context(browser, url, recorder)
    _log_in(page, url, "eve")
    assert _repository_links(page) == ["public/tools"]
    page.fill("#q", "team")
    page.wait_for_selector("text=No repository matches")
    for path in (
        "/ui/r/team/app",
        "/ui/r/team/app/-/tag/1.0",
        f"/ui/r/team/app/-/manifest/{seeded.digests['team/app:1.0']}",
        "/ui/r/private/vault",
        "/ui/r/team/app/-/delete?tag=1.0",
    ):
        recorder.refused.add(url + path)
        response = page.goto(url + path)
        assert response is not None and response.status == 404, path
        body = page.locator("main").inner_text()
        assert seeded.digests["team/app:1.0"] not in body
        assert "1.0" not in body.replace(path, "")
    # keyboard: the skip link comes first, then the page's controls
    page.goto(f"{url}/ui/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    context.close()
    _check_clean(recorder, url)
