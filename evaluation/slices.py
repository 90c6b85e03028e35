"""The slices users ask about: cold target items, the long tail (popularity deciles), history length.

Library code (no dagster): the report asset and ``bench`` call it.

- :func:`user_slices` labels each user's held-out target: ``cold`` (the item has no *train*
  interaction), ``popularity_decile`` (1 = the most popular tenth of the items with train interactions,
  ``n_deciles`` = the least popular, 0 = cold) and ``history_bucket`` (by the user's history length at
  prediction time, uncapped).
- :func:`slices_from_splits` does the same from an ``interaction_splits`` frame.
- :func:`slice_metrics` turns per-user ranks (1-based, 0 = miss) of any number of models into one table
  row per (slice, value), with HR@K / NDCG@K from :func:`evaluation.baselines.registry.metrics_from_ranks`
  (the same arithmetic as :mod:`metrics.ranking`).

Deciles: the items with >= 1 train interaction, sorted by train count descending (ties by item id
ascending), are cut into ``n_deciles`` consecutive groups whose sizes differ by at most one, the larger
groups first (``numpy.array_split``): 10 items in 3 groups -> 4, 3, 3. With fewer items than groups the
last groups are empty.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from evaluation.baselines.registry import metrics_from_ranks

SLICE_COLUMNS = ("user_id", "target", "cold", "popularity_decile", "history_bucket")
HISTORY_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("1-4", 1, 4), ("5-9", 5, 9), ("10-19", 10, 19), ("20-49", 20, 49), ("50+", 50, None),
)
HISTORY_LABELS = tuple(label for label, _, _ in HISTORY_BUCKETS)
SLICE_NAMES = ("all", "cold", "popularity_decile", "history")
COLD_VALUES = ("cold", "warm")  # the values of the "cold" slice, in table order
EVAL_SPLITS = ("valid", "test")
SPLIT_LABELS = ("train", "valid", "test")
_SPLIT_COLUMNS = ("user_id", "item_id", "position", "split")


def history_bucket(length: int) -> str:
    """The bucket label of a history length >= 1: "1-4", "5-9", "10-19", "20-49" or "50+"."""
    n = _as_int(length, "history length")
    if n < 1:
        raise ValueError(f"history length must be >= 1 (a prediction needs a history), got {n}")
    for label, _, hi in HISTORY_BUCKETS:
        if hi is None or n <= hi:
            return label
    raise AssertionError("unreachable: the last bucket is open-ended")


def popularity_deciles(train_counts: Mapping[str, int], n_deciles: int = 10) -> dict[str, int]:
    """Decile (1 = most popular ... ``n_deciles``) of every item with >= 1 train interaction; see the module doc.

    Items with a count of 0 are left out (they are cold). Keys are returned as ``str``.
    """
    n_deciles = _as_int(n_deciles, "n_deciles")
    if n_deciles < 1:
        raise ValueError(f"n_deciles must be >= 1, got {n_deciles}")
    counts: dict[str, int] = {}
    for item, count in train_counts.items():
        c = _as_int(count, f"train count of item {item!r}")
        if c < 0:
            raise ValueError(f"train_counts has a negative count {c} for item {item!r}")
        key = str(item)
        if key in counts:
            raise ValueError(f"train_counts has item {key!r} twice (keys equal as strings)")
        counts[key] = c
    warm = sorted((item for item, c in counts.items() if c > 0), key=lambda item: (-counts[item], item))
    out: dict[str, int] = {}
    for decile, group in enumerate(np.array_split(np.arange(len(warm)), n_deciles), start=1):
        for i in group:
            out[warm[i]] = decile
    return out


def user_slices(users: Sequence[str], targets: Sequence[str | None], history_lengths: Sequence[int],
                train_counts: Mapping[str, int], *, n_deciles: int = 10) -> pd.DataFrame:
    """One row per user whose target is not None, in the given order.

    Columns: ``user_id`` (str), ``target`` (str), ``cold`` (bool: the target has no train interaction),
    ``popularity_decile`` (int: 1 = most popular tenth of the items with train interactions ...
    ``n_deciles`` = least popular; 0 for cold targets), ``history_bucket`` (str, see :data:`HISTORY_LABELS`).
    Raises ``ValueError`` when the three sequences differ in length, a count or history length is negative,
    a history length of a user with a target is 0, or ``n_deciles`` < 1.
    """
    users, targets, history_lengths = list(users), list(targets), list(history_lengths)
    if not (len(users) == len(targets) == len(history_lengths)):
        raise ValueError(f"users, targets and history_lengths differ in length: "
                         f"{len(users)}, {len(targets)}, {len(history_lengths)}")
    lengths = [_as_int(h, f"history length of user {u!r}") for u, h in zip(users, history_lengths, strict=True)]
    negative = [(u, h) for u, h in zip(users, lengths, strict=True) if h < 0]
    if negative:
        raise ValueError(f"history_lengths must be >= 0; {len(negative)} negative, e.g. user {negative[0][0]!r}: "
                         f"{negative[0][1]}")
    deciles = popularity_deciles(train_counts, n_deciles)
    rows = []
    for user, target, length in zip(users, targets, lengths, strict=True):
        if target is None:
            continue
        item = str(target)
        decile = deciles.get(item, 0)
        if length < 1:
            raise ValueError(f"user {user!r} has a target but history length {length}; buckets start at 1")
        rows.append((str(user), item, decile == 0, decile, history_bucket(length)))
    frame = pd.DataFrame(rows, columns=list(SLICE_COLUMNS))
    return frame.astype({"user_id": object, "target": object, "cold": bool, "popularity_decile": np.int64,
                         "history_bucket": object})


def slices_from_splits(splits: pd.DataFrame, split: str = "test", *, n_deciles: int = 10) -> pd.DataFrame:
    """:func:`user_slices` for the ``split`` ("valid" or "test") targets of an ``interaction_splits`` frame.

    Users come in ``user_id`` order (as :func:`training.sequence_data.build_samples` lists them). History
    length = the user's rows before the target that the protocol feeds the model: train rows (valid), train
    rows + the valid row (test) -- uncapped, so "50+" means what it says. ``train_counts`` = the number of
    train rows per item over all users; an item seen only in valid/test rows is cold.
    Raises ``ValueError`` for an unknown ``split``, missing columns, unknown split labels, or a user with more
    than one ``split`` row.
    """
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
    if not isinstance(splits, pd.DataFrame):
        raise ValueError(f"splits must be a DataFrame, got {type(splits).__name__}")
    missing = [c for c in _SPLIT_COLUMNS if c not in splits.columns]
    if missing:
        raise ValueError(f"interaction_splits lacks column(s) {missing}; have {list(splits.columns)}")
    bad = sorted(map(str, set(splits["split"].unique()) - set(SPLIT_LABELS)))
    if bad:
        raise ValueError(f"interaction_splits has unknown split label(s) {bad}; expected {SPLIT_LABELS}")

    frame = splits[list(_SPLIT_COLUMNS)]
    train = frame[frame["split"] == "train"]
    train_counts = train["item_id"].astype(str).value_counts().to_dict()
    held = frame[frame["split"] == split].sort_values("user_id", kind="stable")
    duplicated = held["user_id"][held["user_id"].duplicated()]
    if len(duplicated):
        raise ValueError(f"interaction_splits has more than one {split!r} row for user {duplicated.iloc[0]!r}")

    before = frame[frame["split"].isin(("train",) if split == "valid" else ("train", "valid"))]
    joined = before.merge(held[["user_id", "position"]].rename(columns={"position": "target_position"}),
                          on="user_id", how="inner")
    counted = joined[joined["position"] < joined["target_position"]].groupby("user_id").size()
    lengths = held["user_id"].map(counted).fillna(0).astype(np.int64)
    return user_slices(held["user_id"].astype(str).tolist(), held["item_id"].astype(str).tolist(),
                       lengths.tolist(), train_counts, n_deciles=n_deciles)


def slice_metrics(slices: pd.DataFrame, ranks_by_model: Mapping[str, np.ndarray], k: int = 10) -> pd.DataFrame:
    """HR@K and NDCG@K of every model on every slice.

    ``slices``: a :func:`user_slices` frame; ``ranks_by_model[model]``: an integer array aligned with its rows,
    the 1-based rank of the target (0 = not in the top list; ranks above ``k`` are misses). Returns one row per
    (slice, value), columns ``slice``, ``value`` (str), ``users``, then per model ``"{model} HR@{k}"`` and
    ``"{model} NDCG@{k}"`` (NDCG = 1/log2(rank+1) when 1 <= rank <= k). Rows, in order: ("all", "all");
    ("cold", "cold"), ("cold", "warm"); ("popularity_decile", "1") ... ascending, with "0" (= cold targets)
    first when there are any; ("history", bucket) in :data:`HISTORY_LABELS` order. A value no user has gets
    no row.
    """
    if not isinstance(slices, pd.DataFrame):
        raise ValueError(f"slices must be a DataFrame, got {type(slices).__name__}")
    missing = [c for c in ("cold", "popularity_decile", "history_bucket") if c not in slices.columns]
    if missing:
        raise ValueError(f"slices lacks column(s) {missing}; have {list(slices.columns)}")
    if len(slices) == 0:
        raise ValueError("slices has no rows (no users to evaluate)")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    unknown = sorted(set(map(str, slices["history_bucket"])) - set(HISTORY_LABELS))
    if unknown:
        raise ValueError(f"slices has unknown history_bucket value(s) {unknown}; expected {HISTORY_LABELS}")
    ranks = {model: _check_ranks(model, r, len(slices)) for model, r in ranks_by_model.items()}

    cold = slices["cold"].to_numpy(dtype=bool)
    decile = slices["popularity_decile"].to_numpy(dtype=np.int64)
    bucket = slices["history_bucket"].astype(str).to_numpy()
    groups: list[tuple[str, str, np.ndarray]] = [("all", "all", np.ones(len(slices), dtype=bool))]
    groups += [("cold", "cold", cold), ("cold", "warm", ~cold)]
    groups += [("popularity_decile", str(d), decile == d) for d in sorted(set(decile.tolist()))]
    groups += [("history", label, bucket == label) for label in HISTORY_LABELS]

    rows = []
    for name, value, mask in groups:
        n = int(mask.sum())
        if n == 0:
            continue
        row: dict[str, object] = {"slice": name, "value": value, "users": n}
        for model, r in ranks.items():
            m = metrics_from_ranks(r[mask], ks=(int(k),))
            row[f"{model} HR@{k}"] = m[f"hr@{k}"]
            row[f"{model} NDCG@{k}"] = m[f"ndcg@{k}"]
        rows.append(row)
    columns = ["slice", "value", "users"] + [f"{m} {name}@{k}" for m in ranks for name in ("HR", "NDCG")]
    return pd.DataFrame(rows, columns=columns)


def _check_ranks(model: str, ranks: np.ndarray, n: int) -> np.ndarray:
    r = np.asarray(ranks)
    if r.ndim != 1 or r.shape[0] != n:
        raise ValueError(f"ranks of model {model!r} have shape {r.shape}; expected ({n},), one per slices row")
    if r.dtype == bool or not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"ranks of model {model!r} must be integers (1-based, 0 = miss), got dtype {r.dtype}")
    if (r < 0).any():
        raise ValueError(f"ranks of model {model!r} must be >= 0 (1-based, 0 = miss), got {int(r.min())}")
    return r.astype(np.int64)


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
