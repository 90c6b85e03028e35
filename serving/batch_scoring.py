"""Batch scoring: every known user's top-K from the champion, in large batches, as one table; and the lookup that
serves a user from that table (falling back to online ranking for a user the table does not hold).

What shops do beside an online endpoint: score every user nightly and serve most requests from a table (or a
key-value store loaded from it), so the online model only answers users the table does not know and requests
with a history the table did not see.

* :func:`resolve_model` / :func:`load_model` — the registered version an alias points at, loaded by its version
  number (``models:/<name>/<version>``): the alias may move meanwhile, the table still names what scored it.
* :func:`user_histories` — each user's whole known history from ``interaction_splits`` (train, valid and test,
  oldest first): the history ``digr recommend --user`` gives the champion.
* :func:`score_users` — the long frame ``user_id, rank, item_id, score`` plus ``model_name, model_version,
  model_run_id, exclude_seen``; deterministic (users in sorted order, the pyfunc's own batching).
* :func:`data_contracts.user_recommendations.validate_user_recommendations` — the table's data contract (GE, via
  :mod:`data_contracts`): schema, one row per (user, rank) and per (user, item), ranks 1..n per user, scores
  finite log-probabilities not increasing with rank, every expected user present and no other, one model version.
* :func:`write_recommendations` — the staged table swapped in only when the contract passes (the previous table
  is kept otherwise).
* :func:`lookup_recommendations` / :func:`recommend_user` — the serving side.

No Dagster here: ``assets/serving.py`` reads the inputs, calls this module and writes the table with metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from data_contracts.result import ContractResult
from data_contracts.user_recommendations import TABLE, validate_user_recommendations

#: the table's columns, in order
COLUMNS = ("user_id", "rank", "item_id", "score", "model_name", "model_version", "model_run_id", "exclude_seen")
#: the reason a user is left out of the table (they are served online, where the same answer is an error)
NO_KNOWN_ITEM = "no item of the user's history is in the model's catalogue"


@dataclass(frozen=True)
class BatchScoringSettings:
    """Which registered model scores every user, and how."""

    model_name: str | None = field(default=None, metadata={
        "description": "Registered model name; None: the one the promotion step registers (champion_model's "
                       "latest materialisation), else 'deepinterestgr'"})
    alias: str = field(default="champion", metadata={
        "description": "Registry alias of the version that scores (resolved to a version number once)"})
    batch_users: int = field(default=1024, metadata={
        "description": "Users per predict call (the pyfunc beam-searches them 64 at a time)"})
    exclude_seen: bool | None = field(default=None, metadata={
        "description": "Leave each user's history out of their recommendations; None: the model's logged default"})
    num_threads: int | None = field(default=1, metadata={
        "description": "torch intra-op threads while scoring (restored afterwards); None: torch's default. 1 is "
                       "the safe choice on a shared machine: on 2 cores busy with other work a 64-user batch took "
                       "2.6 s with 2 threads and 83 ms with 1"})

    def __post_init__(self) -> None:
        if self.model_name == "" or not self.alias:
            raise ValueError("BatchScoringSettings.model_name (when set) and alias must be non-empty")
        if self.batch_users < 1:
            raise ValueError(f"BatchScoringSettings.batch_users must be >= 1, got {self.batch_users}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"BatchScoringSettings.num_threads must be >= 1 or None, got {self.num_threads}")


@dataclass(frozen=True)
class ModelRef:
    """One registered model version: what the table records about the model that scored it."""

    name: str
    version: str
    run_id: str | None = None
    alias: str | None = None

    @property
    def uri(self) -> str:
        """The version's own URI (not the alias's: an alias may move while the model is being used)."""
        return f"models:/{self.name}/{self.version}"


def resolve_model(client: Any, name: str, alias: str) -> ModelRef:
    """The version ``alias`` of registered model ``name`` points at now; a ``LookupError`` naming both when the
    model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise LookupError(f"registered model {name!r} has no version aliased {alias!r} ({exc.message.strip()}); "
                          "promote a model first (champion_model)") from exc
    return ModelRef(name=name, version=str(mv.version), run_id=mv.run_id, alias=alias)


def load_model(ref: ModelRef) -> Any:
    """The pyfunc of ``ref`` (``mlflow.pyfunc.load_model`` of the version URI)."""
    import mlflow

    return mlflow.pyfunc.load_model(ref.uri)


def _python_model(model: Any) -> Any:
    """The PythonModel behind a loaded pyfunc (or the PythonModel itself)."""
    unwrap = getattr(model, "unwrap_python_model", None)
    return unwrap() if callable(unwrap) else model


def _predict(model: Any, frame: pd.DataFrame, params: Mapping[str, Any] | None) -> pd.DataFrame:
    """A loaded pyfunc's ``predict`` (MLflow's schema checks included), or a PythonModel's."""
    if hasattr(model, "unwrap_python_model"):
        return model.predict(frame, params=dict(params) if params else None)
    return model.predict(None, frame, params=dict(params) if params else None)


