"""Chat-ops through the real in-process daemon (clock fixed at Wed 2026-03-04 12:00 UTC): Slack requests signed
with the signing secret exactly as Slack signs them, Mattermost requests with the command's token; acks,
resolves, on-call answers and silences that really happen, and every way a request can fail to authenticate."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsincident.config.model import ChatOpsOptions
from fsincident.core import FakeClock
from tests.api.conftest import Api, serve
from tests.helpers import Exposition, Receiver, free_port, write_config

module_loop = pytest.mark.asyncio(loop_scope="module")

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday; Berlin is on CET (UTC+1)
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
MM_TOKEN = "okwexkjpe7ygb8eq1ww58t483w"
SLACK = "/api/v1/chatops/slack"
MATTERMOST = "/api/v1/chatops/mattermost"

# primary: weekly from Mon 2026-01-05 09:00 Berlin: alice, bob, carol, ... so the week of Mon 2026-03-02 is
# carol's, until Mon 2026-03-09 09:00 Berlin.
CONFIG = """
listen: 127.0.0.1:{port}
database: sqlite:///{db}
channels:
  - {{name: ops, urls: ["{hook}/ops"]}}
routes:
  - {{notify: ["channel:ops"]}}
users:
  - {{name: alice, timezone: Europe/Berlin}}
  - {{name: bob}}
  - {{name: carol}}
schedules:
  - name: primary
    timezone: Europe/Berlin
    layers:
      - {{rotation: weekly, handoff: "Mon 09:00", start: 2026-01-05, users: [alice, bob, carol]}}
  - name: empty-nights
    timezone: UTC
    layers:
      - {{rotation: daily, handoff: "20:00", start: 2026-01-05, users: [bob],
          restrictions: [{{from: "20:00", to: "23:00"}}]}}
chatops:
  slack: {{signing_secret: "{slack}"}}
  mattermost: {{token: "{mm}"}}
  users: {{U012ABCDEF: alice, "bob.smith": bob}}
