"""Contract of ``user_recommendations`` (the nightly batch-scored top-K per user, ``serving.batch_scoring``): schema,
one row per (user, rank) and per (user, item), ranks 1..n per user, scores finite log-probabilities not increasing
with rank, every expected user present and no other, one model version."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from data_contracts.result import ContractResult

TABLE = "user_recommendations"

#: pandas dtypes each column may have
TYPES: dict[str, tuple[str, ...]] = {
    "user_id": ("StringDtype", "str"),
    "rank": ("int64", "int32", "Int64Dtype", "Int32Dtype"),
    "item_id": ("StringDtype", "str"),
    "score": ("float64", "float32", "Float64Dtype"),
    "model_name": ("StringDtype", "str"),
    "model_version": ("StringDtype", "str"),
    "model_run_id": ("StringDtype", "str"),
    "exclude_seen": ("bool", "BooleanDtype"),
}


def validate_user_recommendations(df: pd.DataFrame, *, expected_users: Sequence[str], k: int | None = None
                                  ) -> ContractResult:
    """The contract of the ``user_recommendations`` table (see the module docstring); ``expected_users`` are the
    users the table must hold, ``k`` (when given) the most rows a user may have. When columns are missing or
    mistyped only the schema failures are reported."""
    import great_expectations as gx

    from data_contracts.expectation_runner import Check, Frame, compact_strings, run_frames
    from data_contracts.table_schema import require_frame, schema_frame

    df = require_frame(df, TABLE)
    schema = run_frames(TABLE, [schema_frame(TABLE, df, TYPES)])
    if not schema.success:
        return schema
    e = gx.expectations
    rows = compact_strings(df, ["user_id", "item_id", "model_name", "model_version", "model_run_id"])
    row_checks = [
        *[Check(e.ExpectColumnValuesToNotBeNull(column=c), f"{c} is null for {{n}} rows")
          for c in ("user_id", "rank", "item_id", "score")],
        Check(e.ExpectColumnValuesToBeBetween(column="rank", min_value=1, max_value=k),
              f"rank is outside 1..{k if k else 'n'} for {{n}} rows"),
        Check(e.ExpectColumnValuesToBeBetween(column="score", min_value=-np.finfo(np.float64).max, max_value=0.0),
              "score is not a finite log-probability (<= 0) for {n} rows"),
        Check(e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "rank"], ignore_row_if="never"),
              "(user_id, rank) appears more than once for {n} rows", column="rank"),
        Check(e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"], ignore_row_if="never"),
              "(user_id, item_id) appears more than once (an item recommended twice) for {n} rows",
              column="item_id"),
    ]
    ordered = df.sort_values(["user_id", "rank"], kind="stable")
    same_user = ordered["user_id"].eq(ordered["user_id"].shift())
    rising = (ordered["score"].diff() > 1e-9) & same_user  # a worse rank with a higher score
    per_user = (pd.DataFrame({"user_id": ordered["user_id"].astype(str), "rank": ordered["rank"],
                              "rising": rising.astype("int64")})
                .groupby("user_id", sort=True).agg(n_rows=("rank", "size"), max_rank=("rank", "max"),
                                                   score_rises=("rising", "sum")).reset_index())
    user_checks = [
        Check(e.ExpectColumnPairValuesToBeEqual(column_A="max_rank", column_B="n_rows"),
              "{n} users have ranks that are not 1..n (a gap)", column="rank", example_columns=("n_rows",)),
        Check(e.ExpectColumnValuesToBeBetween(column="score_rises", min_value=0, max_value=0),
              "{n} users have a score that rises with rank (not ordered best first)", column="score"),
    ]
    expected = pd.Index(sorted(set(map(str, expected_users))))
    present = pd.Index(per_user["user_id"])
    coverage = pd.DataFrame({"user_id": expected.union(present)})
    coverage["in_table"] = coverage["user_id"].isin(present)
    coverage["expected"] = coverage["user_id"].isin(expected)
    coverage_checks = [
        Check(e.ExpectColumnValuesToBeInSet(column="in_table", value_set=[True]),
              "{n} expected users are missing from the table", column="user_id"),
        Check(e.ExpectColumnValuesToBeInSet(column="expected", value_set=[True]),
              "{n} users in the table were not to be scored", column="user_id"),
    ]
    versions = df[["model_name", "model_version", "exclude_seen"]].astype(str).drop_duplicates()
    version_checks = [Check(e.ExpectTableRowCountToEqual(value=1),
                            "the table mixes {observed} (model, version, exclude_seen) combinations")]
    return run_frames(TABLE, [
        Frame(TABLE, rows, row_checks, key_columns=("user_id", "rank")),
        Frame(f"{TABLE}.per_user", per_user, user_checks, key_columns=("user_id",)),
        Frame(f"{TABLE}.coverage", coverage, coverage_checks, key_columns=("user_id",)),
        Frame(f"{TABLE}.models", versions.reset_index(drop=True), version_checks,
              key_columns=("model_name", "model_version")),
    ], before=schema)