def user_histories(splits: pd.DataFrame) -> dict[str, list[str]]:
    """Per user, the whole known history (every split, ordered by ``position``): what ``digr recommend --user``
    reads. Users come out in sorted order."""
    missing = {"user_id", "item_id", "position"} - set(splits.columns)
    if missing:
        raise ValueError(f"interaction_splits lacks columns {sorted(missing)} (have {list(splits.columns)})")
    ordered = splits.sort_values(["user_id", "position"], kind="stable")
    users = ordered["user_id"].astype(str).to_numpy()
    items = ordered["item_id"].astype(str).to_numpy()
    if not len(users):
        return {}
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return {users[s]: items[s:e].tolist() for s, e in zip(starts, ends, strict=True)}


@dataclass
class BatchScores:
    """The scored table and how it went."""

    frame: pd.DataFrame
    model: ModelRef
    exclude_seen: bool
    users: int  # users given
    skipped: dict[str, str]  # user -> why they are not in the table
    seconds: float
    predict_calls: int
    scored_users: list[str]  # the users the table must hold: every user given except the skipped ones

    @property
    def users_scored(self) -> int:
        return len(self.scored_users)

    @property
    def users_per_s(self) -> float:
        return self.users_scored / self.seconds if self.seconds > 0 else float("inf")

    def metadata(self) -> dict[str, Any]:
        """Plain values for asset metadata and logs."""
        return {"users": self.users, "users_scored": self.users_scored, "users_skipped": len(self.skipped),
                "skipped_examples": dict(list(self.skipped.items())[:5]), "rows": len(self.frame),
                "seconds": round(self.seconds, 3), "users_per_s": round(self.users_per_s, 2),
                "predict_calls": self.predict_calls, "exclude_seen": self.exclude_seen,
                "model": asdict(self.model)}


def _default_exclude_seen(python_model: Any) -> bool:
    meta = getattr(python_model, "meta", None)
    return bool(getattr(meta, "exclude_seen", False))


