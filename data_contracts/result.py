"""The outcome of validating one table against its contract: what failed, how often, and examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation: which rule, on which column, how many offending rows, and a few of them."""

    expectation: str
    column: str | None
    unexpected_count: int
    examples: list[Any]
    description: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the failure."""
        return {
            "expectation": self.expectation,
            "column": self.column,
            "unexpected_count": self.unexpected_count,
            "examples": list(self.examples),
            "description": self.description,
        }


@dataclass(frozen=True)
class ContractResult:
    """The result of one table's suite: ``success`` is True only when every expectation passed."""

    table: str
    success: bool
    evaluated: int
    failures: list[ExpectationFailure] = field(default_factory=list)

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-serialisable summary (plain str/int/bool/list/dict) for Dagster asset-check metadata."""
        return {
            "table": self.table,
            "success": self.success,
            "evaluated": self.evaluated,
            "failed": len(self.failures),
            "failures": [f.to_dict() for f in self.failures],
        }

    def summary(self) -> str:
        """One line per failure (or one line saying all passed), for error messages and logs."""
        if not self.failures:
            return f"{self.table}: all {self.evaluated} expectations passed"
        lines = []
        for f in self.failures:
            where = f" on {f.column}" if f.column else ""
            example = f"; e.g. {f.examples[:3]}" if f.examples else ""
            lines.append(f"{self.table}: {f.description} [{f.expectation}{where}{example}]")
        return "\n".join(lines)
