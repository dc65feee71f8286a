"""The chat-ops command parser (``/fsincident ack 42``): hand cases for every command and its mistakes, and
properties: it never raises, and silences it accepts always carry matchers a silence may have."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.api import chatcmd
from fsincident.api.chatcmd import Ack, Help, Invalid, OnCall, Resolve, Silence, help_text, parse
from fsincident.silences.match import problems


def m(cmd: chatcmd.Command) -> list[tuple[str, str, str]]:
    assert isinstance(cmd, Silence), cmd
    return [(x.name, x.op, x.value) for x in cmd.matchers]


# --------------------------------------------------------------------------- ack / resolve


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ack 42", Ack(42)),
        ("ack #42", Ack(42)),
        ("  ACK   42   looking into it  ", Ack(42, "looking into it")),
        ("acknowledge 7", Ack(7)),
        ("ack\t7\nnote on the next line", Ack(7, "note on the next line")),
        ("resolve 3 fixed by restarting db-1", Resolve(3, "fixed by restarting db-1")),
        ("resolve #2147483647", Resolve(2**31 - 1)),
    ],
)
def test_ack_and_resolve(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "command", "fragment"),
    [
        ("ack", "ack", "which incident"),
        ("ack x", "ack", "`x` is not an incident number"),
        ("ack 0", "ack", "not an incident number"),
        ("ack -1", "ack", "not an incident number"),
        ("ack 2147483648", "ack", "not an incident number"),
        ("ack 1e3", "ack", "not an incident number"),
        ("ack ٣", "ack", "not an incident number"),  # an Arabic-Indic digit: only ASCII digits are ids
        ("resolve 4 " + "x" * 4001, "resolve", "longer than 4000"),
        ("ack 4 bad \x00 note", "ack", "NUL"),
    ],
)
def test_ack_and_resolve_mistakes(text, command, fragment):
    out = parse(text)
    assert isinstance(out, Invalid) and out.command == command, out
    assert fragment in out.message


# --------------------------------------------------------------------------- oncall


def test_oncall():
    assert parse("oncall") == OnCall()
    assert parse("oncall infra-primary") == OnCall("infra-primary")
    assert parse("on-call primary") == OnCall("primary")
    assert parse("who") == OnCall()
    bad = parse("oncall two words")
    assert isinstance(bad, Invalid) and bad.command == "oncall"


# --------------------------------------------------------------------------- silence


def test_silence_an_incident():
    assert parse("silence 2h 42") == Silence(timedelta(hours=2), incident=42)
    assert parse("silence 1h30m #42 -- db maintenance") == Silence(
        timedelta(hours=1, minutes=30), incident=42, comment="db maintenance"
    )
    assert parse("mute 1d 42 — typed on a Mac") == Silence(timedelta(days=1), incident=42, comment="typed on a Mac")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("silence 2h alertname=DiskFull", [("alertname", "=", "DiskFull")]),
        (
            'silence 30m alertname=DiskFull instance=~"db.*"',
            [("alertname", "=", "DiskFull"), ("instance", "=~", "db.*")],
        ),
        ('silence 30m {job="api", env!="dev"}', [("job", "=", "api"), ("env", "!=", "dev")]),
        ("silence 30m job=api,env!=dev", [("job", "=", "api"), ("env", "!=", "dev")]),
        ("silence 30m alertname = DiskFull", [("alertname", "=", "DiskFull")]),
        ('silence 30m job =~ "a.*" env !~ dev', [("job", "=~", "a.*"), ("env", "!~", "dev")]),
        ('silence 30m alertname="Disk full on db 1"', [("alertname", "=", "Disk full on db 1")]),
        ("silence 30m alertname=\u201cDisk full\u201d", [("alertname", "=", "Disk full")]),  # smart quotes
        ('silence 30m summary="a \\"quoted\\" word"', [("summary", "=", 'a "quoted" word')]),
    ],
)
def test_silence_matchers(text, expected):
    assert m(parse(text)) == expected


def test_silence_comment_after_matchers():
    out = parse('silence 2h alertname=DiskFull instance=~"db -- x" -- swapping the disk -- today')
    assert m(out) == [("alertname", "=", "DiskFull"), ("instance", "=~", "db -- x")]
    assert isinstance(out, Silence) and out.comment == "swapping the disk -- today"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("silence", "for how long"),
        ("silence soon 42", "not a duration"),
        ("silence 0 42", "positive"),
        ("silence 2h", "what?"),
        ("silence 2h -- just a comment", "what?"),
        ("silence 2h 42 43", "not both"),
        ("silence 2h 42 alertname=x", "not both"),
        ('silence 2h alertname=~".*"', "must not match the empty string"),
        ('silence 2h job!="x"', "must not match the empty string"),
        ('silence 2h a=~"("', "invalid regular expression"),
        ("silence 2h hello", "bad matcher"),
        ("silence 2h 1a=b", "bad matcher"),
        ('silence 2h a="unterminated', "unterminated"),
        ("silence 2h x=y -- " + "c" * 10_001, "longer than"),
    ],
)
def test_silence_mistakes(text, fragment):
    out = parse(text)
    assert isinstance(out, Invalid) and out.command == "silence", out
    assert fragment in out.message, out


def test_a_bare_number_is_not_a_duration():
    out = parse("silence 42")
    assert isinstance(out, Invalid) and "not a duration" in out.message


# --------------------------------------------------------------------------- help


def test_help_and_unknown_words():
    assert parse("") == Help()
    assert parse("   ") == Help()
    assert parse("help") == Help()
    assert parse("help silence") == Help(topic="silence")
    assert parse("help mute") == Help(topic="silence")
    assert parse("help frob") == Help(unknown="frob")
    assert parse("frobnicate 42") == Help(unknown="frobnicate")


def test_help_text_lists_every_command_with_the_slash_command():
    text = help_text("/inc")
    for usage in chatcmd.USAGE.values():
        assert f"`/inc {usage}`" in text
    assert help_text("/inc", "ack") == "Usage: `/inc ack ID [note]`: acknowledge incident ID (pages for it stop)."


# --------------------------------------------------------------------------- properties

words = st.sampled_from(
    ["ack", "resolve", "oncall", "silence", "help", "mute", "#", "42", "#7", "2h", "0", "--", "—", "=", "=~", "!~"]
)
fragments = st.one_of(
    words,
    st.text(max_size=12),
    st.text(st.sampled_from('ab=~!"\\{},#-— \t\n\u201c\x00\ud800'), max_size=12),
    st.from_regex(r'[a-z_]{1,5}(=|!=|=~|!~)"?[a-z.*(|]{0,5}"?', fullmatch=True),
)
texts = st.one_of(st.text(max_size=200), st.lists(fragments, max_size=8).map(" ".join))


@settings(max_examples=1500, deadline=None)
@given(texts)
def test_parse_never_raises_and_every_silence_is_valid(text):
    out = parse(text)
    assert isinstance(out, Ack | Resolve | OnCall | Silence | Help | Invalid)
    if isinstance(out, Silence):
        assert out.duration > timedelta(0)
        assert (out.incident is None) != (not out.matchers)
        if out.matchers:
            assert problems(out.matchers) is None
    if isinstance(out, Ack | Resolve):
        assert 1 <= out.incident <= 2**31 - 1
    if isinstance(out, Invalid):
        assert out.command in chatcmd.USAGE and out.message


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2**31 - 1), st.text(max_size=50))
def test_ack_takes_any_id_and_keeps_the_note(iid, note):
    out = parse(f"ack #{iid} {note}")
    if "\x00" in note or any(0xD800 <= ord(c) <= 0xDFFF for c in note):
        assert isinstance(out, Invalid)
    else:
        assert out == Ack(iid, note.strip() or None)
