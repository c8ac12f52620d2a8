"""The result of a pre-flight check: one line per finding, rendered as a table or as JSON.

Findings are ``ok`` (a check passed, or an estimate), ``warning`` (the merge runs, but maybe not as the
user expects) or ``problem`` (the merge or search would fail or be meaningless). Only problems make
``evomerge validate`` exit non-zero, so a warning never blocks a run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warning", "problem"]

_STYLE = {"ok": "green", "warning": "yellow", "problem": "bold red"}


@dataclass(frozen=True)
class Check:
    """One finding: which check, how it came out, and one line naming the files/tensors involved."""

    check: str
    status: Status
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    """Machine-readable details (byte counts, dimensions) for ``--json``."""


@dataclass
class Report:
    """Every finding of one pre-flight run over a recipe or a search config."""

    file: str
    kind: Literal["recipe", "search", "unknown"]
    checks: list[Check] = field(default_factory=list)

    def add(self, check: str, status: Status, message: str, **data: Any) -> None:
        self.checks.append(Check(check, status, message, data))

    def extend(self, checks: list[Check]) -> None:
        self.checks.extend(checks)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.status == "problem"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "kind": self.kind,
            "ok": self.ok,
            "problems": len(self.problems),
            "warnings": sum(c.status == "warning" for c in self.checks),
            "checks": [asdict(c) for c in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def render(report: Report, console: Any | None = None) -> None:
    """Print the report as a rich table, one row per finding, then a one-line verdict."""
    from rich.console import Console
    from rich.table import Table

    out = console or Console()
    table = Table(title=f"evomerge validate: {report.file} ({report.kind})", show_lines=False, expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for c in report.checks:
        table.add_row(c.check, f"[{_STYLE[c.status]}]{c.status}[/]", c.message)
    out.print(table, markup=True, highlight=False)
    n_warn = sum(c.status == "warning" for c in report.checks)
    if report.ok:
        out.print(f"[green]all checks passed[/] ({n_warn} warning(s))", highlight=False)
    else:
        out.print(f"[bold red]{len(report.problems)} problem(s)[/], {n_warn} warning(s)", highlight=False)
