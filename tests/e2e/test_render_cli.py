"""``fsincident render``: previews a page per destination from the config dir and the database, with the daemon
stopped; destinations redacted, no secret in the output, clear errors for unknown incidents and channels."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fsincident.cli import main
from fsincident.store import Store
from fsincident.store.tables import Alert, Incident, IncidentEvent
from tests.helpers import run_cli, write_config

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SLACK_TOKEN = "TIiajkdnlazkcOXrIdevi7FQ"
MAIL_PASSWORD = "Sup3rSecretMailPw"


def config(tmp_path: Path, database: str) -> Path:
    return write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:9
        database: {database}
        external_url: https://fsi.example
        channels:
          - name: ops
            urls:
              - "mailto://fsi:{MAIL_PASSWORD}@mail.example.com?to=oncall@example.com"
              - "slack://T1JJ3T3L2/A1BRTD4JD/{SLACK_TOKEN}"
              - "json://127.0.0.1:9/hook"
          - name: plain-mail
            template: text
            urls: ["mailto://fsi:{MAIL_PASSWORD}@mail.example.com?to=ops@example.com"]
        users:
          - {{name: alice, contacts: ["mailto://fsi:{MAIL_PASSWORD}@mail.example.com?to=alice@example.com&format=text"]}}
        """,
    )


async def seed(database: str) -> int:
    """A migrated database with one acknowledged incident (two alerts) and its timeline; the incident's id."""
    store = Store(database)
    try:
        await store.upgrade()
        async with store.session() as s:
            inc = Incident(
                group_key="g1",
                open_key="g1",
                title="DiskFull: db-1 <disk> is 97% full",
                state="acknowledged",
                severity="critical",
                labels={"alertname": "DiskFull", "severity": "critical", "team": "storage"},
                targets=["channel:ops"],
                created_at=T0,
                updated_at=T0,
                acknowledged_at=T0,
                acknowledged_by="alice",
            )
            s.add(inc)
            await s.flush()
            for i, state in enumerate(("firing", "resolved")):
                s.add(
                    Alert(
                        incident_id=inc.id,
                        fingerprint=f"{i:016x}",
                        alertname="DiskFull",
                        origin="rule:disk/DiskFull",
                        labels={"alertname": "DiskFull", "instance": f"db-{i + 1}:9100"},
                        annotations={"summary": f"db-{i + 1} disk is 97% full"},
                        value=97.0,
                        state=state,
                        starts_at=T0,
                        updated_at=T0,
                    )
                )
            s.add(IncidentEvent(incident_id=inc.id, at=T0, kind="acknowledged", actor="alice", note="looking into it"))
            assert inc.id is not None
            return inc.id
    finally:
        await store.close()


@pytest.fixture
def seeded(tmp_path, sqlite_url):
    iid = asyncio.run(seed(sqlite_url))
    return config(tmp_path, sqlite_url), iid


