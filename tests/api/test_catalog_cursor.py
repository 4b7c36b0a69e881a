"""The sealed ``_resume`` of an access-filtered catalog page: opens with the secret that sealed
it and with nothing else, and never shows the name it carries."""

from __future__ import annotations

from cargohold.api import catalogcursor


def test_a_sealed_name_opens_with_its_secret_only() -> None:
    token = catalogcursor.seal("s3cret", "hidden/team/app")
    assert "hidden" not in token and "app" not in token
    assert catalogcursor.unseal("s3cret", token) == "hidden/team/app"
    assert catalogcursor.unseal("another", token) is None


def test_tampered_truncated_and_oversized_tokens_are_ignored() -> None:
    token = catalogcursor.seal("s3cret", "a/b")
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert catalogcursor.unseal("s3cret", flipped) is None
    assert catalogcursor.unseal("s3cret", token[:10]) is None
    assert catalogcursor.unseal("s3cret", "!!not base64!!") is None
    assert catalogcursor.unseal("s3cret", "A" * (catalogcursor.MAX_LENGTH + 1)) is None


def test_two_seals_of_one_name_differ() -> None:
    # A fresh nonce each time: equal tokens would tell a watcher two pages stopped at one name.
    assert catalogcursor.seal("k", "x") != catalogcursor.seal("k", "x")
