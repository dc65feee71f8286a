"""The structlog processor that replaces registered secrets with *** in every event value."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.obs import REDACTED, Redactor


def redactor(*secrets: str) -> Redactor:
    r = Redactor()
    r.set(secrets)
    return r


def test_nested_values_are_scrubbed():
    r = redactor("s3cretpw", "ABCDEFabcdefXYZ")
    event = {
        "event": "send_failed s3cretpw",
        "url": "json://user:s3cretpw@127.0.0.1/hook",
        "detail": {"inner": ["tgram://1:ABCDEFabcdefXYZ/2", ("s3cretpw", 5)], "n": 3},
        "attempt": 2,
        "ok": None,
    }
    out = r(None, "info", event)
    assert out == {
        "event": "send_failed ***",
        "url": "json://user:***@127.0.0.1/hook",
        "detail": {"inner": ["tgram://1:***/2", ("***", 5)], "n": 3},
        "attempt": 2,
        "ok": None,
    }
    assert isinstance(out["detail"]["inner"][1], tuple)
    assert "s3cretpw" in event["url"]  # the caller's event is not mutated


def test_longest_secret_first():
    r = redactor("abcd", "abcdefgh")
    assert r.scrub("x abcdefgh y") == f"x {REDACTED} y"


def test_short_and_empty_secrets_are_ignored():
    r = redactor("", "ab", "abc")
    assert r(None, "info", {"event": "abc ab"}) == {"event": "abc ab"}


def test_set_replaces_previous_secrets():
    r = redactor("oldsecret")
    r.set(["newsecret"])
    assert r.scrub("oldsecret newsecret") == f"oldsecret {REDACTED}"


def test_no_secrets_returns_event_unchanged():
    event = {"event": "x", "n": [1]}
    assert Redactor()(None, "info", event) is event


secrets_st = st.text(alphabet="abcdefXYZ0123456789:/@", min_size=4, max_size=12)
leaves = st.one_of(st.text(max_size=20), st.integers(), st.none(), st.booleans())


@settings(max_examples=300)
@given(
    st.lists(secrets_st, min_size=1, max_size=3),
    st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.lists(inner, max_size=3).map(tuple),
            st.dictionaries(st.text(max_size=5), inner, max_size=3),
        ),
        max_leaves=10,
    ),
    st.data(),
)
def test_no_registered_secret_survives(secrets, value, data):
    r = redactor(*secrets)
    secret = data.draw(st.sampled_from(secrets))
    event = {"event": f"pre{secret}post", "v": value, "w": [{"x": (secret, value)}]}
    out = r(None, "info", event)

    def strings(v):
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            for x in v.values():
                yield from strings(x)
        elif isinstance(v, list | tuple):
            for x in v:
                yield from strings(x)

    for s in strings(out):
        for secret_ in secrets:
            assert secret_ not in s
    assert out["w"][0]["x"][0] == REDACTED
