"""Data contracts: one Great Expectations 1.x suite per warehouse table, run on pandas frames.

Each ``validate_*`` returns a :class:`ContractResult`; the Dagster blocking asset checks turn it into
``AssetCheckResult(passed=result.success, metadata=result.to_metadata())``. GE is imported only when a
suite runs.
"""

from data_contracts.expectation_runner import ContractEvaluationError
from data_contracts.interaction_splits import SPLITS, validate_interaction_splits
from data_contracts.items import validate_items
from data_contracts.raw_interactions import RATING_RANGE, validate_raw_interactions
from data_contracts.result import ContractResult, ExpectationFailure

__all__ = [
    "RATING_RANGE",
    "SPLITS",
    "ContractEvaluationError",
    "ContractResult",
    "ExpectationFailure",
    "validate_interaction_splits",
    "validate_items",
    "validate_raw_interactions",
]
