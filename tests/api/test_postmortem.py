"""Postmortem drafts against the real in-process daemon: ``GET /api/v1/incidents/{id}/postmortem`` (Markdown and
JSON), its ``chart.png``, and ``fsincident postmortem ID [--output DIR]``."""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from PIL import Image

from fsincident.analytics.postmortem import md_text
from tests.api.conftest import Api, running_api
from tests.helpers import write_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "pm-s3cr3t-pass"
EVIL = "<img src=x onerror=alert(1)> | broken | row |\n# not a heading\n[link](javascript:alert(1))"


def _config(directory, database, port, exposition, receiver):
    return write_config(
        directory / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: {database}
        sources:
          - {{name: app, type: scrape, url: "{exposition.url}/metrics", interval: 1s}}
        channels:
          - {{name: ops, urls: ["json://bot:{SECRET}@127.0.0.1:{receiver.port}/ops"]}}
        users:
          - {{name: alice, contacts: ["{receiver.apprise_url("alice")}"]}}
        schedules:
          - name: primary
            timezone: UTC
            layers:
              - {{rotation: daily, handoff: "00:00", start: 2026-01-01, users: [alice]}}
        escalation_policies:
          - name: app
            steps:
              - {{after: 0s, notify: ["schedule:primary", "channel:ops"]}}
        routes:
          - {{match: {{team: app}}, escalation_policy: app}}
          - {{notify: ["channel:ops"]}}
        history:
          step: 1s
          keep: 1h
          coarse_step: 10s
          coarse_keep: 1d
        analytics:
          ack_within: 5m
        """,
        {
            "app.yaml": """
            groups:
              - name: app
                interval: 1s
                source: app
                rules:
                  - alert: QueueBacklog
                    expr: queue_depth > 100
                    for: 0s
                    severity: critical
                    labels: {team: app}
                    annotations:
                      summary: "{{ labels.queue }} has {{ value }} jobs"
            """
        },
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    async with running_api(tmp_path_factory.mktemp("postmortem"), config=_config) as a:
        yield a


async def _backlog(api: Api) -> int:
    """The QueueBacklog incident (queue=orders fires by itself), acknowledged by alice with an unsafe note, once
    its chart has recorded points and its pages are settled."""
    for _ in range(300):
        items = await api.daemon.incidents.list(limit=100)
        found = [i for i in items if i["labels"].get("alertname") == "QueueBacklog"]
        if found:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("QueueBacklog never fired")
    iid = int(found[0]["id"])
    for _ in range(300):  # the pages go out first (an ack would cancel them)
        _, notes, _ = await api.call("GET", f"/api/v1/incidents/{iid}/notifications", scope="read")
        if len([n for n in notes["notifications"] if n["kind"] == "trigger" and n["state"] == "sent"]) >= 2:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"pages of incident {iid} never sent: {notes}")
    inc = await api.daemon.incidents.get(iid)
    if inc["state"] == "triggered":
        status, body, _ = await api.call(
            "POST", f"/api/v1/incidents/{iid}/ack", scope="ack", json={"by": "alice", "note": EVIL}
        )
        assert status == 200, body
    for _ in range(100):
        status, body, _ = await api.call("GET", f"/api/v1/incidents/{iid}/postmortem/chart.png", scope="read")
        if status == 200:
            return iid
        await asyncio.sleep(0.2)
    raise AssertionError(f"no chart for incident {iid}: {status} {body}")


def _png(raw: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(raw))
    img.load()
    assert img.format == "PNG"
    return img


async def test_the_markdown_draft_is_self_contained_and_complete(api: Api):
    iid = await _backlog(api)
    status, md, headers = await api.call("GET", f"/api/v1/incidents/{iid}/postmortem", scope="read")
    assert status == 200, md
    assert headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert md.startswith(f"# Postmortem: incident #{iid} — QueueBacklog")
    for heading in ("Summary", "Impact", "Timeline", "Who was paged and when", "Related incidents", "Causes"):
        assert f"\n## {heading}\n" in md
    assert "\n## Follow-ups\n" in md and "\n- [ ] " in md
    # The rule that fired, from the running config.
    assert "### Rule app/QueueBacklog" in md
    assert "```python\nqueue_depth > 100\n```" in md
    assert "| Source | app |" in md and "| Severity | critical |" in md
    # The chart, embedded.
    [uri] = re.findall(r"!\[[^\]]*\]\((data:image/png;base64,[A-Za-z0-9+/=]+)\)", md)
    assert _png(base64.b64decode(uri.split(",", 1)[1])).size == (800, 300)
    assert "threshold `queue_depth > 100`" in md
    # Times: acknowledged by alice, TTA within the 5m target (the daemon acked it within seconds).
    assert "acknowledged by alice after" in md and "within the 5m 0s target" in md
    # Who was paged: alice through the schedule, and the channel, with destinations as the log stored them.
    assert "user:alice (on call: schedule:primary)" in md
    assert "People paged: alice (first at" in md
    _, notes, _ = await api.call("GET", f"/api/v1/incidents/{iid}/notifications", scope="read")
    for n in notes["notifications"]:
        assert n["destination"] and md_text(n["destination"]) in md
    assert SECRET not in md
    # The unsafe note is escaped: no HTML, no broken table, no heading.
    assert "&lt;img src=x onerror=alert(1)&gt; \\| broken \\| row \\|<br>\\# not a heading<br>\\[link\\]" in md
    assert "<img" not in md
    assert "\n# not a heading" not in md


async def test_markdown_renders_without_html_injection(api: Api):
    markdown_it = pytest.importorskip("markdown_it")
    iid = await _backlog(api)
    _, md, _ = await api.call("GET", f"/api/v1/incidents/{iid}/postmortem", scope="read")
    out = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    assert "onerror" not in re.sub(r"&lt;img src=x onerror=alert\(1\)&gt;", "", out)
    assert 'href="javascript' not in out
    assert len(re.findall(r'<img src="data:image/png;base64,', out)) == 1
    for table in re.findall(r"<table>.*?</table>", out, flags=re.S):
        widths = {len(re.findall(r"<t[hd]>", row)) for row in re.findall(r"<tr>.*?</tr>", table, flags=re.S)}
        assert len(widths) == 1, table


async def test_json_format_and_linked_images(api: Api):
    iid = await _backlog(api)
    status, body, headers = await api.call("GET", f"/api/v1/incidents/{iid}/postmortem?format=json", scope="read")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert {"incident", "markdown", "charts"} <= set(body)
    assert body["incident"]["id"] == iid and body["incident"]["timeline"]
    [chart] = body["charts"]
    assert chart["name"] == "series" and chart["filename"] == f"incident-{iid}-chart.png"
    assert _png(base64.b64decode(chart["png_base64"])).size == (800, 300)
    assert "data:image/png;base64," + chart["png_base64"] in body["markdown"]
    status, body, _ = await api.call(
        "GET", f"/api/v1/incidents/{iid}/postmortem?format=json&images=files", scope="read"
    )
    assert status == 200
    assert f"](incident-{iid}-chart.png)" in body["markdown"] and "data:image" not in body["markdown"]


async def test_the_chart_png_and_its_404(api: Api):
    iid = await _backlog(api)
    status, _, headers = await api.call("GET", f"/api/v1/incidents/{iid}/postmortem/chart.png", scope="read")
    assert status == 200 and headers["Content-Type"] == "image/png"
    async with api.http.get(
        f"{api.base}/api/v1/incidents/{iid}/postmortem/chart.png",
        headers={"Authorization": f"Bearer {api.tokens['read']}"},
    ) as r:
        assert _png(await r.read()).size == (800, 300)
    other = await api.incident(team="nochart")  # not from a rule: no series
    status, body, _ = await api.call("GET", f"/api/v1/incidents/{other}/postmortem/chart.png", scope="read")
    assert status == 404 and "no series" in body["error"]
    assert "rule" in body["detail"]
    # Its draft still works, saying why there is no chart.
    status, md, _ = await api.call("GET", f"/api/v1/incidents/{other}/postmortem", scope="read")
    assert status == 200 and "No alert of this incident comes from a rule" in md
    assert "### Ingested alert: test" in md


@pytest.mark.parametrize(
    ("path", "scope", "status", "needle"),
    [
        ("/api/v1/incidents/999999/postmortem", "read", 404, "not found"),
        ("/api/v1/incidents/abc/postmortem", "read", 404, "not found"),
        ("/api/v1/incidents/999999/postmortem/chart.png", "read", 404, "not found"),
        ("/api/v1/incidents/1/postmortem?format=xml", "read", 400, "format"),
        ("/api/v1/incidents/1/postmortem?images=maybe", "read", 400, "images"),
        ("/api/v1/incidents/1/postmortem", None, 401, "token"),
        ("/api/v1/incidents/1/postmortem", "ingest", 403, "scope"),
        ("/api/v1/incidents/1/postmortem/chart.png", None, 401, "token"),
    ],
)
async def test_bad_requests_are_json_errors(api: Api, path: str, scope: str | None, status: int, needle: str):
    got, body, _ = await api.call("GET", path, scope=scope)
    assert got == status, body
    assert needle in body["error"]


async def test_related_incidents_share_labels_or_time(api: Api):
    a, b = await api.incidents(2, team="shop", service="cart")
    status, body, _ = await api.call("GET", f"/api/v1/incidents/{a}/postmortem?format=json", scope="read")
    assert status == 200
    rel = {r["id"]: r for r in body["related"]}
    assert b in rel
    assert rel[b]["overlapping"] is True
    assert rel[b]["shared_labels"] == {"alertname": "ApiTest", "service": "cart", "team": "shop"}
    assert f"| \\#{b} |" in body["markdown"]


async def test_the_cli_prints_the_draft_and_writes_files(api: Api, capsys: pytest.CaptureFixture[str], tmp_path):
    from fsincident.cli import main

    iid = await _backlog(api)
    base = ["--url", api.base, "--token", api.tokens["read"]]
    assert await asyncio.to_thread(main, ["postmortem", str(iid), *base]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Postmortem: incident #{iid}") and "data:image/png;base64," in out

    target = tmp_path / "pm"
    assert await asyncio.to_thread(main, ["postmortem", str(iid), "--output", str(target), *base]) == 0
    printed = capsys.readouterr().out.split()
    md, png = target / f"incident-{iid}-postmortem.md", target / f"incident-{iid}-chart.png"
    assert printed == [str(md), str(png)]
    text = md.read_text()
    assert f"](incident-{iid}-chart.png)" in text and "data:image" not in text
    assert _png(png.read_bytes()).size == (800, 300)

    assert await asyncio.to_thread(main, ["postmortem", "999999", *base]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["postmortem", "x1", *base]) == 2