def test_render_shows_every_destination_in_its_style(tmp_path, db_url, capsys):
    iid = asyncio.run(seed(db_url))
    cfg = config(tmp_path, db_url)
    assert main(["render", "--config", str(cfg), "--incident", str(iid), "--channel", "ops", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    res = json.loads(out)
    assert (res["incident"], res["target"], res["kind"]) == (iid, "channel:ops", "trigger")
    mail, slack, hook = res["destinations"]
    assert [d["style"] for d in res["destinations"]] == ["email", "chat", "text"]
    assert [d["format"] for d in res["destinations"]] == ["html", "markdown", "text"]
    assert all(d["problems"] == [] for d in res["destinations"])
    assert mail["destination"].startswith("mailto://") and MAIL_PASSWORD not in mail["destination"]
    assert mail["title"] == f"[TRIGGERED] #{iid} DiskFull: db-1 <disk> is 97% full (critical)"
    assert f"#{iid} DiskFull: db-1 &lt;disk&gt; is 97% full" in mail["body"]
    assert "team=storage" in mail["body"]
    assert 'href="https://fsi.example/l/PREVIEW-ack"' in mail["body"]
    assert slack["body"].startswith("**TRIGGERED** · severity **critical** · 1 firing, 1 resolved")
    assert "- db-1 disk is 97% full (value 97.0)" in slack["body"]
    assert slack["body"].endswith(f"[Incident #{iid}](https://fsi.example/api/v1/incidents/{iid})")
    assert hook["body"].startswith("1 alert firing, severity critical.")
    for secret in (SLACK_TOKEN, MAIL_PASSWORD):
        assert secret not in out


def test_render_acknowledge_names_who_and_their_note(seeded, capsys):
    cfg, iid = seeded
    args = ["render", "--config", str(cfg), "--incident", str(iid), "--channel", "ops", "--kind", "acknowledge"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"acknowledge page about incident #{iid} for channel:ops: 3 destinations\n")
    assert "=== #1 slack://" in out and "(style chat, format markdown)" in out
    assert f"title: [ACKNOWLEDGED] #{iid} DiskFull: db-1 <disk> is 97% full\n" in out
    assert "Acknowledged by **alice**: looking into it" in out
    assert "Acknowledged by <b>alice</b>: looking into it." in out
    assert "PREVIEW-" not in out  # links are signed into trigger pages only
    assert SLACK_TOKEN not in out and MAIL_PASSWORD not in out


def test_render_follows_template_option_and_user_targets(seeded, capsys):
    cfg, iid = seeded
    assert main(["render", "--config", str(cfg), "--incident", str(iid), "--channel", "plain-mail", "--json"]) == 0
    [d] = json.loads(capsys.readouterr().out)["destinations"]
    assert (d["style"], d["format"]) == ("text", "text")
    assert main(["render", "--config", str(cfg), "--incident", str(iid), "--channel", "user:alice", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["target"] == "user:alice"
    [d] = res["destinations"]
    assert (d["style"], d["format"]) == ("email-text", "text")
    assert "Sent by fsincident to user:alice." in d["body"]


def test_render_override_failure_is_a_warning_and_the_shipped_template_is_used(seeded, capsys):
    cfg, iid = seeded
    (cfg / "templates").mkdir()
    (cfg / "templates" / "chat.j2").write_text("{{ incident.labels.nope }}")
    assert main(["render", "--config", str(cfg), "--incident", str(iid), "--channel", "ops"]) == 0
    out, err = capsys.readouterr()
    assert "warning: destination 1: templates/chat.j2 failed" in err and "used the shipped one" in err
    assert "**TRIGGERED** · severity **critical**" in out


def test_render_errors(seeded, capsys):
    cfg, iid = seeded
    assert main(["render", "--config", str(cfg), "--incident", "999", "--channel", "ops"]) == 1
    assert capsys.readouterr().err == "fsincident render: incident 999 not found\n"
    assert main(["render", "--config", str(cfg), "--incident", str(iid), "--channel", "pager"]) == 1
    assert capsys.readouterr().err == "fsincident render: unknown channel 'pager' (channels: ops, plain-mail)\n"
    assert main(["render", "--config", str(cfg), "--incident", str(iid), "--channel", "user:bob"]) == 1
    assert "unknown user 'bob'" in capsys.readouterr().err


def test_render_without_a_database_says_so(tmp_path, capsys):
    cfg = config(tmp_path, f"sqlite:///{tmp_path}/none/state.db")
    assert main(["render", "--config", str(cfg), "--incident", "1", "--channel", "ops"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fsincident render: no database at {tmp_path}/none/state.db")
    assert not (tmp_path / "none" / "state.db").exists()


def test_render_command_line(seeded):
    cfg, iid = seeded
    res = run_cli("render", "--config", str(cfg), "--incident", str(iid), "--channel", "ops")
    assert res.returncode == 0, res.stderr
    assert f"trigger page about incident #{iid} for channel:ops: 3 destinations" in res.stdout
    res = run_cli("render", "--config", str(cfg), "--incident", "42", "--channel", "ops")
    assert (res.returncode, res.stderr) == (1, "fsincident render: incident 42 not found\n")
