"""The recommender as an MLflow pyfunc: history item ids (+ optional interests) in, top-K items, scores and
explanations out; logged with its checkpoint (SID vocabulary and config inside) and registered with lineage.

Input columns: ``history`` (list of item ids, most recent last), optional ``interests`` (list of strings),
optional ``user_id`` (selects the user's interest tokens stored with the model). Output columns:
``item_ids`` (top-K, best first), ``scores`` (beam log-probabilities), ``explanations`` and
``unknown_items`` (history ids the model does not know; they are dropped before ranking).

Params (``predict(..., params={...})``): ``exclude_seen`` (bool; default: the serving metadata's, logged with
the model) leaves every item of the row's history out of its recommendations (the whole history given, not only
the part the model reads); the row still gets K items whenever the catalogue has K items it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from config_schema import from_mapping
from serving.registry import LINEAGE_TAG_PREFIX, metric_tag_key

CHECKPOINT_ARTIFACT = "checkpoint"
METADATA_ARTIFACT = "metadata"
INPUT_COLUMNS = ("history", "interests", "user_id")
OUTPUT_COLUMNS = ("item_ids", "scores", "explanations", "unknown_items")
PARAMS = ("exclude_seen",)
_BATCH = 64  # the batch size of training.generator.recommend, so padding (and results) match it
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("and the for with from into that this your you are use used using of to in on a an or".split())


#: the generator architectures whose beam search returns scores (the causal-LM path ranks without them)
SERVED_ARCHS = ("t5", "item_causal")


class RecommendationInputError(ValueError):
    """A request the recommender cannot answer (missing column, malformed or all-unknown history)."""


@dataclass
class ServingMetadata:
    """What the pyfunc needs beside the checkpoint: texts to explain with, per-user tokens, decoding."""

    item_titles: dict[str, str]
    k: int = 10
    beam_width: int = 20
    max_explanations: int = 5
    item_interests: dict[str, list[str]] = field(default_factory=dict)
    user_prefix: dict[str, list[int]] = field(default_factory=dict)
    user_interests: dict[str, list[str]] = field(default_factory=dict)
    #: the default of the ``exclude_seen`` param: leave the request's history out of its recommendations
    exclude_seen: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.exclude_seen, bool):
            raise ValueError(f"exclude_seen must be a bool, got {self.exclude_seen!r}")
        if self.k < 1 or self.beam_width < self.k or self.max_explanations < 0:
            raise ValueError(
                f"need 1 <= k <= beam_width and max_explanations >= 0, got k={self.k}, "
                f"beam_width={self.beam_width}, max_explanations={self.max_explanations}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServingMetadata:
        """Build from the JSON artifact."""
        if "item_titles" not in d:
            raise ValueError("serving metadata lacks 'item_titles'")
        return from_mapping(cls, d, where="serving metadata")


def model_signature(exclude_seen: bool = False) -> ModelSignature:
    """Input/output schema of the pyfunc (list columns; ``interests`` and ``user_id`` optional) and its params
    (``exclude_seen``, defaulting to the serving metadata's value)."""
    strings = Array(DataType.string)
    inputs = Schema([
        ColSpec(strings, "history"),
        ColSpec(strings, "interests", required=False),
        ColSpec(DataType.string, "user_id", required=False),
    ])
    outputs = Schema([
        ColSpec(strings, "item_ids"),
        ColSpec(Array(DataType.double), "scores"),
        ColSpec(strings, "explanations"),
        ColSpec(strings, "unknown_items"),
    ])
    params = ParamSchema([ParamSpec("exclude_seen", DataType.boolean, bool(exclude_seen))])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _exclude_seen(params: Mapping[str, Any] | None, default: bool) -> bool:
    """The ``exclude_seen`` param of a request (``default`` when absent); unknown params are an error."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise RecommendationInputError(f"unknown params {unknown}; the recommender takes {list(PARAMS)}")
    value = params.get("exclude_seen", default)
    if isinstance(value, np.bool_):
        value = bool(value)
    if not isinstance(value, bool):
        raise RecommendationInputError(f"param 'exclude_seen' must be a bool, got {value!r}")
    return value


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP}


def explain(interests: Sequence[str], recommended_texts: Sequence[str], limit: int) -> list[str]:
    """The user's interests ordered by how many recommended items' texts share a content word with them.

    Interests sharing no word with any recommendation are kept after the matching ones (they are still the
    user's stated interests); the order is stable, so equal inputs give equal explanations.
    """
    vocab = [_words(t) for t in recommended_texts]
    support = [sum(bool(_words(i) & v) for v in vocab) for i in interests]
    order = sorted(range(len(interests)), key=lambda j: -support[j])
    return [interests[j] for j in order][:limit]


def _as_list(value: Any, column: str, row: int) -> list[str] | None:
    """A list-valued cell as a list of strings; None for a missing optional value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
        raise RecommendationInputError(
            f"row {row}: {column!r} must be a list of strings, got {type(value).__name__} {value!r}"
        )
    return [str(v) for v in value]


def _as_frame(model_input: Any) -> pd.DataFrame:
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, Mapping):
        return pd.DataFrame([model_input])
    if isinstance(model_input, list) and all(isinstance(r, Mapping) for r in model_input):
        return pd.DataFrame(model_input)
    raise RecommendationInputError(
        f"model input must be a DataFrame or records with a 'history' column, got {type(model_input).__name__}"
    )


class DeepInterestGRModel(mlflow.pyfunc.PythonModel):
    """Constrained beam search over the catalogue's semantic IDs, served through MLflow pyfunc."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the generator (CPU, eval mode) and the serving metadata from the model's artifacts."""
        from training.generator import load_generator
        from training.sequence_data import SampleEncoder

        self.module = load_generator(context.artifacts[CHECKPOINT_ARTIFACT])
        if self.module.config.arch not in SERVED_ARCHS:
            raise ValueError(f"the pyfunc serves arch {SERVED_ARCHS} generators (beam scores), got "
                             f"{self.module.config.arch!r}")
        meta = json.loads(Path(context.artifacts[METADATA_ARTIFACT]).read_text())
        self.meta = ServingMetadata.from_dict(meta)
        self.encoder = SampleEncoder(self.module.vocab, self.meta.user_prefix)
        self.known_items = frozenset(self.module.vocab.item_ids)

    def validate_input(self, model_input: Any, params: Mapping[str, Any] | None = None) -> int:
        """Check a request exactly as :meth:`predict` does, without ranking it: raises
        :class:`RecommendationInputError` naming the problem (bad params, no ``history`` column, a malformed,
        empty or all-unknown history); returns the number of rows. A batching server checks each request with it
        before it joins a batch, so one bad request cannot fail the others."""
        return len(self._parse(model_input, params)[1])

    def _parse(self, model_input: Any, params: Mapping[str, Any] | None) -> tuple[bool, list[tuple]]:
        """``exclude_seen`` and per row (user, capped known history, unknown items, interests, whole known
        history), or a :class:`RecommendationInputError`."""
        exclude_seen = _exclude_seen(params, self.meta.exclude_seen)
        frame = _as_frame(model_input)
        if "history" not in frame.columns:
            raise RecommendationInputError(f"model input needs a 'history' column, got columns {list(frame.columns)}")
        rows = []
        for i, rec in enumerate(frame.to_dict("records")):
            history = _as_list(rec.get("history"), "history", i)
            if not history:
                raise RecommendationInputError(f"row {i}: 'history' is empty; give at least one known item id")
            known = [h for h in history if h in self.known_items]
            unknown = [h for h in history if h not in self.known_items]
            if not known:
                raise RecommendationInputError(
                    f"row {i}: no item of the history is in the model's catalogue; unknown items: {unknown}"
                )
            user = rec.get("user_id")
            user = None if user is None or (isinstance(user, float) and math.isnan(user)) else str(user)
            interests = _as_list(rec.get("interests"), "interests", i)
            if interests is None and user is not None:
                interests = self.meta.user_interests.get(user)
            # the history cap the model was trained with travels in its checkpoint; the whole history is seen
            rows.append((user, known[-self.module.sequence.max_history :], unknown, interests, known))
        return exclude_seen, rows

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        """Top-K recommendations per row; see the module docstring for the columns and params."""
        exclude_seen, rows = self._parse(model_input, params)
        ranked, scores = self._rank([u or "" for u, *_ in rows], [known for _, known, *_ in rows],
                                    exclude=[seen for *_, seen in rows] if exclude_seen else None)
        out = []
        for (_, known, unknown, interests, _), items, row_scores in zip(rows, ranked, scores, strict=True):
            out.append({
                "item_ids": items,
                "scores": row_scores,
                "explanations": self._explanations(items, known, interests),
                "unknown_items": unknown,
            })
        return pd.DataFrame(out, columns=list(OUTPUT_COLUMNS))

    def _rank(self, users: list[str], histories: list[list[str]],
              exclude: list[list[str]] | None = None) -> tuple[list[list[str]], list[list[float]]]:
        """Top-K items and beam scores per row; ``exclude``: per row, item ids to leave out (the K are still
        filled from the rest of the catalogue, ``training.generator.rank_unseen``)."""
        from training.generator import encode_histories, rank_unseen

        vocab, k = self.module.vocab, self.meta.k
        beam_width = max(self.meta.beam_width, k)
        items, scores = [], []
        for start in range(0, len(users), _BATCH):
            batch = encode_histories(self.module, self.encoder, users[start : start + _BATCH],
                                     histories[start : start + _BATCH])
            if exclude is None:
                res = self.module.beam(batch, beam_width=beam_width, top_k=k)
                index_rows, score_rows = res.item_index.tolist(), res.scores.tolist()
            else:
                seen = [[self.encoder.item_index(i) for i in row] for row in exclude[start : start + _BATCH]]
                index, found = rank_unseen(self.module, batch, seen, beam_width=beam_width, top_k=k, scores=True)
                index_rows, score_rows = index.tolist(), found.tolist()
            for idx_row, score_row in zip(index_rows, score_rows, strict=True):
                found = [(vocab.item_ids[i], float(s)) for i, s in zip(idx_row, score_row, strict=True) if i >= 0]
                items.append([item for item, _ in found])
                scores.append([s for _, s in found])
        return items, scores

    def _explanations(self, items: list[str], history: list[str], interests: list[str] | None) -> list[str]:
        limit = self.meta.max_explanations
        if interests:
            texts = [" ".join([self.meta.item_titles.get(i, ""), *self.meta.item_interests.get(i, [])]) for i in items]
            return explain(interests, texts, limit)
        titles = [self.meta.item_titles.get(h, h) for h in reversed(history)]  # most recent first
        return list(dict.fromkeys(titles))[:limit]


# --------------------------------------------------------------------------- logging and registration


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _slim_checkpoint(checkpoint: Path, out: Path) -> dict[str, Any]:
    """Write only what ``load_generator`` reads (weights + hyperparameters), without optimizer state."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    hp = ckpt.get("hyper_parameters", {})
    if any(k not in hp for k in ("vocab", "config", "sequence")) or "state_dict" not in ckpt:
        raise ValueError(f"{checkpoint} is not a self-describing generator checkpoint (no vocab/config/sequence "
                         "hyperparameters)")
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    torch.save({"hyper_parameters": hp, "state_dict": state}, out)
    return hp


def _requirements() -> list[str]:
    reqs = []
    for pkg in ("mlflow", "torch", "transformers", "lightning", "numpy", "pandas"):
        try:
            reqs.append(f"{pkg}=={version(pkg).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def log_recommender(
    checkpoint: str | Path,
    item_titles: Mapping[str, str],
    *,
    name: str,
    k: int = 10,
    beam_width: int = 20,
    lineage_tags: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    item_interests: Mapping[str, Sequence[str]] | None = None,
    user_prefix: Mapping[str, Sequence[int]] | None = None,
    user_interests: Mapping[str, Sequence[str]] | None = None,
    max_explanations: int = 5,
    exclude_seen: bool = False,
) -> ModelVersion:
    """Log the recommender as a pyfunc (in the active MLflow run, or a new one) and register a new version.

    The version carries ``lineage.<key>`` tags (e.g. dagster_run_id, semantic-ID hash, SFT/GRPO run ids),
    ``metric.<name>`` tags (``@`` written ``_at_``) read by :func:`serving.registry.promote`, and the
    SHA-256 of the SID vocabulary and of the weights. ``exclude_seen`` is the default of the ``exclude_seen``
    param (a request may override it).
    """
    from training.sequence_data import SampleEncoder
    from training.sid_vocab import SidVocab

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    metrics = {str(m): float(v) for m, v in (metrics or {}).items()}
    bad = [m for m, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"metrics must be finite numbers; not finite: {bad}")
    meta = ServingMetadata(
        item_titles={str(i): str(t) for i, t in item_titles.items()}, k=int(k), beam_width=int(beam_width),
        max_explanations=int(max_explanations),
        item_interests={str(i): [str(x) for x in v] for i, v in (item_interests or {}).items()},
        user_prefix={str(u): [int(t) for t in v] for u, v in (user_prefix or {}).items()},
        user_interests={str(u): [str(x) for x in v] for u, v in (user_interests or {}).items()},
        exclude_seen=bool(exclude_seen),
    )
    with tempfile.TemporaryDirectory(prefix="digr-pyfunc-") as tmp:
        slim = Path(tmp) / "generator.ckpt"
        hp = _slim_checkpoint(checkpoint, slim)
        arch = hp["config"].get("arch", "t5")
        if arch not in SERVED_ARCHS:
            raise ValueError(f"the pyfunc serves arch {SERVED_ARCHS} generators (beam scores), got {arch!r}")
        vocab = SidVocab.from_dict(hp["vocab"])
        SampleEncoder(vocab, meta.user_prefix)  # rejects prefix tokens outside the vocabulary
        example_item = next((i for i in vocab.item_ids if i in meta.item_titles), vocab.item_ids[0])
        meta_path = Path(tmp) / "serving_metadata.json"
        meta_path.write_text(json.dumps(asdict(meta), sort_keys=True))
        vocab_hash = hashlib.sha256(json.dumps(hp["vocab"], sort_keys=True).encode()).hexdigest()
        tags = {
            **{LINEAGE_TAG_PREFIX + str(key): str(v) for key, v in (lineage_tags or {}).items()},
            **{metric_tag_key(m): repr(v) for m, v in metrics.items()},
            "digr.sid_vocab_sha256": vocab_hash,
            "digr.weights_sha256": _sha256_file(slim),
            "digr.k": str(meta.k),
            "digr.beam_width": str(meta.beam_width),
            "digr.max_history": str(hp["sequence"]["max_history"]),
            "digr.exclude_seen": str(meta.exclude_seen),
        }
        # log into the caller's run (e.g. the Dagster step's) when there is one; a failure marks our own run FAILED
        own_run = nullcontext() if mlflow.active_run() else mlflow.start_run(run_name=f"register-{name}")
        with own_run:
            info = mlflow.pyfunc.log_model(
                name="recommender",
                python_model=DeepInterestGRModel(),
                artifacts={CHECKPOINT_ARTIFACT: str(slim), METADATA_ARTIFACT: str(meta_path)},
                signature=model_signature(meta.exclude_seen),
                input_example=pd.DataFrame({"history": [[example_item]]}),
                pip_requirements=_requirements(),
                registered_model_name=name,
            )
    client = mlflow.MlflowClient()
    version_number = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version_number, key, value)
    return client.get_model_version(name, version_number)


def registered_checkpoint(name: str, version: str, dst: str | Path) -> Path:
    """The generator checkpoint behind version ``version`` of registered model ``name``, downloaded into ``dst``
    and verified against the version's ``digr.weights_sha256`` tag; a ``ValueError`` naming the version when
    the tag is absent or the file differs (an altered artifact never seeds another model)."""
    import yaml

    expected = mlflow.MlflowClient().get_model_version(name, version).tags.get("digr.weights_sha256")
    if not expected:
        raise ValueError(f"models:/{name}/{version} has no digr.weights_sha256 tag: it was not registered by "
                         "log_recommender, so its weights cannot be verified")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    path = local / flavor["artifacts"][CHECKPOINT_ARTIFACT]["path"]
    actual = _sha256_file(path)
    if actual != expected:
        raise ValueError(f"models:/{name}/{version}: checkpoint {path.name} has sha256 {actual[:12]}…, the version "
                         f"records {expected[:12]}…; refusing altered weights")
    return path
