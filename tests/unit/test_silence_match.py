"""Pure silence and inhibition decisions (``silences.match``): hand cases and hypothesis properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.core import Labels
from fsincident.matchers import Matcher, MatcherError
from fsincident.silences import match
from fsincident.silences.match import ActiveSilence, Inhibitor, InhibitRule, SourceAlert

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def m(text: str) -> tuple[Matcher, ...]:
    return match.parse_matcher_text(text)


def rule(source: str, target: str, equal: tuple[str, ...] = ()) -> InhibitRule:
    return match.compile_rule([source], [target], {}, {}, equal)


def src(**labels: str) -> SourceAlert:
    return SourceAlert(Labels(labels).fingerprint, labels)


# ---------------------------------------------------------------------- silences


def test_state_is_half_open():
    assert match.state(T0, T0 + H, T0 - timedelta(microseconds=1)) == "pending"
    assert match.state(T0, T0 + H, T0) == "active"
    assert match.state(T0, T0 + H, T0 + H - timedelta(microseconds=1)) == "active"
    assert match.state(T0, T0 + H, T0 + H) == "expired"
    # Expiring a pending silence sets both ends to now: it is expired at once.
    assert match.state(T0, T0, T0) == "expired"


def test_silence_matching_like_alertmanager():
    s = ActiveSilence("s1", m('{alertname="Disk", instance=~"db[0-9]+"}'), T0, T0 + H)
    assert s.mutes({"alertname": "Disk", "instance": "db12", "x": "y"}, T0)
    assert not s.mutes({"alertname": "Disk", "instance": "db12a"}, T0)  # regexes are anchored
    assert not s.mutes({"alertname": "Disk"}, T0)  # a missing label is ""
    assert not s.mutes({"alertname": "Disk", "instance": "db1"}, T0 + H)
    assert not s.mutes({"alertname": "Disk", "instance": "db1"}, T0 - H)
    neg = ActiveSilence("s2", m('{alertname="Disk", env!="prod"}'), T0, T0 + H)
    assert neg.mutes({"alertname": "Disk"}, T0)  # "" != "prod"
    assert not neg.mutes({"alertname": "Disk", "env": "prod"}, T0)


def test_silenced_by_sorted_ids_of_active_matches():
    sils = [
        ActiveSilence("b", m("alertname=Disk"), T0, T0 + H),
        ActiveSilence("a", m('alertname=~"D.*"'), T0, T0 + H),
        ActiveSilence("c", m("alertname=Disk"), T0 + H, T0 + 2 * H),  # pending
        ActiveSilence("d", m("alertname=Cpu"), T0, T0 + H),
    ]
    assert match.silenced_by(sils, {"alertname": "Disk"}, T0) == ("a", "b")
    assert match.silenced_by(sils, {"alertname": "Disk"}, T0 + H) == ("c",)
    assert match.silenced_by(sils, {"alertname": "Net"}, T0) == ()


def test_matcher_text_forms():
    assert [str(x) for x in m("alertname=Foo")] == ['alertname="Foo"']
    assert [str(x) for x in m('job=~"api|web"')] == ['job=~"api|web"']
    assert [str(x) for x in m('{a="1", b!~"x.*"}')] == ['a="1"', 'b!~"x.*"']
    assert [str(x) for x in m("{a=}")] == ['a=""']  # as Alertmanager reads it
    for bad in ["", "=x", '1a="b"', 'a=~"("']:
        with pytest.raises(MatcherError):
            m(bad)


def test_am_matchers():
    assert str(match.matcher_from_am({"name": "a", "value": "x", "isRegex": False})) == 'a="x"'
    assert str(match.matcher_from_am({"name": "a", "value": "x", "isRegex": False, "isEqual": False})) == 'a!="x"'
    assert str(match.matcher_from_am({"name": "a", "value": "x.*", "isRegex": True, "isEqual": True})) == 'a=~"x.*"'
    assert str(match.matcher_from_am({"name": "a", "value": "x.*", "isRegex": True, "isEqual": False})) == 'a!~"x.*"'
    with pytest.raises(MatcherError, match='invalid label name "1a"'):
        match.matcher_from_am({"name": "1a", "value": "x", "isRegex": False})
    with pytest.raises(MatcherError, match='invalid regular expression "\\("'):
        match.matcher_from_am({"name": "a", "value": "(", "isRegex": True})
    with pytest.raises(ValueError):
        match.matcher_from_am({"name": "a", "value": 1, "isRegex": False})
    with pytest.raises(ValueError):
        match.matcher_from_am({"name": "a", "value": "x", "isRegex": "yes"})


def test_problems_as_alertmanager_words_them():
    assert match.problems([]) == "at least one matcher required"
    assert match.problems(m('a=""')) == "at least one matcher must not match the empty string"
    assert match.problems(m('a=~".*"')) == "at least one matcher must not match the empty string"
    assert match.problems(m('{a=~".*", b!="x"}')) == "at least one matcher must not match the empty string"
    assert match.problems(m('{a=~".*", b="x"}')) is None
    assert match.problems(m('a=~".+"')) is None


def test_filter_needs_the_same_matcher_in_the_silence():
    own = m('{alertname="Disk", job=~"api|web"}')
    assert match.filter_matches(m("alertname=Disk"), own)
    assert match.filter_matches(m('job=~"api|web"'), own)
    assert match.filter_matches((), own)
    assert not match.filter_matches(m('alertname=~"Disk"'), own)  # another operator
    assert not match.filter_matches(m("job=api"), own)  # equality against a regex matcher's text
    assert not match.filter_matches(m('{alertname="Disk", env="prod"}'), own)


names = st.sampled_from(["a", "b", "alertname", "_x"])
plain_values = st.text(st.sampled_from('abc-é"\\\n '), max_size=6)
regex_values = st.sampled_from(["a.*", "b|c", "", ".+", "[ab]c?", "é+"])
am_matchers = st.one_of(
    st.builds(
        lambda n, v, e: {"name": n, "value": v, "isRegex": False, "isEqual": e}, names, plain_values, st.booleans()
    ),
    st.builds(
        lambda n, v, e: {"name": n, "value": v, "isRegex": True, "isEqual": e}, names, regex_values, st.booleans()
    ),
)
label_sets = st.dictionaries(names, st.sampled_from(["", "a", "b", "c", "bc", "é", "ac"]), max_size=4)


@given(am_matchers)
def test_am_form_round_trips_and_text_form_too(obj):
    mt = match.matcher_from_am(obj)
    assert match.matcher_to_am(mt) == obj
    assert match.parse_matcher_text(str(mt)) == (mt,)


@given(st.lists(am_matchers, max_size=4), label_sets)
def test_positive_and_negative_operators_are_complements(objs, labels):
    for obj in objs:
        mt = match.matcher_from_am(obj)
        flipped = match.matcher_from_am({**obj, "isEqual": not obj["isEqual"]})
        value = labels.get(obj["name"], "")
        assert mt.matches(value) != flipped.matches(value)
    ms = [match.matcher_from_am(o) for o in objs]
    assert match.matches(ms, labels) == all(x.matches(labels.get(x.name, "")) for x in ms)


@given(
    st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 4)), max_size=5),
    st.integers(-4, 8),
    label_sets,
)
def test_silenced_by_equals_the_definition(spans, at, labels):
    sils = [
        ActiveSilence(f"s{i}", m('alertname=~"a.*"') if i % 2 else m("b=a"), T0 + start * H, T0 + (start + length) * H)
        for i, (start, length) in enumerate(spans)
    ]
    now = T0 + at * H
    want = sorted(
        s.id for s in sils if match.state(s.starts_at, s.ends_at, now) == "active" and match.matches(s.matchers, labels)
    )
    assert list(match.silenced_by(sils, labels, now)) == want


# ---------------------------------------------------------------------- inhibition


def test_classic_severity_inhibition():
    r = rule('severity="critical"', 'severity="warning"', ("alertname", "instance"))
    crit = src(alertname="Disk", instance="db1", severity="critical")
    inh = Inhibitor([r], [crit])
    assert inh.inhibited_by({"alertname": "Disk", "instance": "db1", "severity": "warning"}) == (crit.fingerprint,)
    assert inh.inhibited_by({"alertname": "Disk", "instance": "db2", "severity": "warning"}) == ()
    assert inh.inhibited_by({"alertname": "Disk", "instance": "db1", "severity": "info"}) == ()
    assert inh.inhibited_by(crit.labels) == ()  # a source never inhibits itself


def test_equal_treats_missing_as_empty():
    r = rule("alertname=ClusterDown", "alertname=NodeDown", ("cluster",))
    inh = Inhibitor([r], [src(alertname="ClusterDown")])
    assert inh.inhibited_by({"alertname": "NodeDown"})  # missing == missing
    assert inh.inhibited_by({"alertname": "NodeDown", "cluster": ""})  # "" == missing
    assert not inh.inhibited_by({"alertname": "NodeDown", "cluster": "eu"})


def test_alerts_matching_both_sides_do_not_inhibit_each_other():
    # Alertmanager: when the target also matches the source side, sources that match the target side are skipped.
    r = rule('severity=~"critical|warning"', 'severity=~"warning|info"', ("alertname",))
    w1 = src(alertname="A", severity="warning", n="1")
    w2 = src(alertname="A", severity="warning", n="2")
    crit = src(alertname="A", severity="critical")
    assert Inhibitor([r], [w1, w2]).inhibited_by(w1.labels) == ()
    assert Inhibitor([r], [w1, w2, crit]).inhibited_by(w1.labels) == (crit.fingerprint,)
    # A target that matches only the target side is inhibited by any source, two-sided ones included.
    assert Inhibitor([r], [w1]).inhibited_by({"alertname": "A", "severity": "info"}) == (w1.fingerprint,)


def test_first_rule_and_lowest_fingerprint_reported():
    r1 = rule("alertname=X", "team=t")
    r2 = rule("alertname=Y", "team=t")
    xs = [src(alertname="X", n=str(i)) for i in range(5)]
    y = src(alertname="Y")
    inh = Inhibitor([r2, r1], [*xs, y])
    assert inh.inhibited_by({"team": "t"}) == (y.fingerprint,)
    inh = Inhibitor([r1, r2], [*xs, y])
    assert inh.inhibited_by({"team": "t"}) == (min(x.fingerprint for x in xs),)


def test_legacy_equality_maps():
    r = match.compile_rule([], [], {"severity": "critical"}, {"severity": "warning"}, ["alertname"])
    assert [str(x) for x in r.source] == ['severity="critical"']
    assert [str(x) for x in r.target] == ['severity="warning"']


small_labels = st.fixed_dictionaries(
    {}, optional={"alertname": st.sampled_from(["A", "B"]), "sev": st.sampled_from(["c", "w", ""]), "k": st.just("1")}
)
rule_parts = st.sampled_from(["alertname=A", "alertname=B", 'sev="c"', 'sev=~"c|w"', 'sev!="c"', 'k="1"', "k!=1"])
rules = st.lists(
    st.builds(
        lambda s, t, eq: rule(s, t, eq),
        rule_parts,
        rule_parts,
        st.lists(st.sampled_from(["alertname", "sev", "k"]), max_size=2, unique=True).map(tuple),
    ),
    max_size=3,
)


@settings(max_examples=300)
@given(rules, st.lists(small_labels, max_size=6), small_labels)
def test_inhibitor_agrees_with_the_definition(rs, source_labels, target):
    sources = [SourceAlert(Labels(lab).fingerprint, lab) for lab in source_labels]
    got = Inhibitor(rs, sources).inhibited_by(target)
    want = match.inhibitors(rs, sources, target)
    assert bool(got) == bool(want)
    if got:
        (fp,) = got
        assert fp in want
        first = next(r for r in rs if match.inhibitors([r], sources, target))
        assert fp == min(match.inhibitors([first], sources, target))


@settings(max_examples=200)
@given(rules, st.lists(small_labels, max_size=6))
def test_no_alert_inhibits_itself(rs, source_labels):
    sources = [SourceAlert(Labels(lab).fingerprint, lab) for lab in source_labels]
    for s in sources:
        assert s.fingerprint not in match.inhibitors(rs, sources, s.labels)
        assert s.fingerprint not in Inhibitor(rs, sources).inhibited_by(s.labels)
