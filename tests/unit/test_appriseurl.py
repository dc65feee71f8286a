"""Apprise URL checks and redaction: secrets never reach a log line or an error message."""

from __future__ import annotations

import pytest

from fsincident.appriseurl import check_apprise_url, redact, scheme_of, secret_parts

TGRAM = "tgram://123456789:ABCDEFabcdefXYZ/98765"
JSON_AUTH = "json://user:s3cretpw@127.0.0.1:9099/hook"
JSON_PLAIN = "json://127.0.0.1:9099/fsincident"
DISCORD = "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js"
ENCODED = "json://user:p%40ss%2Fword@127.0.0.1:9099/x"


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        (TGRAM, ["ABCDEFabcdefXYZ"]),
        (JSON_AUTH, ["s3cretpw"]),
        (DISCORD, ["JHMHI8qBe7bk2ZwO5U711o3dV_js"]),
        (ENCODED, ["p%40ss%2Fword", "p@ss/word"]),
    ],
)
def test_secret_parts_include_passwords_and_tokens(url, secrets):
    parts = secret_parts(url)
    assert url in parts
    for s in secrets:
        assert s in parts
    assert parts == sorted(parts, key=len, reverse=True)  # longest first, so replacing never leaves a tail


@pytest.mark.parametrize(
    ("url", "public"),
    [
        (JSON_PLAIN, ["127.0.0.1", "9099", "fsincident", "json"]),
        (JSON_AUTH, ["127.0.0.1", "hook", "user", "json"]),
        (TGRAM, ["98765", "tgram"]),
    ],
)
def test_secret_parts_leave_hosts_and_plain_paths(url, public):
    parts = secret_parts(url)
    for p in public:
        assert p not in parts


def test_host_and_mail_addresses_are_not_secrets_even_when_apprise_rejects_the_url():
    url = "nosuchscheme://user:s3cretpw@mail.example.com/alerts?to=ops@example.com"
    parts = secret_parts(url)
    assert "s3cretpw" in parts
    assert "mail.example.com" not in parts and "ops@example.com" not in parts and "example.com" not in parts


def test_plain_url_has_no_secret_but_itself():
    assert secret_parts(JSON_PLAIN) == [JSON_PLAIN]


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        (TGRAM, ["ABCDEFabcdefXYZ"]),
        (JSON_AUTH, ["s3cretpw"]),
        (DISCORD, ["JHMHI8qBe7bk2ZwO5U711o3dV_js"]),
        (ENCODED, ["p%40ss%2Fword", "p@ss/word"]),
        ("mailto://user:pa55word@example.invalid?to=x", ["pa55word"]),
        ("not-a-url-with-s3cretpw", ["s3cretpw"]),
        ("foo://user:s3cretpw@host", ["s3cretpw"]),
    ],
)
def test_redact_hides_secrets(url, secrets):
    shown = redact(url)
    for s in secrets:
        assert s not in shown
    assert shown.startswith(scheme_of(url) or "?")


def test_redact_keeps_what_identifies_the_destination():
    assert redact(JSON_PLAIN) == JSON_PLAIN
    assert "127.0.0.1:9099" in redact(JSON_AUTH)
    assert "?" not in redact("json://127.0.0.1:9099/x?token=abcdefgh")


@pytest.mark.parametrize("url", [TGRAM, JSON_AUTH, JSON_PLAIN, DISCORD, ENCODED])
def test_valid_urls_pass(url):
    assert check_apprise_url(url) is None


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("no scheme s3cretpw", "not an apprise URL"),
        ("nosuchscheme://user:s3cretpw@host", "'nosuchscheme'"),
        ("tgram://s3cretpw", "'tgram'"),
    ],
)
def test_invalid_url_message_names_scheme_not_secret(url, fragment):
    msg = check_apprise_url(url)
    assert msg is not None and fragment in msg
    assert "s3cretpw" not in msg


def test_scheme_of():
    assert scheme_of("JSON://x") == "json"
    assert scheme_of("x") == ""
    assert scheme_of("") == ""
