"""Build config directories line by line, so every expected ``file:line`` is exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsincident.config import Config, load
from fsincident.core import ConfigError

# A valid fsincident.yaml; rule tests append nothing to it, so its line numbers are fixed.
BASE = (
    "sources:",  # 1
    "  - {name: local, type: host}",  # 2
    "  - {name: web, type: scrape, url: 'http://127.0.0.1:9100/metrics'}",  # 3
    "channels:",  # 4
    "  - {name: ops, urls: ['json://127.0.0.1:9099/hook']}",  # 5
    "users:",  # 6
    "  - {name: alice, contacts: ['json://127.0.0.1:9099/alice']}",  # 7
)

# The head of a rule file: group ``g`` on source ``local``, rule ``A`` whose expr is on line 6.
RULE_HEAD = (
    "groups:",  # 1
    "  - name: g",  # 2
    "    source: local",  # 3
    "    rules:",  # 4
    "      - alert: A",  # 5
)


class ConfDir:
    """A config directory under tmp_path; ``write`` returns the file's path as problems name it."""

    def __init__(self, root: Path):
        self.root = root
        self.main = str(root / "fsincident.yaml")

    def write(self, rel: str, *lines: str) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        return str(path)

    def rules(self, *lines: str, name: str = "r.yaml") -> str:
        """Write BASE as fsincident.yaml and ``lines`` as rules.d/NAME."""
        self.write("fsincident.yaml", *BASE)
        return self.write(f"rules.d/{name}", *lines)

    def rule(self, *lines: str) -> str:
        """One rule ``A`` in group ``g``: RULE_HEAD then ``lines`` from line 6 on."""
        return self.rules(*RULE_HEAD, *lines)

    def load(self, environ: dict[str, str] | None = None) -> Config:
        return load(self.root, environ={} if environ is None else environ)

    def problems(self, environ: dict[str, str] | None = None) -> list[str]:
        with pytest.raises(ConfigError) as exc:
            self.load(environ)
        assert str(exc.value) == "\n".join(str(p) for p in exc.value.problems)
        return [str(p) for p in exc.value.problems]


@pytest.fixture
def conf(tmp_path: Path) -> ConfDir:
    return ConfDir(tmp_path)