def score_users(
    model: Any,
    histories: Mapping[str, Sequence[str]],
    *,
    ref: ModelRef,
    batch_users: int = 1024,
    exclude_seen: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    num_threads: int | None = None,
) -> BatchScores:
    """Every user's top-K from ``model`` (a loaded pyfunc, or its PythonModel), ``batch_users`` users per predict.

    Each row is ``{"history": ..., "user_id": ...}``, as ``digr recommend --user`` asks, so the user's stored
    interest tokens apply. Users whose history holds no item of the model's catalogue (``known_items``) are left
    out and named in ``skipped`` (online, the same request is an input error). ``exclude_seen`` None uses the
    model's logged default. ``progress(done, total)`` is called after each batch. ``num_threads`` sets torch's
    intra-op threads while scoring (restored afterwards; None leaves them). Deterministic: users in sorted order,
    rows sorted by (user_id, rank).
    """
    if batch_users < 1:
        raise ValueError(f"batch_users must be >= 1, got {batch_users}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
    import torch

    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _score_users(model, histories, ref=ref, batch_users=batch_users, exclude_seen=exclude_seen,
                            progress=progress)
    finally:
        torch.set_num_threads(threads_before)


def _score_users(model: Any, histories: Mapping[str, Sequence[str]], *, ref: ModelRef, batch_users: int,
                 exclude_seen: bool | None, progress: Callable[[int, int], None] | None) -> BatchScores:
    python_model = _python_model(model)
    known = getattr(python_model, "known_items", None)
    if exclude_seen is None:
        exclude_seen = _default_exclude_seen(python_model)
    params = {"exclude_seen": bool(exclude_seen)}
    t0 = time.perf_counter()
    users, skipped = [], {}
    for user in sorted(map(str, histories)):
        history = [str(i) for i in histories[user]]
        if not history or (known is not None and not any(i in known for i in history)):
            skipped[user] = NO_KNOWN_ITEM if history else "empty history"
            continue
        users.append((user, history))
    parts, calls = [], 0
    for start in range(0, len(users), batch_users):
        chunk = users[start : start + batch_users]
        frame = pd.DataFrame({"history": [h for _, h in chunk], "user_id": [u for u, _ in chunk]})
        out = _predict(model, frame, params)
        calls += 1
        if len(out) != len(chunk):
            raise RuntimeError(f"the model answered {len(out)} rows for {len(chunk)} users")
        n = np.fromiter((len(r) for r in out["item_ids"]), dtype=np.int64, count=len(out))
        parts.append(pd.DataFrame({
            "user_id": np.repeat([u for u, _ in chunk], n),
            "rank": np.concatenate([np.arange(1, m + 1) for m in n]) if len(n) else np.array([], dtype=np.int64),
            "item_id": [str(i) for row in out["item_ids"] for i in row],
            "score": np.asarray([float(s) for row in out["scores"] for s in row], dtype=np.float64),
        }))
        if progress is not None:
            progress(min(start + batch_users, len(users)), len(users))
    frame = (pd.concat(parts, ignore_index=True) if parts else
             pd.DataFrame({"user_id": pd.Series(dtype=str), "rank": pd.Series(dtype=np.int64),
                           "item_id": pd.Series(dtype=str), "score": pd.Series(dtype=np.float64)}))
    frame["rank"] = frame["rank"].astype(np.int64)
    frame["model_name"] = ref.name
    frame["model_version"] = ref.version
    frame["model_run_id"] = ref.run_id or ""
    frame["exclude_seen"] = bool(exclude_seen)
    frame = frame.sort_values(["user_id", "rank"], kind="stable", ignore_index=True)[list(COLUMNS)]
    return BatchScores(frame=frame, model=ref, exclude_seen=bool(exclude_seen), users=len(histories),
                       skipped=skipped, seconds=time.perf_counter() - t0, predict_calls=calls,
                       scored_users=[u for u, _ in users])




class RecommendationsContractError(ValueError):
    """The scored table broke its contract; nothing was written (the previous table is kept)."""

    def __init__(self, result: ContractResult) -> None:
        super().__init__(f"{TABLE} contract failed, previous table kept:\n{result.summary()}")
        self.result = result


def write_recommendations(warehouse: Any, frame: pd.DataFrame, *, expected_users: Sequence[str],
                          k: int | None = None) -> tuple[int, ContractResult]:
    """Replace the ``user_recommendations`` table of ``warehouse`` (anything with ``replace(tables, validate=)``,
    e.g. the Dagster ``Warehouse`` resource) with ``frame``, validating the staged table (exactly what would be
    swapped in) first. Returns (rows, contract result); raises :class:`RecommendationsContractError` and keeps the
    previous table when the contract fails."""
    holder: dict[str, ContractResult] = {}

    def validate(con, staged: Mapping[str, str]) -> None:
        staged_frame = con.execute(f'SELECT * FROM "{staged[TABLE]}"').df()
        holder["result"] = validate_user_recommendations(staged_frame, expected_users=expected_users, k=k)
        if not holder["result"].success:
            raise RecommendationsContractError(holder["result"])

    rows = warehouse.replace({TABLE: frame}, validate=validate)[TABLE]
    return rows, holder["result"]


# --------------------------------------------------------------------------- serving from the table


def lookup_recommendations(con: Any, user_id: str, *, model_version: str | None = None,
                           exclude_seen: bool | None = None, k: int | None = None) -> pd.DataFrame | None:
    """The user's stored top-K (``rank, item_id, score`` and the model columns, best first) from the table on
    DuckDB connection ``con``; None when there is no table, the user is not in it, or it was scored by another
    ``model_version`` or with another ``exclude_seen`` than asked (a stale answer is not served)."""
    from warehouse.tables import table_exists

    if not table_exists(con, TABLE):
        return None
    rows = con.execute(f'SELECT * FROM "{TABLE}" WHERE user_id = ? ORDER BY rank', [str(user_id)]).df()
    if rows.empty:
        return None
    if model_version is not None and str(rows["model_version"].iloc[0]) != str(model_version):
        return None
    if exclude_seen is not None and bool(rows["exclude_seen"].iloc[0]) != bool(exclude_seen):
        return None
    return rows.head(k).reset_index(drop=True) if k else rows


@dataclass(frozen=True)
class ServedRecommendations:
    """One user's answer and where it came from: ``"table"`` (batch-scored) or ``"online"`` (ranked now)."""

    user_id: str
    item_ids: list[str]
    scores: list[float]
    source: str
    model_version: str | None = None
    explanations: list[str] = field(default_factory=list)


def recommend_user(con: Any, user_id: str, *, model: Callable[[], Any], history: Callable[[], Sequence[str]],
                   model_version: str | None = None, exclude_seen: bool | None = None,
                   k: int | None = None) -> ServedRecommendations:
    """The user's top-K from the batch-scored table when it holds them (for ``model_version`` and
    ``exclude_seen`` when given), else ranked online: ``model()`` gives the loaded pyfunc and ``history()`` the
    user's history (both called only on a miss, so a table hit loads no model)."""
    rows = lookup_recommendations(con, user_id, model_version=model_version, exclude_seen=exclude_seen, k=k)
    if rows is not None:
        return ServedRecommendations(str(user_id), rows["item_id"].astype(str).tolist(),
                                     [float(s) for s in rows["score"]], "table", str(rows["model_version"].iloc[0]))
    params = None if exclude_seen is None else {"exclude_seen": bool(exclude_seen)}
    out = _predict(model(), pd.DataFrame([{"history": list(history()), "user_id": str(user_id)}]), params).iloc[0]
    items, scores = [str(i) for i in out["item_ids"]], [float(s) for s in out["scores"]]
    if k:
        items, scores = items[:k], scores[:k]
    return ServedRecommendations(str(user_id), items, scores, "online", model_version,
                                 [str(x) for x in out["explanations"]])
