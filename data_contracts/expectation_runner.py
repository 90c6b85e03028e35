"""Run Great Expectations 1.x expectations on pandas frames and turn GE's results into our own.

GE is imported lazily (its import costs several seconds) and one ephemeral context is kept per process:
it writes no files and makes no network calls.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from data_contracts.result import ContractResult, ExpectationFailure

#: how many offending rows a failure keeps as examples
MAX_EXAMPLES = 5

_lock = threading.Lock()
_TAG = "digr_check"


class ContractEvaluationError(RuntimeError):
    """An expectation could not be evaluated at all (a bug in a suite, not bad data)."""


@dataclass(frozen=True)
class Check:
    """One expectation plus how to report it.

    ``message`` is a sentence with ``{n}`` for the number of offending rows (and ``{observed}`` for
    the observed value of table-level expectations). ``column`` names the column in the report when it
    differs from the expectation's own column (rules on a derived frame report the source column).
    """

    expectation: Any
    message: str
    column: str | None = None
    example_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Frame:
    """A frame and the checks to run on it; ``key_columns`` identify a row in the examples."""

    name: str
    data: pd.DataFrame
    checks: list[Check]
    key_columns: tuple[str, ...] = field(default_factory=tuple)


@functools.cache
def _batch_definition() -> Any:
    """The whole-dataframe batch definition of the process-wide ephemeral context (built once)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("digr_contracts").add_dataframe_asset(name="frame")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


def compact_strings(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` with the given text columns as categoricals (a shallow copy; other columns shared).

    GE's null checks, batch hashing and duplicate detection run several times faster on category
    codes than on Python string objects (measured ~12 s -> ~3 s for 1M rows). Call it after the dtype
    checks, which must see the original dtypes.
    """
    out = df.copy(deep=False)
    for col in columns:
        if not isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype("category")
    return out


def expectation_columns(expectation: Any) -> list[str]:
    """The columns an expectation reads, in the order it names them."""
    for attr in ("column", "column_list"):
        value = getattr(expectation, attr, None)
        if value:
            return [value] if isinstance(value, str) else list(value)
    pair = [getattr(expectation, a, None) for a in ("column_A", "column_B")]
    return [c for c in pair if c]


def run_frame(frame: Frame) -> tuple[int, list[ExpectationFailure]]:
    """Validate one frame; return (expectations evaluated, failures in the checks' order)."""
    if not frame.checks:
        return 0, []
    import great_expectations as gx

    # Batch.validate fetches (and md5-hashes) the frame a second time; the Validator it wraps
    # fetches it once, which saves ~0.5 s per million rows.
    from great_expectations.validator.v1_validator import Validator

    batch_definition = _batch_definition()  # GE suites need a live context before they are built
    data = frame.data
    if not isinstance(data.index, pd.RangeIndex) or data.index.start != 0 or data.index.step != 1:
        data = data.reset_index(drop=True)  # examples are looked up by GE's positional index
    suite = gx.ExpectationSuite(name=f"digr.{frame.name}")
    for i, check in enumerate(frame.checks):
        # results are matched back by this tag: expectations outside a saved suite have no id
        check.expectation.meta = {**(check.expectation.meta or {}), _TAG: i}
        suite.add_expectation(check.expectation)
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}
    with _lock:
        validator = Validator(batch_definition=batch_definition, batch_parameters={"dataframe": data},
                              result_format=result_format)
        suite_result = validator.validate_expectation_suite(suite)
    by_tag = {r.expectation_config.meta[_TAG]: r for r in suite_result.results}
    failures = []
    for i, check in enumerate(frame.checks):
        outcome = by_tag[i]
        _raise_on_exception(frame.name, check, outcome.exception_info)
        if not outcome.success:
            failures.append(_failure(frame, data, check, outcome.result))
    return len(frame.checks), failures


def run_frames(table: str, frames: Sequence[Frame], *, before: ContractResult | None = None) -> ContractResult:
    """Validate every frame of a table's suite and gather one result, appended to ``before`` if given."""
    evaluated = before.evaluated if before else 0
    failures = list(before.failures) if before else []
    for frame in frames:
        n, frame_failures = run_frame(frame)
        evaluated += n
        failures.extend(frame_failures)
    return ContractResult(table=table, success=not failures, evaluated=evaluated, failures=failures)


def _raise_on_exception(frame_name: str, check: Check, info: dict[str, Any]) -> None:
    # GE reports either one flat dict or one dict per metric it tried to compute.
    infos = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for item in infos:
        if item.get("raised_exception"):
            raise ContractEvaluationError(
                f"{frame_name}: {check.expectation.expectation_type} could not be evaluated: "
                f"{item.get('exception_message')}"
            )


def _failure(frame: Frame, data: pd.DataFrame, check: Check, result: dict[str, Any]) -> ExpectationFailure:
    columns = expectation_columns(check.expectation)
    count = result.get("unexpected_count")
    observed = result.get("observed_value")
    if count is None:  # table-level expectation (column exists, column dtype): it concerns every row
        count = len(data)
    indices = result.get("partial_unexpected_index_list") or []
    if indices:
        shown = list(dict.fromkeys([*frame.key_columns, *columns, *check.example_columns]))
        shown = [c for c in shown if c in data.columns]
        examples = [to_json_value(row) for row in data.loc[indices[:MAX_EXAMPLES], shown].to_dict("records")]
    elif observed is not None:
        examples = [to_json_value(observed)]
    else:
        examples = []
    return ExpectationFailure(
        expectation=check.expectation.expectation_type,
        column=check.column or (columns[0] if columns else None),
        unexpected_count=int(count),
        examples=examples,
        description=check.message.format(n=int(count), observed=observed),
    )


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON types: numpy scalars unwrapped, NaN/NA/NaT as None, timestamps as ISO text."""
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [to_json_value(v) for v in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)