"""

_skew = itertools.count()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    directory = tmp_path_factory.mktemp("chatops")
    exposition, receiver = Exposition().start(), Receiver().start()
    port = free_port()
    cfg = write_config(
        directory / "cfg",
        CONFIG.format(
            port=port,
            db=directory / "state.db",
            hook=f"json://127.0.0.1:{receiver.port}",
            slack=SLACK_SECRET,
            mm=MM_TOKEN,
        ),
    )
    try:
        async with serve(cfg, port, exposition, receiver, clock=FakeClock(NOW)) as a:
            yield a
    finally:
        exposition.stop()
        receiver.stop()


def slack_headers(body: bytes, ts: int | None = None, secret: str = SLACK_SECRET) -> dict[str, str]:
    """Headers as Slack sends them; each call uses another timestamp within the window, so no two requests
    carry the same signature (the daemon accepts a signature once)."""
    if ts is None:
        ts = int(NOW.timestamp()) - next(_skew) % 240
    mac = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": f"v0={mac}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def slack_form(text: str, user_id: str = "U012ABCDEF", user_name: str = "alice.s", **extra: str) -> bytes:
    fields = {
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",  # Slack's deprecated verification token: ignored
        "team_id": "T0001",
        "team_domain": "example",
        "channel_id": "C2147483705",
        "channel_name": "ops",
        "user_id": user_id,
        "user_name": user_name,
        "command": "/fsincident",
        "text": text,
        "response_url": "https://hooks.slack.com/commands/1234/5678",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        **extra,
    }
    return urlencode(fields).encode()


async def slack(api: Api, text: str, **kw: Any) -> tuple[int, Any]:
    body = slack_form(text, **kw)
    status, out, _ = await api.call("POST", SLACK, data=body, headers=slack_headers(body))
    return status, out


def mm_form(text: str, token: str = MM_TOKEN, user_name: str = "bob.smith", user_id: str = "k1x4aq") -> bytes:
    return urlencode(
        {
            "channel_id": "jux16pkewjrkfj3ehep1psxyxc",
            "channel_name": "town-square",
            "command": "/fsincident",
            "response_url": "http://localhost:8065/hooks/commands/xbrkb8p393gjpq5cawei7npije",
            "team_domain": "test",
            "team_id": "carya1qs77bemjup96ff538snh",
            "text": text,
            "token": token,
            "user_id": user_id,
            "user_name": user_name,
        }
    ).encode()


async def mattermost(api: Api, text: str, token: str = MM_TOKEN, **kw: Any) -> tuple[int, Any]:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Token {token}"}
    status, out, _ = await api.call("POST", MATTERMOST, data=mm_form(text, token, **kw), headers=headers)
    return status, out


async def incident(api: Api, iid: int) -> dict[str, Any]:
    status, body, _ = await api.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert status == 200, body
    return body


def assert_error(status: int, body: Any, expected: int) -> None:
    assert status == expected, (status, body)
    assert isinstance(body, dict) and set(body) == {"error", "detail"} and body["error"], body


# ---------------------------------------------------------------------- Slack


@module_loop
async def test_a_signed_slack_command_acknowledges_the_incident_in_the_channel(api):
    iid = await api.incident(team="db")
    title = (await incident(api, iid))["title"]
    status, out = await slack(api, f"ack {iid} looking into it")
    assert status == 200
    assert out == {
        "response_type": "in_channel",
        "text": f"Incident #{iid} *{title}* acknowledged by alice: looking into it",
    }
    inc = await incident(api, iid)
    assert inc["state"] == "acknowledged" and inc["acknowledged_by"] == "alice"
    [ev] = [e for e in inc["timeline"] if e["kind"] == "acknowledged"]
    assert ev["actor"] == "alice" and ev["note"] == "looking into it"
    assert ev["data"] == {"via": "slack", "chat_user": "alice.s", "chat_user_id": "U012ABCDEF", "channel": "ops"}


@module_loop
async def test_acting_twice_or_on_a_resolved_incident_answers_only_the_caller(api):
    iid = await api.incident()
    assert (await slack(api, f"ack {iid}"))[1]["response_type"] == "in_channel"
    status, out = await slack(api, f"ack #{iid}")
    assert status == 200 and out["response_type"] == "ephemeral"
    assert "already acknowledged by alice" in out["text"]
    status, out = await slack(api, f"resolve {iid} fixed")
    assert out["response_type"] == "in_channel" and out["text"].endswith("resolved by alice: fixed")
    status, out = await slack(api, f"ack {iid}")
    assert status == 200 and out == {
        "response_type": "ephemeral",
        "text": f"Incident #{iid} is resolved: it cannot be acknowledged.",
    }
    status, out = await slack(api, f"resolve {iid}")
    assert out["response_type"] == "ephemeral" and "already resolved by alice" in out["text"]
    status, out = await slack(api, "ack 2147483647")
    assert out == {"response_type": "ephemeral", "text": "There is no incident #2147483647."}


@module_loop
async def test_an_unmapped_slack_user_acts_under_their_chat_name(api):
    iid = await api.incident()
    status, out = await slack(api, f"ack {iid}", user_id="U999", user_name="dora")
    assert status == 200 and out["text"].endswith("acknowledged by dora.")
    assert (await incident(api, iid))["acknowledged_by"] == "dora"


@module_loop
async def test_a_wrong_signature_is_refused_and_changes_nothing(api):
    iid = await api.incident()
    body = slack_form(f"ack {iid}")
    for headers in (
        slack_headers(body, secret="not-the-signing-secret"),
        slack_headers(body + b"&x=1"),  # signed another body
        {**slack_headers(body), "X-Slack-Signature": "v0=" + "0" * 64},
        {**slack_headers(body), "X-Slack-Signature": "v1=" + slack_headers(body)["X-Slack-Signature"][3:]},
        {**slack_headers(body), "X-Slack-Signature": "v0=ü"},
        {k: v for k, v in slack_headers(body).items() if k != "X-Slack-Signature"},
        {k: v for k, v in slack_headers(body).items() if k != "X-Slack-Request-Timestamp"},
        {**slack_headers(body), "X-Slack-Request-Timestamp": "12e3"},
        {"Content-Type": "application/x-www-form-urlencoded"},
    ):
        status, out, _ = await api.call("POST", SLACK, data=body, headers=headers)
        assert_error(status, out, 401)
        assert SLACK_SECRET not in json.dumps(out)
    assert (await incident(api, iid))["state"] == "triggered"


@module_loop
async def test_a_stale_or_replayed_slack_request_is_refused(api):
    iid = await api.incident()
    body = slack_form(f"ack {iid}")
    now = int(NOW.timestamp())
    for ts in (now - 301, now + 301, now - 86_400, 0):
        status, out, _ = await api.call("POST", SLACK, data=body, headers=slack_headers(body, ts))
        assert_error(status, out, 401)
        assert out["error"] == "stale Slack request"
    assert (await incident(api, iid))["state"] == "triggered"
    headers = slack_headers(body, now - 299)  # at the edge of the window: accepted, once
    status, out, _ = await api.call("POST", SLACK, data=body, headers=headers)
    assert status == 200 and out["response_type"] == "in_channel"
    status, out, _ = await api.call("POST", SLACK, data=body, headers=headers)
    assert_error(status, out, 401)
    assert out["error"] == "replayed Slack request"


@module_loop
async def test_slack_ssl_check_is_answered_without_acting(api):
    body = b"ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO"
    for headers in (slack_headers(body), {}):  # whether or not Slack signs it: it does nothing
        status, out, _ = await api.call("POST", SLACK, data=body, headers=headers)
        assert status == 200 and out == {}


@module_loop
async def test_an_oversized_request_is_refused(api):
    body = slack_form("ack 1 " + "x" * 70_000)
    status, out, _ = await api.call("POST", SLACK, data=body, headers=slack_headers(body))
    assert_error(status, out, 413)
    status, out, _ = await api.call("POST", MATTERMOST, data=body, headers={"Authorization": f"Token {MM_TOKEN}"})
    assert_error(status, out, 413)


@module_loop
async def test_slack_text_is_escaped_so_alert_labels_cannot_ping_the_channel(api):
    iid = await api.incident(summary_label="<!channel> & <@U1>")
    status, out = await slack(api, f"ack {iid} <b>")  # Slack escapes &<> in the text it sends
    assert status == 200
    assert "<!channel>" not in out["text"] and "&lt;!channel&gt; &amp; &lt;@U1&gt;" in out["text"]
    assert out["text"].endswith("acknowledged by alice: &lt;b&gt;")
    status, out = await slack(api, f"resolve {iid} a &lt;b&gt; &amp; c")
    notes = [e["note"] for e in (await incident(api, iid))["timeline"] if e["kind"] == "resolved"]
    assert notes == ["a <b> & c"]


# ---------------------------------------------------------------------- Mattermost


@module_loop
async def test_mattermost_token_resolves_as_the_mapped_user(api):
    iid = await api.incident()
    status, out = await mattermost(api, f"resolve {iid} done")
    assert status == 200 and out["response_type"] == "in_channel"
    assert out["text"].startswith(f"Incident #{iid} **") and out["text"].endswith("resolved by bob: done")
    inc = await incident(api, iid)
    assert inc["state"] == "resolved" and inc["resolved_by"] == "bob"
    [ev] = [e for e in inc["timeline"] if e["kind"] == "resolved"]
    assert ev["data"] == {
        "via": "mattermost",
        "chat_user": "bob.smith",
        "chat_user_id": "k1x4aq",
        "channel": "town-square",
    }


@module_loop
async def test_mattermost_token_in_the_form_only_is_enough(api):
    iid = await api.incident()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, out, _ = await api.call("POST", MATTERMOST, data=mm_form(f"ack {iid}"), headers=headers)
    assert status == 200 and out["response_type"] == "in_channel"


@module_loop
async def test_a_wrong_mattermost_token_is_refused_and_changes_nothing(api):
    iid = await api.incident()
    status, out = await mattermost(api, f"ack {iid}", token="wrong-token-xxxxxxxxxxxxxx")
    assert_error(status, out, 401)
    for headers, body in (
        ({}, mm_form(f"ack {iid}", token="")),
        ({"Authorization": "Token nope"}, mm_form(f"ack {iid}")),  # the header wins over the form
        ({"Authorization": f"Bearer {api.tokens['admin']}"}, mm_form(f"ack {iid}", token="nope")),
        ({}, b"\xff\xfe" + MM_TOKEN.encode()),
    ):
        status, out, _ = await api.call("POST", MATTERMOST, data=body, headers=headers)
        assert_error(status, out, 401)
        assert MM_TOKEN not in json.dumps(out)
    assert (await incident(api, iid))["state"] == "triggered"


@module_loop
async def test_mattermost_answers_cannot_mention_everyone(api):
    iid = await api.incident(who="@channel")
    status, out = await mattermost(api, f"ack {iid} paging @all")
    assert status == 200 and "@channel" not in out["text"] and "@all" not in out["text"]
    assert "@\u200bchannel" in out["text"] and out["text"].endswith("paging @\u200ball")


# ---------------------------------------------------------------------- on call


@module_loop
async def test_oncall_names_who_is_on_call_until_when(api):
    status, out = await slack(api, "oncall primary")
    assert status == 200
    assert out == {
        "response_type": "in_channel",
        "text": "On call for *primary*: *carol* until Mon 09:00 Europe/Berlin",
    }
    status, out = await mattermost(api, "oncall")
    assert out == {
        "response_type": "in_channel",
        "text": "On call now:\n• **primary**: **carol** until Mon 09:00 Europe/Berlin\n• **empty-nights**: nobody",
    }


@module_loop
async def test_oncall_for_an_unknown_schedule_lists_the_schedules(api):
    status, out = await slack(api, "oncall nope")
    assert status == 200 and out == {
        "response_type": "ephemeral",
        "text": "There is no schedule `nope`. Schedules: `primary`, `empty-nights`.",
    }


# ---------------------------------------------------------------------- silences


@module_loop
async def test_silence_an_incident_for_2h_matches_its_alerts_and_is_audited(api):
    iid = await api.incident(team="storage")
    inc = await incident(api, iid)
    status, out = await slack(api, f"silence 2h {iid}")
    assert status == 200 and out["response_type"] == "in_channel", out
    assert "for 2h (until Wed 15:00 Europe/Berlin) by alice for incident" in out["text"]
    status, body, _ = await api.call("GET", "/api/v1/silences", scope="read")
    [sil] = [s for s in body["silences"] if f"incident #{iid}" in s["comment"]]
    assert f"`{sil['id']}`" in out["text"]
    assert sorted(sil["matchers"]) == sorted(f'{k}="{v}"' for k, v in inc["labels"].items())
    assert sil["state"] == "active" and sil["created_by"] == "alice"
    assert sil["ends_at"] == (NOW + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    assert sil["comment"] == f"silenced from Slack by alice for incident #{iid}"
    [alert] = inc["alerts"]
    [muted] = await api.daemon.silences.status([alert["labels"]], NOW)
    assert sil["id"] in muted.silenced_by
    status, body, _ = await api.call("GET", f"/api/v1/audit?object=silence:{sil['id']}", scope="admin")
    assert [(a["actor"], a["action"]) for a in body["audit"]] == [("alice", "silence_create")]


@module_loop
async def test_silence_by_matchers_with_a_comment_from_mattermost(api):
    status, out = await mattermost(api, 'silence 30m alertname=DiskFull instance=~"db.*" -- swapping disks')
    assert status == 200 and out["response_type"] == "in_channel", out
    assert out["text"].startswith('Silenced `alertname="DiskFull"`, `instance=~"db.*"` for 30m (until Wed 12:30 UTC)')
    assert out["text"].endswith(": swapping disks")
    status, body, _ = await api.call("GET", "/api/v1/silences", scope="read")
    [sil] = [s for s in body["silences"] if s["comment"] == "swapping disks"]
    assert sil["matchers"] == ['alertname="DiskFull"', 'instance=~"db.*"'] and sil["created_by"] == "bob"


@module_loop
async def test_silence_mistakes_answer_only_the_caller(api):
    for text, fragment in (
        ("silence 2h", "what?"),
        ('silence 2h job=~".*"', "must not match the empty string"),
        ("silence 2h 2147483647", "There is no incident #2147483647."),
        ("silence 2700000d alertname=x", "Cannot silence: times must be between the years 1970 and 8999."),
        ("silence 99999999d alertname=x", "That silence would last too long."),
    ):
        status, out = await slack(api, text)
        assert status == 200 and out["response_type"] == "ephemeral", (text, out)
        assert fragment in out["text"], (text, out)


# ---------------------------------------------------------------------- help, mistakes, fuzz


@module_loop
async def test_help_and_unknown_commands_answer_only_the_caller(api):
    status, out = await slack(api, "")
    assert status == 200 and out["response_type"] == "ephemeral"
    assert "`/fsincident ack ID [note]`" in out["text"] and "`/fsincident oncall [SCHEDULE]`" in out["text"]
    status, out = await slack(api, "frobnicate 42")
    assert out["response_type"] == "ephemeral" and out["text"].startswith("Unknown command `frobnicate`.\n")
    status, out = await mattermost(api, "ack banana")
    assert out == {
        "response_type": "ephemeral",
        "text": "`banana` is not an incident number.\nUsage: `/fsincident ack ID [note]`",
    }


@module_loop
async def test_a_platform_that_is_not_configured_is_404(api):
    running = api.daemon.config
    api.daemon.config = dataclasses.replace(running, chatops=ChatOpsOptions())  # as a reload would
    try:
        for path in (SLACK, MATTERMOST):
            body = slack_form("ack 1")
            headers = {**slack_headers(body), "Authorization": f"Token {MM_TOKEN}"}
            status, out, _ = await api.call("POST", path, data=body, headers=headers)
            assert_error(status, out, 404)
    finally:
        api.daemon.config = running


@module_loop
async def test_the_secrets_are_redacted_from_logs(api):
    assert api.daemon.redactor.scrub(f"x {SLACK_SECRET} y {MM_TOKEN}") == "x *** y ***"


texts = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from(["ack", "resolve", "silence", "oncall", "help", "1", "#2", "1h", "x=y", "--", '"', "primary"]),
        max_size=6,
    ).map(" ".join),
)
bodies = st.one_of(
    texts.map(lambda t: slack_form(t)),
    st.binary(max_size=200),
    st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5).map(lambda d: urlencode(d).encode()),
    st.just(b"text=%ZZ&user_name=%FF"),
)


@module_loop
@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, signed=st.booleans(), platform=st.sampled_from(["slack", "mattermost"]))
async def test_fuzzed_bodies_never_5xx(api, body, signed, platform):
    if platform == "slack":
        headers = slack_headers(body) if signed else {"X-Slack-Signature": "v0=00", "X-Slack-Request-Timestamp": "1"}
        path = SLACK
    else:
        headers = {"Authorization": f"Token {MM_TOKEN if signed else 'bad'}"}
        path = MATTERMOST
    status, out, _ = await api.call("POST", path, data=body, headers=headers)
    assert status < 500, (status, out)
    assert isinstance(out, dict), out
    if status == 200:
        assert out == {} or (out["response_type"] in ("in_channel", "ephemeral") and isinstance(out["text"], str))
    else:
        assert set(out) == {"error", "detail"}
        assert status in (400, 401) and (signed or status == 401)


@module_loop
async def test_mattermost_answers_carry_no_link_or_image_from_an_alert(api):
    iid = await api.incident(
        summary_label="[verify here](http://evil.example) ![x](http://img.example/t.png) <http://a.example>"
    )
    status, out = await mattermost(api, f"ack {iid} see [docs](http://evil.example)")
    assert status == 200 and out["response_type"] == "in_channel"
    assert not re.search(r"(?<!\\)[\[\]<>]", out["text"])  # every bracket escaped: no link, image or autolink
    assert "\\[verify here\\](http://evil.example)" in out["text"]
    assert out["text"].endswith("see \\[docs\\](http://evil.example)")


@module_loop
async def test_a_failing_command_answers_the_caller_instead_of_a_5xx(api, monkeypatch):
    iid = await api.incident()

    async def database_down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("the database is down")

    monkeypatch.setattr(api.daemon.incidents, "ack", database_down)
    for call in (slack, mattermost):
        status, out = await call(api, f"ack {iid}")
        assert status == 200 and out["response_type"] == "ephemeral", (status, out)
        assert "could not run that command" in out["text"] and "database" not in out["text"]
