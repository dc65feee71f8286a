"""The chat-ops command language (``/fsincident ack 42``), parsed without I/O.

:func:`parse` turns the text after the slash command into one command object and never raises: whatever it
cannot understand becomes :class:`Invalid` (a known command used wrongly, with its usage) or :class:`Help`
(an unknown word, or nothing at all). Commands::

    ack ID [note]
    resolve ID [note]
    oncall [SCHEDULE]
    silence DURATION (ID | MATCHER...) [-- comment]
    help [COMMAND]

IDs may be written ``42`` or ``#42``. Matchers are Alertmanager's (``alertname=DiskFull``,
``instance=~"db.*"``, ``{job="api", env!="dev"}``), separated by spaces or commas; a quoted value may contain
spaces. Typographic quotes that chat clients substitute (“ ”) count as ``"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from fsincident.core import parse_duration, storable_text
from fsincident.matchers import Matcher, MatcherError
from fsincident.silences.match import parse_matcher_text, problems

MAX_ID = 2**31 - 1
MAX_NOTE = 4000
MAX_COMMENT = 10_000
MAX_SCHEDULE = 200
MAX_MATCHERS = 100
MAX_TEXT = 20_000
"""Longer command texts are refused as a whole."""

USAGE = {
    "ack": "ack ID [note]",
    "resolve": "resolve ID [note]",
    "oncall": "oncall [SCHEDULE]",
    "silence": "silence DURATION (ID | MATCHER...) [-- comment]",
    "help": "help [COMMAND]",
}
SUMMARY = {
    "ack": "acknowledge incident ID (pages for it stop)",
    "resolve": "resolve incident ID",
    "oncall": "who is on call now (for every schedule, or for SCHEDULE)",
    "silence": "silence the alerts of incident ID, or those matching e.g. alertname=DiskFull, for DURATION",
    "help": "this list",
}
ALIASES = {
    "acknowledge": "ack",
    "resolved": "resolve",
    "on-call": "oncall",
    "on_call": "oncall",
    "who": "oncall",
    "mute": "silence",
    "?": "help",
}
COMMENT_MARKERS = ("--", "\u2014", "\u2013")
"""``--``, and the em/en dash a chat client may turn it into."""

_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00a0": " "})
_ID = re.compile(r"#?([0-9]{1,12})")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_OP = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*(=~|!~|!=|=)")
_OP_START = re.compile(r"(=~|!~|!=|=)")


@dataclass(frozen=True)
class Ack:
    """Acknowledge incident ``incident``."""

    incident: int
    note: str | None = None


@dataclass(frozen=True)
class Resolve:
    """Resolve incident ``incident``."""

    incident: int
    note: str | None = None


@dataclass(frozen=True)
class OnCall:
    """Who is on call for ``schedule`` (None: every schedule)."""

    schedule: str | None = None


@dataclass(frozen=True)
class Silence:
    """Silence for ``duration`` the alerts of incident ``incident``, or those matching ``matchers``."""

    duration: timedelta
    incident: int | None = None
    matchers: tuple[Matcher, ...] = ()
    comment: str | None = None


@dataclass(frozen=True)
class Help:
    """Show the command list (``topic``: one command's usage); ``unknown`` is the word that was no command."""

    topic: str | None = None
    unknown: str | None = None


@dataclass(frozen=True)
class Invalid:
    """A known ``command`` used wrongly; ``message`` says what is wrong (its usage is ``USAGE[command]``)."""

    command: str
    message: str


Command = Ack | Resolve | OnCall | Silence | Help | Invalid


def parse(text: str) -> Command:
    """The command in ``text`` (the slash command's argument); never raises."""
    if not isinstance(text, str):
        return Help()
    text = text.strip()
    if not text:
        return Help()
    if len(text) > MAX_TEXT:
        return Invalid("help", f"the command is longer than {MAX_TEXT} characters")
    word, rest = _first(text)
    name = word.lower()
    name = ALIASES.get(name, name)
    if name in ("ack", "resolve"):
        return _incident_action(name, rest)
    if name == "oncall":
        return _oncall(rest)
    if name == "silence":
        return _silence(rest)
    if name == "help":
        topic = rest.split()[0].lower() if rest.split() else None
        topic = ALIASES.get(topic, topic) if topic else None
        return Help(topic=topic if topic in USAGE else None, unknown=None if topic in USAGE or not topic else topic)
    return Help(unknown=word[:64])


def _first(text: str) -> tuple[str, str]:
    """The first word of ``text`` and the rest (stripped), split at any whitespace."""
    parts = text.strip().split(maxsplit=1)
    return (parts[0], parts[1].strip() if len(parts) > 1 else "") if parts else ("", "")


def incident_id(token: str) -> int | None:
    """The incident id in ``42`` or ``#42`` (1 to 2^31-1), or None; never raises."""
    m = _ID.fullmatch(token)
    if not m:
        return None
    v = int(m.group(1))
    return v if 1 <= v <= MAX_ID else None


def _incident_action(name: str, rest: str) -> Command:
    first, note = _first(rest)
    if not first:
        return Invalid(name, "which incident? Give its number")
    iid = incident_id(first)
    if iid is None:
        return Invalid(name, f"{_show(first)} is not an incident number")
    if len(note) > MAX_NOTE:
        return Invalid(name, f"the note is longer than {MAX_NOTE} characters")
    if not storable_text(note):
        return Invalid(name, "the note contains a NUL character or an unpaired surrogate")
    cls = Ack if name == "ack" else Resolve
    return cls(iid, note or None)


def _oncall(rest: str) -> Command:
    name = rest.strip()
    if not name:
        return OnCall()
    if len(name) > MAX_SCHEDULE or len(name.split()) > 1:
        return Invalid("oncall", f"{_show(name)} is not a schedule name")
    return OnCall(name)


def _silence(rest: str) -> Command:
    rest = rest.translate(_QUOTES)
    tokens = _tokens(rest)
    if not tokens:
        return Invalid("silence", "for how long? e.g. 2h")
    raw = tokens[0][0]
    try:
        duration = parse_duration(raw)
    except (ValueError, OverflowError):
        return Invalid("silence", f"{_show(raw)} is not a duration (use e.g. 30m, 2h, 1d)")
    if duration <= timedelta(0):
        return Invalid("silence", "the duration must be positive")
    targets = tokens[1:]
    comment: str | None = None
    for i, (tok, start) in enumerate(targets):
        if tok in COMMENT_MARKERS:
            comment = rest[start + len(tok) :].strip() or None
            targets = targets[:i]
            break
    if comment is not None:
        if len(comment) > MAX_COMMENT:
            return Invalid("silence", f"the comment is longer than {MAX_COMMENT} characters")
        if not storable_text(comment):
            return Invalid("silence", "the comment contains a NUL character or an unpaired surrogate")
    words = [t for t, _ in targets]
    if not words:
        return Invalid("silence", "what? Give an incident number or matchers such as alertname=DiskFull")
    if len(words) == 1 and _ID.fullmatch(words[0]):
        iid = incident_id(words[0])
        if iid is None:
            return Invalid("silence", f"{_show(words[0])} is not an incident number")
        return Silence(duration, incident=iid, comment=comment)
    matchers: list[Matcher] = []
    for group in _matcher_groups(words):
        if _ID.fullmatch(group):
            return Invalid("silence", "give one incident number, or matchers (not both, not several numbers)")
        try:
            matchers.extend(parse_matcher_text(group))
        except MatcherError as e:
            return Invalid("silence", str(e))
        if len(matchers) > MAX_MATCHERS:
            return Invalid("silence", f"a silence has at most {MAX_MATCHERS} matchers")
    why = problems(matchers)
    if why:
        return Invalid("silence", why)
    return Silence(duration, matchers=tuple(matchers), comment=comment)


def _tokens(text: str) -> list[tuple[str, int]]:
    """Words of ``text`` with their start offsets, split at whitespace outside double quotes (``\\"`` escapes)."""
    out: list[tuple[str, int]] = []
    start: int | None = None
    quoted = escaped = False
    for i, c in enumerate(text):
        if start is None:
            if c.isspace():
                continue
            start = i
        if quoted:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
            continue
        if c == '"':
            quoted = True
        elif c.isspace():
            out.append((text[start:i], start))
            start = None
    if start is not None:
        out.append((text[start:], start))
    return out


def _matcher_groups(words: list[str]) -> list[str]:
    """Rejoin matchers a user wrote with spaces around the operator (``alertname = Foo``, ``job =~ "a.*"``)."""
    out: list[str] = []
    for w in words:
        if out:
            prev = out[-1]
            if _NAME_OP.fullmatch(prev.lstrip("{").strip()) or (
                _NAME.fullmatch(prev.lstrip("{").strip()) and _OP_START.match(w)
            ):
                out[-1] = prev + " " + w
                continue
        out.append(w)
    return out


def _show(text: str) -> str:
    """A short quoted form of user text for a message."""
    text = text if len(text) <= 40 else text[:40] + "…"
    return "`" + text.replace("`", "'") + "`"


def help_text(command: str = "/fsincident", topic: str | None = None) -> str:
    """The command list (or one command's usage) for ``command`` (the slash command's name); never raises."""
    if topic in USAGE:
        return f"Usage: `{command} {USAGE[topic]}`: {SUMMARY[topic]}."
    lines = [f"`{command} {USAGE[k]}`: {SUMMARY[k]}" for k in USAGE]
    lines.append(
        f"Examples: `{command} ack 42 looking into it`, `{command} silence 2h 42`, "
        f'`{command} silence 30m alertname=DiskFull instance=~"db.*" -- disk swap`, `{command} oncall primary`'
    )
    return "\n".join(lines)
