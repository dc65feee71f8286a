"""Every config key, source kind, CLI command and metric must be documented in README.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fsincident import plugins
from fsincident.cli import build_parser
from fsincident.config import model
from fsincident.obs import Metrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _keys(cls: type) -> list[str]:
    return [f.alias or name for name, f in cls.model_fields.items()]


MODELS = [
    model.DaemonOptions,
    model.DeliveryOptions,
    model.RouteOptions,
    model.TimeIntervalOptions,
    model.TimeIntervalSpec,
    model.TimeRangeOptions,
    model.InhibitRuleOptions,
    model.IntegrationOptions,
    model.AlertmanagerApiOptions,
    model.SilencesOptions,
    model.LinksOptions,
    model.ChatOpsOptions,
    model.UiOptions,
    model.CardOptions,
    model.HistoryOptions,
    model.AnalyticsOptions,
    model.WorkingHoursOptions,
    model.ServiceOptions,
    model.ReportOptions,
    model.SlackOptions,
    model.MattermostOptions,
    plugins.ChannelOptions,
    plugins.RateLimitOptions,
    model.UserOptions,
    model.ContactOptions,
    model.ScheduleOptions,
    model.LayerOptions,
    model.RestrictionOptions,
    model.EscalationPolicyOptions,
    model.StepOptions,
    model.RuleOptions,
    model.GroupOptions,
    model.FlappingOptions,
    model.SloOptions,
    model.BurnAlertOptions,
    model.RuleFileOptions,
]


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_config_keys_documented(cls):
    missing = [k for k in _keys(cls) if not any(f in README for f in (f"`{k}", f".{k}`", f"{k}:"))]
    assert not missing, f"{cls.__name__}: keys not in README: {missing}"


@pytest.mark.parametrize("registry", [plugins.sources, plugins.notifiers], ids=["sources", "notifiers"])
def test_every_kind_and_its_keys_documented(registry):
    for kind in registry.kinds():
        assert f"type: {kind}" in README, f"kind {kind!r} has no README section"
        cls = registry.get(kind)
        missing = [k for k in _keys(cls.Options) if f"`{k}`" not in README]
        assert not missing, f"{kind}: keys not in README: {missing}"


def test_cli_commands_documented_and_in_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    help_text = parser.format_help()
    for name in sub.choices:
        assert f"fsincident {name}" in README, f"command {name!r} not in README"
        assert name in help_text


def test_metrics_documented():
    names = set()
    for line in Metrics().registry.collect():
        names.add(line.name)
    missing = [n for n in names if not re.search(rf"`{re.escape(n)}(_total)?[{{`]", README)]
    assert not missing, f"metrics not in README: {missing}"
