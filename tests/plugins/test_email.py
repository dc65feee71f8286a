"""E-mail through apprise to a real SMTP server (aiosmtpd on loopback): the e-mail templates arrive as an HTML part
and a text part with the incident's title, labels and signed links; ``?format=text`` sends the text template."""

from __future__ import annotations

import asyncio
import re
import time
from email.message import EmailMessage

from fsincident.notify.channels.apprise import AppriseNotifier, AppriseOptions
from fsincident.notify.render import Renderer, sample_page
from fsincident.plugins import Message
from tests.helpers import free_port, mailto, write_config

LINKS = {"ack": "https://fsi.example/l/ACK-abc123", "resolve": "https://fsi.example/l/RES-def456"}


def content(part: EmailMessage) -> str:
    """A text part's content with SMTP's CRLF line ends made LF."""
    return part.get_content().replace("\r\n", "\n")


def hostile() -> dict:
    data = sample_page()
    data["incident"] = {
        **data["incident"],
        "title": "DiskFull: db-1 <disk> & /var 97% full",
        "labels": {"alertname": "DiskFull", "severity": "critical", "team": "storage", "instance": "db-1:9100"},
    }
    return data


async def send(notifier: AppriseNotifier, kind: str = "trigger", actor: str | None = None) -> None:
    style = notifier.style(0)
    page = Renderer(external_url="https://fsi.example").page(
        style, kind, {**hostile(), "actor": actor}, LINKS, "user:alice"
    )
    assert page.problems == ()
    await notifier.send(0, Message(page.title, page.body, kind, "critical", format=page.format), timeout=10)


async def test_email_has_html_and_text_parts_with_title_labels_and_links(smtp):
    inbox, port = smtp
    notifier = AppriseNotifier(AppriseOptions(name="mail", urls=[mailto(port)]))
    assert notifier.style(0) == "email"
    await send(notifier)
    [(sender, rcpts, msg)] = inbox.wait(1)
    assert sender == "fsincident@example.com" and rcpts == ["oncall@example.com"]
    assert msg["Subject"] == "[TRIGGERED] #1 DiskFull: db-1 <disk> & /var 97% full (critical)"
    assert msg.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): content(p) for p in msg.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    html, text = parts["text/html"], parts["text/plain"]
    # HTML: escaped title, every label, buttons pointing at the signed links.
    assert "#1 DiskFull: db-1 &lt;disk&gt; &amp; /var 97% full" in html
    assert "<disk>" not in html
    for label in ("alertname=DiskFull", "severity=critical", "team=storage", "instance=db-1:9100"):
        assert label in html and label in text
    assert f'<a href="{LINKS["ack"]}"' in html and f'<a href="{LINKS["resolve"]}"' in html
    # Text: the title as text, and the links written out so a text-only reader can follow them.
    assert "#1 DiskFull: db-1 <disk> & /var 97% full" in text
    assert f"Acknowledge: {LINKS['ack']}" in text
    assert f"Resolve: {LINKS['resolve']}" in text
    assert "Incident: https://fsi.example/api/v1/incidents/1" in text
    assert "db-1 disk is 97% full (value 97.2)" in text


async def test_resolve_mail_names_who_resolved_and_offers_no_action(smtp):
    inbox, port = smtp
    notifier = AppriseNotifier(AppriseOptions(name="mail", urls=[mailto(port)]))
    await send(notifier, "resolve", actor="bob")
    [(_, _, msg)] = inbox.wait(1)
    assert msg["Subject"] == "[RESOLVED] #1 DiskFull: db-1 <disk> & /var 97% full"
    text = content(msg.get_body(("plain",)))
    assert "Resolved by bob: on it." in text
    assert "/l/" not in text


async def test_mail_destination_is_not_held_by_apprise_default_throttle(smtp):
    # apprise waits 5.5 s between two sends of a service without a declared rate (SMTP); fsincident caps that
    # at UNDECLARED_THROTTLE, so an ack notice right after its page is not held back.
    inbox, port = smtp
    notifier = AppriseNotifier(AppriseOptions(name="mail", urls=[mailto(port)]))
    started = time.monotonic()
    await send(notifier)
    await send(notifier, "acknowledge", actor="bob")
    inbox.wait(2)
    assert time.monotonic() - started < 4


async def test_format_text_sends_the_text_template_alone(smtp):
    inbox, port = smtp
    notifier = AppriseNotifier(AppriseOptions(name="mail", urls=[mailto(port, "&format=text")]))
    assert notifier.style(0) == "email-text"
    await send(notifier)
    [(_, _, msg)] = inbox.wait(1)
    assert msg.get_content_type() == "text/plain"
    body = content(msg)
    assert body.startswith("TRIGGERED · severity critical · 1 firing, 1 resolved\n#1 DiskFull: db-1 <disk> & /var")
    assert "Labels:\nalertname=DiskFull\ninstance=db-1:9100\nseverity=critical\nteam=storage\n" in body
    assert f"Acknowledge: {LINKS['ack']}\nResolve: {LINKS['resolve']}\n" in body


async def test_template_text_on_a_mail_channel_sends_the_plain_message(smtp):
    inbox, port = smtp
    notifier = AppriseNotifier(AppriseOptions(name="mail", urls=[mailto(port, "&format=text")], template="text"))
    assert notifier.style(0) == "text"
    await send(notifier)
    [(_, _, msg)] = inbox.wait(1)
    assert msg["Subject"] == "[TRIGGERED] #1 DiskFull: db-1 <disk> & /var 97% full (critical)"
    assert content(msg).startswith("1 alert firing, severity critical.\n")


async def test_daemon_pages_by_mail_with_signed_links(smtp, tmp_path):
    """The whole way: an incident in the in-process daemon, its page rendered for the mail style by the delivery
    stage, received by the SMTP server with both parts and a signed ack link; the ack notice follows."""
    from tests.api.conftest import serve

    inbox, smtp_port = smtp
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp_path}/state.db
        external_url: https://fsi.example
        delivery: {{initial_backoff: 100ms, max_backoff: 500ms}}
        channels:
          - {{name: mail, urls: ["{mailto(smtp_port)}"]}}
        routes:
          - {{notify: ["channel:mail"]}}
        """,
    )
    async with serve(cfg, port, None, None) as api:
        iid = await api.incident(team="storage", severity="critical")
        [(_, _, msg)] = await asyncio.to_thread(inbox.wait, 1, 20)
        assert msg["Subject"].startswith(f"[TRIGGERED] #{iid} ApiTest (")
        assert msg["Subject"].endswith("team=storage) (critical)")
        parts = {p.get_content_type(): content(p) for p in msg.iter_parts()}
        html, text = parts["text/html"], parts["text/plain"]
        ack = re.search(r"Acknowledge: (https://fsi\.example/l/[A-Za-z0-9_-]+)", text)
        assert ack is not None, text
        assert f'<a href="{ack.group(1)}"' in html
        for label in ("alertname=ApiTest", "team=storage", "severity=critical"):
            assert label in html and label in text
        status, _, _ = await api.call("POST", f"/api/v1/incidents/{iid}/ack", scope="ack", json={"by": "carol"})
        assert status == 200
        msgs = await asyncio.to_thread(inbox.wait, 2, 20)
        notice = msgs[1][2]
        assert notice["Subject"].startswith(f"[ACKNOWLEDGED] #{iid} ApiTest")
        assert "Acknowledged by carol." in content(notice.get_body(("plain",)))
