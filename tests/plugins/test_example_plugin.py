"""The example third-party source kind (examples/plugin): pip-installed, found by its entry point, run by the daemon."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, DaemonProcess, free_port, run_cli, write_config

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "plugin"


def _venv_builds_wheels() -> bool:
    """True when this environment's setuptools can build a wheel by itself (no download needed)."""
    return importlib.util.find_spec("wheel") is not None or (
        importlib.util.find_spec("setuptools") is not None
        and importlib.util.find_spec("setuptools.command.bdist_wheel") is not None
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """examples/plugin installed with pip into a throw-away target folder (the checkout stays clean)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(src)]
    if _venv_builds_wheels():
        cmd.insert(4, "--no-build-isolation")  # offline: use this environment's setuptools
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    (dist,) = target.glob("fsincident_example-*.dist-info")
    assert "random_walk = fsincident_example.source:RandomWalkSource" in (dist / "entry_points.txt").read_text()
    return target


def _config(directory: Path, port: int, db: str, source: str) -> Path:
    return write_config(
        directory,
        f"""
        listen: 127.0.0.1:{port}
        database: {db}
        sources:
          - {source}
        routes:
          - {{notify: []}}
        """,
        {
            "walk.yaml": """
            groups:
              - name: walk
                interval: 1s
                source: walk
                rules:
                  - alert: WalkStarted
                    expr: random_walk_steps_total >= 2
                    annotations:
                      summary: "{{ value }} steps"
                  - alert: WalkerInRange
                    expr: random_walk_value >= 0 and random_walk_value <= 10
            """
        },
    )


SOURCE = "{name: walk, type: random_walk, walkers: 3, step: 2, low: 0, high: 10, seed: 7, interval: 1s}"


def test_check_without_the_package_names_the_unknown_type(tmp_path):
    cfg = _config(tmp_path / "cfg", free_port(), f"sqlite:///{tmp_path}/state.db", SOURCE)
    res = run_cli("check", "--config", str(cfg))
    assert res.returncode == 1
    assert "fsincident.yaml:5: sources[0].type: unknown type 'random_walk' (available: " in res.stdout + res.stderr
    assert "scrape" in res.stdout + res.stderr  # the list names the kinds there are


def test_check_with_the_package_accepts_it_and_runs_validate_options(tmp_path, site):
    env = {"PYTHONPATH": str(site)}
    cfg = _config(tmp_path / "good", free_port(), f"sqlite:///{tmp_path}/state.db", SOURCE)
    res = run_cli("check", "--config", str(cfg), env=env)
    assert res.returncode == 0, res.stdout + res.stderr

    bad = "{name: walk, type: random_walk, low: 5, high: 1, walkers: 0, colour: red}"
    cfg = _config(tmp_path / "bad", free_port(), f"sqlite:///{tmp_path}/state.db", bad)
    res = run_cli("check", "--config", str(cfg), env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 1
    assert "sources[0].walkers" in out  # the Options model's own bounds
    assert "sources[0].colour" in out  # unknown keys are errors
    # validate_options runs once the model is valid: fix the model errors and the cross-key check speaks.
    bad = "{name: walk, type: random_walk, low: 5, high: 1}"
    cfg = _config(tmp_path / "bad2", free_port(), f"sqlite:///{tmp_path}/state.db", bad)
    res = run_cli("check", "--config", str(cfg), env=env)
    assert res.returncode == 1
    assert "fsincident.yaml:5: sources[0].high: must be greater than low (5)" in res.stdout + res.stderr


def _token(cfg: Path, site: Path) -> str:
    """A read token (the CLI loads the config too, so it needs the plugin on its path as well)."""
    name = f"t-{time.monotonic_ns()}"
    res = run_cli(
        "token", "create", "--name", name, "--scopes", "read", "--config", str(cfg), env={"PYTHONPATH": str(site)}
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _rule(d: DaemonProcess, name: str) -> dict:
    status, body = d.api("GET", "/api/v1/rules")
    assert status == 200, body
    return next(r for g in body["groups"] for r in g["rules"] if r["name"] == name)


def _wait_rule(d: DaemonProcess, name: str, pred, timeout: float = 20) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    rule = None
    while time.time() < deadline:
        rule = _rule(d, name)
        if pred(rule):
            return rule
        time.sleep(0.2)
    raise AssertionError(f"rule {name} condition not met in {timeout}s: {rule}")


def test_daemon_runs_the_plugin_fires_and_resumes_its_state(tmp_path, site):
    port = free_port()
    cfg = _config(tmp_path / "cfg", port, f"sqlite:///{tmp_path}/state.db", SOURCE)
    d = DaemonProcess(cfg, port, env={"PYTHONPATH": str(site)}).start()
    try:
        d.token = _token(cfg, site)
        incs = d.wait_incidents(lambda i: len(i) == 4)  # WalkStarted + one WalkerInRange per walker
        started = [i for i in incs if i["labels"]["alertname"] == "WalkStarted"]
        assert len(started) == 1 and started[0]["labels"]["job"] == "walk"
        walkers = sorted(i["labels"]["walker"] for i in incs if i["labels"]["alertname"] == "WalkerInRange")
        assert walkers == ["0", "1", "2"]
        rule = _rule(d, "WalkStarted")
        assert rule["health"] == "ok" and rule["state"] == "firing"
        rule = _wait_rule(d, "WalkStarted", lambda r: r["alerts"] and r["alerts"][0]["value"] >= 3)
        steps_before = rule["alerts"][0]["value"]
    finally:
        assert d.stop() == 0
    # start() reads the walk back from the daemon's durable state: the step counter continues where it
    # stopped (a counter starting again at 1 would drop below 2 and resolve the incident).
    d = DaemonProcess(cfg, port, env={"PYTHONPATH": str(site)}).start()
    try:
        d.token = _token(cfg, site)
        rule = _wait_rule(d, "WalkStarted", lambda r: r["series_evaluated"] == 1)
        assert rule["alerts"][0]["value"] > steps_before
        status, body = d.api("GET", "/api/v1/incidents")
        assert status == 200 and len(body["incidents"]) == 4, body  # no new incidents
        assert all(i["state"] == "triggered" for i in body["incidents"])  # and nothing resolved
    finally:
        assert d.stop() == 0
