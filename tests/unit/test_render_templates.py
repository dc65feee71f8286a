"""Notification templates: styles, escaping, size caps, fallbacks, overrides, digests and the apprise style pick."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from fsincident.config import TEMPLATE_NAMES, load
from fsincident.core import ConfigError
from fsincident.notify.channels.apprise import AppriseNotifier, AppriseOptions, url_style
from fsincident.notify.render import (
    KIND_LABELS,
    SHIPPED,
    STYLES,
    RenderedPage,
    Renderer,
    sample_digest,
    sample_page,
    shipped_templates,
)
from fsincident.sandbox import CompiledTemplate, markdown_escape
from tests.helpers import write_config

LINKS = {"ack": "https://fsi.example/l/ACKTOKEN", "resolve": "https://fsi.example/l/RESTOKEN"}
KINDS = ("trigger", "acknowledge", "resolve")


def page(style: str = "chat", kind: str = "trigger", renderer: Renderer | None = None, **data) -> RenderedPage:
    r = renderer or Renderer(external_url="https://fsi.example")
    return r.page(style, kind, {**sample_page(), **data}, LINKS, "user:alice")


def hostile_page(n_alerts: int = 1, n_labels: int = 4) -> dict:
    """A page whose labels and annotations try to inject markup (they come from ingested alerts)."""
    data = sample_page()
    alert = dict(data["alerts"][0])
    alert["annotations"] = {
        "summary": "<script>alert(1)</script> [click](http://evil.example) **bold** `tick`",
        "description": "<img src=x onerror=alert(1)>",
    }
    alert["generator_url"] = "javascript:alert(1)"
    data["alerts"] = [{**alert, "fingerprint": f"{i:016x}"} for i in range(n_alerts)]
    labels = {f"label_{i:02d}": "<b>v</b>_*x*" + "y" * 100 for i in range(n_labels)}
    data["incident"] = {**data["incident"], "title": "Disk <b>full</b> & [x](http://evil.example)", "labels": labels}
    return data


# ---------------------------------------------------------------------------- shipped templates


def test_every_template_name_is_shipped_and_known_to_the_loader():
    assert sorted(shipped_templates()) == sorted(TEMPLATE_NAMES)
    assert sorted(p.name.removesuffix(".j2") for p in SHIPPED.glob("*.j2")) == sorted(TEMPLATE_NAMES)


def test_shipped_templates_render_the_sample_page_in_every_kind():
    # The shipped templates, checked as if they were overrides: no problem on any kind.
    assert Renderer(shipped_templates()).check() == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("style", "fmt"),
    [("chat", "markdown"), ("email", "html"), ("email-text", "text"), ("text", "text"), ("raw", "text")],
)
def test_each_style_renders_each_kind(style, fmt, kind):
    p = page(style, kind, actor=None if kind == "trigger" else "alice")
    assert p.problems == ()
    assert p.format == fmt
    assert p.title.startswith(f"[{KIND_LABELS[kind]}] #1 DiskFull: db-1 disk is 97% full")
    assert "\n" not in p.title
    assert ("(critical)" in p.title) == (kind == "trigger")
    # The incident link is always there; ack only while triggered, resolve until resolved.
    assert "https://fsi.example/api/v1/incidents/1" in p.body
    assert (LINKS["ack"] in p.body) == (kind == "trigger")
    assert (LINKS["resolve"] in p.body) == (kind != "resolve")
    if kind != "trigger":
        assert "alice" in p.body
        assert "on it" in p.body


def test_chat_is_short_markdown_with_links_and_top_labels():
    p = page("chat")
    assert p.body.startswith("**TRIGGERED** · severity **critical** · 1 firing, 1 resolved")
    assert "- db-1 disk is 97% full (value 97.2)" in p.body
    assert "`alertname=DiskFull` `severity=critical`" in p.body
    assert p.body.endswith(
        f"[Acknowledge]({LINKS['ack']}) · [Resolve]({LINKS['resolve']}) · "
        "[Incident #1](https://fsi.example/api/v1/incidents/1)"
    )
    assert "\n\n\n" not in p.body


def test_chat_stays_short_for_a_big_group_and_keeps_its_links():
    p = Renderer().page("chat", "trigger", hostile_page(n_alerts=200, n_labels=40), LINKS, "channel:ops")
    assert len(p.body) <= 1500, len(p.body)
    assert "- … and 194 more" in p.body
    assert "+32 more" in p.body
    assert p.body.splitlines()[-1].startswith(f"[Acknowledge]({LINKS['ack']})")


def test_chat_escapes_markdown_from_alerts():
    p = Renderer().page("chat", "trigger", hostile_page(), LINKS, "channel:ops")
    # No link, emphasis or HTML that the alert brought: every markup character is escaped.
    assert "](http://evil.example)" not in p.body.replace("\\](", "")
    assert "\\[click\\](http://evil.example)" in p.body
    assert "\\*\\*bold\\*\\*" in p.body
    assert "\\<script\\>" in p.body
    # Labels sit in code spans, where markdown is inert.
    assert "`label_00=<b>v</b>_*x*" in p.body
    links = re.findall(r"(?<!\\)\[([^\]]*)\]\(([^)]*)\)", p.body)
    assert [text for text, _ in links] == ["Acknowledge", "Resolve", "Incident #1"]


def test_chat_pages_cannot_ping_a_whole_channel():
    data = hostile_page()
    data["incident"] = {**data["incident"], "title": "@everyone disk full", "labels": {"team": "@here"}}
    data["alerts"][0]["annotations"] = {"summary": "paging @channel and @all"}
    p = Renderer().page("chat", "trigger", data, LINKS, "channel:ops")
    for mention in ("@everyone", "@here", "@channel", "@all"):
        assert mention not in p.title + p.body, mention
    assert "@\u200beveryone disk full" in p.title and "paging @\u200bchannel and @\u200ball" in p.body
    # Mail is no chat: its text stays as the alert wrote it.
    assert "@everyone" in Renderer().page("email", "trigger", data, LINKS, "channel:ops").title


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.hrefs += [v for k, v in attrs if k == "href"]

    def handle_data(self, data):
        self.text.append(data)


def test_email_html_escapes_everything_from_the_alert():
    p = Renderer().page("email", "trigger", hostile_page(), LINKS, "user:alice")
    assert p.format == "html"
    parsed = _Collect()
    parsed.feed(p.body)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert set(parsed.tags) <= {
        "html",
        "head",
        "meta",
        "title",
        "body",
        "p",
        "h2",
        "h3",
        "ul",
        "li",
        "b",
        "br",
        "a",
        "span",
    }
    assert "javascript:alert(1)" not in parsed.hrefs
    assert parsed.hrefs == [LINKS["ack"], LINKS["resolve"], "/api/v1/incidents/1"]
    text = "".join(parsed.text)
    assert "<script>alert(1)</script> [click](http://evil.example)" in text  # shown, as text
    assert "Disk <b>full</b> & [x](http://evil.example)" in text
    assert "label_00=<b>v</b>_*x*" in text
    # The subject is text (apprise encodes it); it is not HTML-escaped.
    assert p.title == "[TRIGGERED] #1 Disk <b>full</b> & [x](http://evil.example) (critical)"


def test_email_html_spells_out_its_links_for_the_text_part():
    from apprise import NotifyFormat
    from apprise.conversion import convert_between

    p = page("email")
    text = convert_between(NotifyFormat.HTML, NotifyFormat.TEXT, p.body)
    for expected in (
        f"Acknowledge: {LINKS['ack']}",
        f"Resolve: {LINKS['resolve']}",
        "Incident: https://fsi.example/api/v1/incidents/1",
        "#1 DiskFull: db-1 disk is 97% full",
        "alertname=DiskFull",
        "severity=critical",
    ):
        assert expected in text


def test_email_text_lists_alerts_labels_and_links():
    p = page("email-text")
    assert p.format == "text"
    assert "Firing (1):\n- db-1 disk is 97% full (value 97.2), since 2026-03-01 12:00:00 UTC" in p.body
    assert "Resolved (1):\n- db-1 disk is 97% full" in p.body
    assert "Labels:\nalertname=DiskFull\nseverity=critical" in p.body
    assert f"Acknowledge: {LINKS['ack']}\nResolve: {LINKS['resolve']}\n" in p.body


def test_text_style_is_the_plain_message():
    p = page("text")
    assert p.body.startswith("1 alert firing, severity critical.\n- db-1 disk is 97% full (value 97.2)\n")
    assert p.body.endswith(
        f"Acknowledge: {LINKS['ack']}\nResolve: {LINKS['resolve']}\nhttps://fsi.example/api/v1/incidents/1"
    )
    assert page("raw") == p


def test_unknown_style_renders_as_text_and_says_so():
    p = page("carrier-pigeon")
    assert p.format == "text"
    assert p.body == page("text").body
    assert p.problems == ("unknown style 'carrier-pigeon'; used text",)


def test_a_page_without_incident_keeps_its_stored_text():
    r = Renderer()
    p = r.page("email", "info", {"title": "On call now:\nalice", "body": "alice is on call"}, {}, "user:alice")
    assert p == RenderedPage("On call now: alice", "alice is on call", "text")
    assert r.page("chat", "info", None, {}, "user:alice") == RenderedPage("", "", "text")


def test_links_default_to_the_incident_url_only():
    r = Renderer(external_url="https://fsi.example")
    p = r.page("chat", "trigger", sample_page(), {}, "channel:ops")
    assert "Acknowledge" not in p.body and "Resolve" not in p.body
    assert p.body.endswith("[Incident #1](https://fsi.example/api/v1/incidents/1)")
    p = r.page("chat", "trigger", sample_page(), {"incident": "https://ui.example/i/1"}, "channel:ops")
    assert p.body.endswith("[Incident #1](https://ui.example/i/1)")


# ---------------------------------------------------------------------------- context: no secrets


def test_context_holds_only_the_page_never_other_keys_of_the_data():
    data = {
        **sample_page(),
        "urls": ["slack://T000/B000/XXXXSECRET"],
        "token": "fsi_SECRET",
        "receiver": "channel:ops",
        "group_key": '{}:{alertname="DiskFull"}',
    }
    ctx = Renderer().context("trigger", data, LINKS, "user:alice")
    assert set(ctx) == {
        "kind",
        "kind_label",
        "incident",
        "alerts",
        "firing",
        "resolved",
        "reason",
        "actor",
        "note",
        "links",
        "recipient",
        "external_url",
    }
    assert set(ctx["links"]) == {"ack", "resolve", "incident"}
    assert "SECRET" not in repr(ctx)


def test_a_template_that_looks_for_secrets_finds_nothing():
    probe = CompiledTemplate("{{ urls }}")
    p = page("chat", renderer=Renderer({"chat": probe}), urls=["slack://T000/B000/XXXXSECRET"])
    assert "SECRET" not in p.body
    assert p.problems and "templates/chat.j2 failed" in p.problems[0]


# ---------------------------------------------------------------------------- overrides and fallbacks


def test_override_replaces_the_shipped_template():
    r = Renderer(
        {"chat": CompiledTemplate("{{ kind_label }} {{ incident.id }} for {{ recipient }}")}, "https://fsi.example"
    )
    assert page("chat", renderer=r).body == "TRIGGERED 1 for user:alice"
    assert page("text", renderer=r).body == page("text").body  # other styles keep theirs


def test_failing_override_falls_back_to_the_shipped_template(caplog):
    r = Renderer(
        {"chat": CompiledTemplate("{{ incident.nope }}"), "title": CompiledTemplate("{{ 1 // 0 }}")}, "https://x"
    )
    p = page("chat", renderer=r)
    shipped = page("chat", renderer=Renderer(external_url="https://x"))
    assert (p.body, p.title) == (shipped.body, shipped.title)
    assert p.format == "markdown"
    assert len(p.problems) == 2
    assert "templates/title.j2 failed" in p.problems[0] and "used the shipped one" in p.problems[0]


def test_failing_shipped_template_gives_a_plain_page_with_links():
    r = Renderer()
    r.shipped["email.html"] = CompiledTemplate("{{ missing }}", autoescape=True)
    p = page("email", renderer=r)
    assert p.format == "text"
    assert p.title == "[TRIGGERED] #1 DiskFull: db-1 disk is 97% full"
    assert "severity critical" in p.body
    assert f"Acknowledge: {LINKS['ack']}" in p.body
    assert "Labels: alertname=DiskFull, severity=critical" in p.body
    assert any("shipped template email.html.j2 failed" in x for x in p.problems)


def test_html_override_is_autoescaped_even_when_compiled_without():
    r = Renderer({"email.html": CompiledTemplate("<p>{{ incident.title }}</p>")})
    p = r.page("email", "trigger", hostile_page(), LINKS, "user:alice")
    assert p.body == "<p>Disk &lt;b&gt;full&lt;/b&gt; &amp; [x](http://evil.example)</p>"


def test_check_reports_overrides_that_fail_on_the_sample_page():
    r = Renderer(
        {
            "chat": CompiledTemplate("{{ incident.labels.team }}"),
            "title": CompiledTemplate("{{ incident.title }}"),
            "digest": CompiledTemplate("{{ items[5].title }}"),
        }
    )
    problems = r.check()
    assert len(problems) == 2
    assert problems[0].startswith("templates/chat.j2: template error:") and "team" in problems[0]
    assert problems[1].startswith("templates/digest.j2: template error:")


# ---------------------------------------------------------------------------- digest


def test_digest_markdown_for_chat_and_text_otherwise():
    r = Renderer()
    chat = r.digest("chat", sample_digest(), "channel:ops")
    assert chat.format == "markdown" and chat.problems == ()
    assert chat.title == "[DIGEST] 2 notifications about 2 incidents"
    assert chat.body.startswith("**2 notifications** about 2 incidents held back by the rate limit:\n\n")
    assert "- \\[TRIGGERED\\] #1 DiskFull: db-1 disk is full (warning) (2026-03-01 12:00)" in chat.body
    text = r.digest("email", sample_digest(), "user:alice")
    assert text.format == "text"
    assert "- [TRIGGERED] #2 DiskFull: db-2 disk is full (warning) (2026-03-01 12:00)" in text.body


def test_digest_of_many_shows_fifty():
    from datetime import UTC, datetime

    items = [
        {**sample_digest()[0], "incident_id": i, "created_at": datetime(2026, 3, 1, tzinfo=UTC)} for i in range(80)
    ]
    d = Renderer().digest("text", items, "channel:ops")
    assert d.title == "[DIGEST] 80 notifications about 80 incidents"
    assert d.body.count("\n- [TRIGGERED]") == 50
    assert d.body.endswith("- … and 30 more")


def test_failing_digest_template_gives_a_plain_list():
    r = Renderer({"digest": CompiledTemplate("{{ nope }}")})
    r.shipped["digest"] = CompiledTemplate("{{ nope }}")
    d = r.digest("chat", sample_digest(), "channel:ops")
    assert d.format == "text"
    assert d.body.splitlines()[1] == "- [TRIGGERED] #1 DiskFull: db-1 disk is full (warning)"
    assert len(d.problems) == 2


# ---------------------------------------------------------------------------- the legacy API


def test_render_keeps_working_for_the_outbox_text():
    data = sample_page()
    r = Renderer(external_url="https://fsi.example")
    title, body = r.render("acknowledge", data["incident"], data["alerts"], "bob", "looking")
    assert title == "[ACKNOWLEDGED] #1 DiskFull: db-1 disk is 97% full"
    assert body == (
        "Acknowledged by bob: looking.\nLabels: alertname=DiskFull, severity=critical\n"
        "https://fsi.example/api/v1/incidents/1"
    )
    title, body = r.render("trigger", {**data["incident"], "notify_reason": "repeat"}, data["alerts"], None, None)
    assert body.startswith("Still firing: 1 alert firing, severity critical.")


# ---------------------------------------------------------------------------- sandbox filters


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a_b *c* [d](e) <f> `g` | ~", "a\\_b \\*c\\* \\[d\\](e) \\<f\\> \\`g\\` \\| \\~"),
        ("# heading", "\\# heading"),
        ("- item", "\\- item"),
        ("12. item", "12\\. item"),
        ("two\nlines", "two lines"),
        ("a#b c-d", "a#b c-d"),
        ("@here x@y @ z", "@\u200bhere x@\u200by @ z"),
    ],
)
def test_markdown_escape(raw, escaped):
    assert markdown_escape(raw) == escaped


# ---------------------------------------------------------------------------- apprise: style by URL


@pytest.mark.parametrize(
    ("url", "style"),
    [
        ("mailto://user:pw@example.com?to=ops@example.com", "email"),
        ("mailtos://user:pw@example.com?format=text", "email-text"),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", "chat"),
        ("https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", "chat"),
        ("https://discord.com/api/webhooks/1234/abcdefg", "chat"),
        ("mmost://chat.example.com/abcdefghijklmnop", "chat"),
        ("tgram://123456789:abcdefg_hijklmnop/12345", "chat"),
        ("ntfy://ntfy.example.com/topic", "chat"),
        ("workflows://host:443/abc/def", "chat"),
        ("json://127.0.0.1:9099/hook", "text"),
        ("pover://user@token", "text"),
    ],
)
def test_apprise_style_by_url(url, style):
    assert url_style(url) == style


def test_apprise_style_follows_the_template_option():
    urls = ["mailto://u:p@example.com", "mailto://u:p@example.com?format=text", "json://127.0.0.1/x"]
    auto = AppriseNotifier(AppriseOptions(name="x", urls=urls))
    assert [auto.style(i) for i in range(3)] == ["email", "email-text", "text"]
    assert auto.style(7) == "text"
    chat = AppriseNotifier(AppriseOptions(name="x", urls=urls, template="chat"))
    assert [chat.style(i) for i in range(3)] == ["chat", "chat", "chat"]
    email = AppriseNotifier(AppriseOptions(name="x", urls=urls, template="email"))
    assert [email.style(i) for i in range(3)] == ["email", "email-text", "email"]


def test_every_style_has_templates_that_exist():
    names = set(shipped_templates())
    for spec in STYLES.values():
        assert {spec.title, spec.body} <= names


# ---------------------------------------------------------------------------- config: overrides are checked


def _conf(tmp_path, templates: dict[str, str]):
    d = write_config(tmp_path / "cfg", "channels:\n  - {name: ops, urls: ['json://127.0.0.1:9099/hook']}\n")
    (d / "templates").mkdir()
    for name, text in templates.items():
        (d / "templates" / name).write_text(text)
    return d


def test_config_loads_every_new_override_name(tmp_path):
    d = _conf(tmp_path, {f"{n}.j2": "{{ kind }}" for n in TEMPLATE_NAMES})
    cfg = load(d, environ={})
    assert sorted(cfg.templates) == sorted(TEMPLATE_NAMES)
    assert cfg.templates["email.html"].autoescape and not cfg.templates["email.txt"].autoescape


def test_config_refuses_unknown_and_broken_overrides(tmp_path):
    d = _conf(tmp_path, {"email.j2": "x", "chat.j2": "{% if %}", "email.html.j2": "ok"})
    with pytest.raises(ConfigError) as ei:
        load(d, environ={})
    msgs = [str(p) for p in ei.value.problems]
    assert any(
        m.endswith("/templates/email.j2: unknown template name (known: " + ", ".join(TEMPLATE_NAMES) + ")")
        for m in msgs
    )
    assert any("/templates/chat.j2:1: template error:" in m for m in msgs)
    assert len(msgs) == 2


def test_check_command_warns_about_an_override_failing_on_a_sample(tmp_path, capsys):
    from fsincident.cli import main

    d = _conf(tmp_path, {"chat.j2": "{{ incident.labels.team }}", "message.j2": "{{ incident.title }}"})
    assert main(["check", "--config", str(d)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: templates/chat.j2: template error:")
    assert err.count("warning:") == 1
