"""Render notification title and body from the shipped templates, or the config dir's overrides."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fsincident.sandbox import CompiledTemplate, TemplateProblem

SHIPPED = Path(__file__).resolve().parent.parent / "templates"
KIND_LABELS = {"trigger": "TRIGGERED", "acknowledge": "ACKNOWLEDGED", "resolve": "RESOLVED"}


def shipped_templates() -> dict[str, CompiledTemplate]:
    return {p.stem: CompiledTemplate(p.read_text(encoding="utf-8")) for p in sorted(SHIPPED.glob("*.j2"))}


class Renderer:
    """Renders (title, body) for an incident event; a failing override falls back to the shipped template."""

    def __init__(self, overrides: Mapping[str, CompiledTemplate] | None = None, external_url: str = ""):
        self.shipped = shipped_templates()
        self.overrides = dict(overrides or {})
        self.external_url = external_url

    def _render(self, name: str, ctx: dict[str, Any]) -> str:
        tpl = self.overrides.get(name)
        if tpl is not None:
            try:
                return tpl.render(**ctx)
            except TemplateProblem:
                pass
        return self.shipped[name].render(**ctx)

    def render(
        self, kind: str, incident: dict[str, Any], alerts: list[dict[str, Any]], actor: str | None, note: str | None
    ) -> tuple[str, str]:
        incident = dict(incident)
        incident.setdefault("url", f"{self.external_url}/api/v1/incidents/{incident.get('id')}")
        ctx = {
            "kind": kind,
            "kind_label": KIND_LABELS.get(kind, kind.upper()),
            "incident": incident,
            "alerts": alerts,
            "firing": [a for a in alerts if a.get("state") == "firing"],
            "resolved": [a for a in alerts if a.get("state") == "resolved"],
            "reason": incident.get("notify_reason") or kind,
            "actor": actor,
            "note": note,
            "external_url": self.external_url,
        }
        title = " ".join(self._render("title", ctx).split())
        body = self._render("message", ctx).strip()
        return title[:1000], body
