"""The judge measured on the user's own catalogue: a sample to label, the labels file, and the agreement.

The shipped hand-labelled set (``mining.labelled_descriptors``) is made-up retail products; a judge that is
right there can still curate restatements of movie titles. So ``label_sample`` draws descriptors of the
user's own ``interest_rewards`` (half curated, half rejected, seeded) into a CSV the user fills in with 1/0,
and ``measure_agreement`` compares the pipeline's final labels (the judge's score plus the rejection rules,
exactly what the rewards table holds) with the user's on those rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mining.judges import REASON_COLUMN, DescriptorJudge, JudgeError, label_interests

#: columns of the labelling file: what the user reads, the pipeline's label (to compare later), and theirs
SAMPLE_COLUMNS = ["item_id", "title", "descriptor", "pipeline_label", "reason", "label"]


def label_sample(rewards: pd.DataFrame, items: pd.DataFrame, *, n: int = 60, seed: int = 0) -> pd.DataFrame:
    """``n`` descriptors of ``rewards`` to label by hand: half curated, half rejected where both exist
    (agreement on one class alone says little), seeded, with the item's title and an empty ``label``."""
    if n < 2:
        raise JudgeError(f"label_sample: n must be >= 2, got {n}")
    missing = [c for c in ("item_id", "descriptor", "label") if c not in rewards.columns]
    if missing:
        raise JudgeError(f"interest_rewards: missing column(s) {missing}")
    if len(rewards) == 0:
        raise JudgeError("interest_rewards is empty: nothing to sample")
    rng = np.random.default_rng(seed)
    curated, rejected = rewards[rewards["label"] == 1], rewards[rewards["label"] == 0]
    take_curated = min(len(curated), max(n - len(rejected), n // 2))
    take_rejected = min(len(rejected), n - take_curated)
    picks = [frame.iloc[np.sort(rng.choice(len(frame), size=k, replace=False))]
             for frame, k in ((curated, take_curated), (rejected, take_rejected)) if k]
    sample = pd.concat(picks).sort_values(["item_id", "descriptor"], kind="stable")
    titles = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
    out = pd.DataFrame({
        "item_id": sample["item_id"].astype(str).to_numpy(),
        "title": sample["item_id"].astype(str).map(titles["title"]).fillna("").to_numpy(),
        "descriptor": sample["descriptor"].astype(str).to_numpy(),
        "pipeline_label": sample["label"].astype("int64").to_numpy(),
        "reason": (sample[REASON_COLUMN].astype("string").fillna("") if REASON_COLUMN in sample.columns
                   else pd.Series([""] * len(sample))).to_numpy(),
        "label": pd.array([pd.NA] * len(sample), dtype="Int64"),
    })
    return out[SAMPLE_COLUMNS].reset_index(drop=True)


def load_own_labels(path: str | Path, catalogue_ids: set[str]) -> pd.DataFrame:
    """The user's labelled rows (item_id, descriptor, label in {0, 1}) from a CSV; rows left blank are
    dropped. Errors name the file, the column and the first bad row."""
    path = Path(path)
    if not path.is_file():
        raise JudgeError(f"own labels file {path} does not exist (write one with `digr label-sample`)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)  # as typed: "yes" is reported as "yes"
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise JudgeError(f"own labels file {path}: not a readable CSV ({exc})") from None
    missing = [c for c in ("item_id", "descriptor", "label") if c not in df.columns]
    if missing:
        raise JudgeError(f"own labels file {path}: missing column(s) {missing}")
    df = df[df["label"].str.strip() != ""].reset_index(drop=True)
    if len(df) == 0:
        raise JudgeError(f"own labels file {path}: no row has a label (fill the `label` column with 1 or 0)")
    labels = pd.to_numeric(df["label"].str.strip(), errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise JudgeError(f"own labels file {path}: label must be 1 or 0, got {df['label'].iloc[row]!r} "
                         f"(labelled row {row + 1}, item {df['item_id'].iloc[row]!r})")
    unknown = sorted(set(df["item_id"].astype(str)) - catalogue_ids)
    if unknown:
        raise JudgeError(f"own labels file {path}: {len(unknown)} item id(s) not in the catalogue, e.g. "
                         f"{unknown[:3]}")
    out = df[["item_id", "descriptor"]].astype(str).assign(label=labels.astype("int64").to_numpy())
    return out.drop_duplicates(["item_id", "descriptor"], keep="last").reset_index(drop=True)


@dataclass(frozen=True)
class Agreement:
    """The pipeline's labels against the user's: accuracy with a Wilson 95% interval, Cohen's kappa, the
    confusion ``[[tn, fp], [fn, tp]]`` (rows: the user, columns: the pipeline), and curated precision (share of
    the pipeline's curated descriptors the user calls good: the rewards pay on those)."""

    n: int
    accuracy: float
    interval: tuple[float, float]
    kappa: float
    confusion: np.ndarray
    curated_precision: float | None
    matched: int  # rows found in interest_rewards; the rest were judged now with the same judge and rules

    def metadata(self) -> dict:
        return {"own_labels_n": self.n, "own_labels_agreement": round(self.accuracy, 4),
                "own_labels_agreement_95ci": [round(v, 4) for v in self.interval],
                "own_labels_kappa": round(self.kappa, 4),
                "own_labels_confusion": {"tn": int(self.confusion[0, 0]), "fp": int(self.confusion[0, 1]),
                                         "fn": int(self.confusion[1, 0]), "tp": int(self.confusion[1, 1])},
                "own_labels_curated_precision": None if self.curated_precision is None
                else round(self.curated_precision, 4),
                "own_labels_matched_rows": self.matched}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (sound at small n and at 0 or 1, unlike the normal one)."""
    if n <= 0:
        raise ValueError(f"wilson_interval needs n >= 1, got {n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def cohen_kappa(confusion: np.ndarray) -> float:
    """Agreement beyond chance; 0.0 where chance agreement is already total (one class on both sides)."""
    n = confusion.sum()
    observed = np.trace(confusion) / n
    expected = float((confusion.sum(axis=0) * confusion.sum(axis=1)).sum()) / (n * n)
    return 0.0 if expected >= 1.0 else float((observed - expected) / (1.0 - expected))


def measure_agreement(own: pd.DataFrame, rewards: pd.DataFrame, items: pd.DataFrame, judge: DescriptorJudge, *,
                      restatement_threshold: float, max_descriptor_share: float) -> Agreement:
    """Agreement of the pipeline's final labels with ``own`` (from :func:`load_own_labels`).

    Rows present in ``rewards`` take the label stored there. Rows that are not (labelled from an older mining
    run) are labelled now by ``judge`` and the same rules against the whole catalogue; their genericity is
    judged within the labelled rows only, so it can only be missed, never invented.
    """
    key = ["item_id", "descriptor"]
    stored = rewards.assign(item_id=rewards["item_id"].astype(str))[[*key, "label"]].drop_duplicates(key)
    merged = own.merge(stored.rename(columns={"label": "pipeline"}), on=key, how="left")
    fresh = merged["pipeline"].isna()
    if fresh.any():
        rows = merged.loc[fresh, key].assign(rank=0, confidence=1.0)
        labelled = label_interests(rows, items, judge, restatement_threshold=restatement_threshold,
                                   max_descriptor_share=max_descriptor_share)
        # label_interests re-sorts its rows: join its labels back by key
        merged.loc[fresh, "pipeline"] = rows[key].merge(labelled[[*key, "label"]].drop_duplicates(key), on=key,
                                                        how="left")["label"].to_numpy()
    truth = merged["label"].to_numpy(dtype=np.int64)
    pred = merged["pipeline"].to_numpy(dtype=np.int64)
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, (truth, pred), 1)
    hits = int((truth == pred).sum())
    curated = int(confusion[:, 1].sum())
    return Agreement(n=len(truth), accuracy=hits / len(truth), interval=wilson_interval(hits, len(truth)),
                     kappa=cohen_kappa(confusion), confusion=confusion,
                     curated_precision=None if curated == 0 else float(confusion[1, 1] / curated),
                     matched=int((~fresh).sum()))
