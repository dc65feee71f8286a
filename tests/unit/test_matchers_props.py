"""Matchers as written in routes, inhibit rules, silences and amtool (Alertmanager's syntax), by properties:
printing and parsing round-trip, ``=``/``!=`` and ``=~``/``!~`` are complements, regexes are anchored."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fsincident.matchers import OPS, Matcher, MatcherError, parse_matcher_list

names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
LITERAL = "abcxyzAB019_-/: ,\"'\\\n"
literals = st.text(st.sampled_from(LITERAL), max_size=8)
regexes = st.one_of(
    st.sampled_from([".*", ".+", "a|b", "[a-c]+", "x?y*", "(ab)+", "", "prod|stage", "5..", "[^,]*", '"q"']),
    literals.map(lambda s: "".join("\\" + c if not c.isalnum() and c not in "_\n" else c for c in s)),
)


@st.composite
def matchers(draw: st.DrawFn) -> Matcher:
    op = draw(st.sampled_from(OPS))
    value = draw(regexes if op in ("=~", "!~") else texts)
    return Matcher.make(draw(names), op, value)


# --------------------------------------------------------------------------- hand cases (AM's documentation)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('foo="bar"', [("foo", "=", "bar")]),
        ("foo=bar", [("foo", "=", "bar")]),
        ("foo = bar", [("foo", "=", "bar")]),
        ('statuscode!~"5.."', [("statuscode", "!~", "5..")]),
        ('{foo="bar", dings!="bums"}', [("foo", "=", "bar"), ("dings", "!=", "bums")]),
        ('a=""', [("a", "=", "")]),
        ("a=", [("a", "=", "")]),
        ('a="x\\ny"', [("a", "=", "x\ny")]),
    ],
)
def test_hand_cases(text, expected):
    assert [(m.name, m.op, m.value) for m in parse_matcher_list(text)] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('statuscode=~"5.."', [("statuscode", "=~", "5..")]),
        ("foo=~bar.*", [("foo", "=~", "bar.*")]),
        ('{foo = "bar", dings != "bums", }', [("foo", "=", "bar"), ("dings", "!=", "bums")]),
        ('{quote="She said: \\"Hi, ladies!\\""}', [("quote", "=", 'She said: "Hi, ladies!"')]),
        ('a=~"x,y", b="1"', [("a", "=~", "x,y"), ("b", "=", "1")]),
        pytest.param("foo=bar,dings!=bums", [("foo", "=", "bar"), ("dings", "!=", "bums")]),
        pytest.param("foo=bar, dings!=bums", [("foo", "=", "bar"), ("dings", "!=", "bums")]),
        pytest.param('a="b", c=d', [("a", "=", "b"), ("c", "=", "d")]),
    ],
)
def test_alertmanager_syntax(text, expected):
    assert [(m.name, m.op, m.value) for m in parse_matcher_list(text)] == expected


@pytest.mark.parametrize("text", ["", "   ", "{}", "foo", "=bar", "1a=b", 'a="b', 'a="b"c"', "a=~(", 'a~="b"'])
def test_bad_matchers_are_refused(text):
    with pytest.raises(MatcherError):
        parse_matcher_list(text)


# --------------------------------------------------------------------------- properties


@settings(max_examples=500)
@given(matchers())
def test_printing_and_parsing_round_trips(m):
    assert parse_matcher_list(str(m)) == (m,)


@settings(max_examples=300)
@given(st.lists(matchers(), min_size=1, max_size=4), st.booleans(), st.sampled_from([",", ", ", " , "]))
def test_lists_round_trip(ms, braces, sep):
    text = sep.join(str(m) for m in ms)
    assert parse_matcher_list("{" + text + "}" if braces else text) == tuple(ms)


@settings(max_examples=300)
@given(names, st.sampled_from(["=", "!=", "!~"]), st.text(st.sampled_from("abcXYZ019_-./:"), max_size=8))
def test_unquoted_values_are_taken_as_written(name, op, value):
    [m] = parse_matcher_list(f"{name}{op}{value}")
    assert (m.name, m.op, m.value) == (name, op, value)


@settings(max_examples=500)
@given(matchers(), texts)
def test_equal_and_not_equal_are_complements(m, value):
    positive = {"=": "=", "!=": "=", "=~": "=~", "!~": "=~"}[m.op]
    negative = {"=": "!=", "=~": "!~"}[positive]
    p, n = Matcher.make(m.name, positive, m.value), Matcher.make(m.name, negative, m.value)
    assert p.matches(value) != n.matches(value)


@settings(max_examples=300)
@given(literals, texts, texts)
def test_regexes_are_anchored(literal, before, after):
    pattern = "".join("\\" + c if not c.isalnum() and c not in "_\n" else c for c in literal)
    m = Matcher.make("a", "=~", pattern)
    assert m.matches(literal)
    assert m.matches(before + literal + after) == (before + literal + after == literal)
    # `.*` around it is the way to match a part, as in Prometheus; `.` matches newlines too.
    assert Matcher.make("a", "=~", f".*{pattern}.*").matches(before + literal + after)


@settings(max_examples=200)
@given(texts)
def test_a_missing_label_matches_as_the_empty_string(value):
    labels: dict[str, str] = {}
    for op, val in (("=", ""), ("=~", ".*"), ("!=", value), ("!~", ".+")):
        assume(op != "!=" or value != "")
        assert Matcher.make("a", op, val).matches(labels.get("a", ""))


@settings(max_examples=500)
@given(st.text(max_size=30))
def test_any_text_parses_or_raises_matcher_error(text):
    try:
        ms = parse_matcher_list(text)
    except MatcherError:
        return
    assert ms and all(isinstance(m, Matcher) and m.op in OPS for m in ms)
