"""Does the pipeline's split reproduce the published split exactly? A check on the real Scientific data.

    python -m bench.published_split [--data DIR] [--show N]

The published files (UniSRec layout, see ``ingestion.recbole``) are read here on their own, without the
loader: per user the train rows (in file order), the valid row and the test row, ids mapped back through
``X.user2index`` / ``X.item2index``. The pipeline's split is made the way the benchmark makes it: the
``recbole`` source and the split settings of ``bench.scientific.base_ops()`` (``k_core 1``, ``dedup event``),
through ``ingestion.sources`` and ``ingestion.splits.split_interactions`` with the item catalogue as the
known items. Then, per user, compared with the published rows:

- the valid target and the test target;
- the history before each, as published: the train prefix (valid) and the train prefix + the valid item
  (test), both cut to their last ``cap`` items like the published rows (``cap``: the longest published
  history, 50 on Scientific);
- the whole train prefix: every train row regenerated from it (item ``j`` after items ``:j``, last ``cap``,
  for ``j`` from the last down to 1, as the published file lists them) equals the published train rows,
  which is the only place the history beyond the cap survives.

Prints how many users / targets / histories match and exits 1 naming the first mismatches, else 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

Row = tuple[tuple[str, ...], str]  # (history, next item), original ids


@dataclass
class PublishedUser:
    """One user's rows in the published files (``None`` where the file has no row for them)."""

    train: list[Row] = field(default_factory=list)  # in file order (latest target first)
    valid: Row | None = None
    test: Row | None = None


@dataclass
class Comparison:
    """Per check, the users it was made for and those that matched; the first mismatches, described."""

    checked: dict[str, int] = field(default_factory=dict)
    matched: dict[str, int] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    published_users: int = 0
    split_users: int = 0
    train_rows: int = 0
    train_rows_matched: int = 0
    cap: int = 0

    @property
    def ok(self) -> bool:
        return (all(self.matched[c] == n for c, n in self.checked.items())
                and self.train_rows_matched == self.train_rows
                and self.published_users == self.split_users == self.matched.get("users", -1))

    def count(self, check: str, passed: bool, user: str, detail: str, keep: int) -> None:
        self.checked[check] = self.checked.get(check, 0) + 1
        self.matched[check] = self.matched.get(check, 0) + int(passed)
        if not passed:
            self.mismatches.append(f"{check}: user {user}: {detail}")
            del self.mismatches[keep:]


CHECKS = {  # check -> what the line of the summary says
    "users": "users in both",
    "valid target": "valid targets",
    "test target": "test targets",
    "valid history": "valid histories (train prefix, last cap items)",
    "test history": "test histories (train prefix + valid item, last cap items)",
    "train prefix": "whole train prefixes (every train row regenerated)",
    "split order": "users whose split is train..., valid, test in position order",
}


def dataset_stem(folder: Path) -> str:
    stems = sorted(p.name[: -len(".test.inter")] for p in folder.glob("*.test.inter"))
    if len(stems) != 1:
        raise SystemExit(f"expected one <dataset>.test.inter in {folder}, found {stems or 'none'}")
    return stems[0]


def _index(path: Path) -> dict[str, str]:
    """index -> original id"""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            original, index = line.split("\t")
            out[index.strip()] = original.strip()
    return out


def _rows(path: Path, users: dict[str, str], items: dict[str, str]) -> Iterator[tuple[str, Row]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines[0].split("\t") != ["user_id:token", "item_id_list:token_seq", "item_id:token"]:
        raise SystemExit(f"{path}: unexpected header {lines[0]!r}")
    for line in lines[1:]:
        if line.strip():
            user, history, target = line.split("\t")
            yield users[user], (tuple(items[i] for i in history.split()), items[target.strip()])


def read_published(folder: Path, dataset: str | None = None) -> dict[str, PublishedUser]:
    """Every user's published rows, by original user id."""
    stem = dataset or dataset_stem(folder)
    users, items = _index(folder / f"{stem}.user2index"), _index(folder / f"{stem}.item2index")
    out: dict[str, PublishedUser] = {}
    for split in ("train", "valid", "test"):
        for user, row in _rows(folder / f"{stem}.{split}.inter", users, items):
            published = out.setdefault(user, PublishedUser())
            if split == "train":
                published.train.append(row)
            elif getattr(published, split) is not None:
                raise SystemExit(f"{stem}.{split}.inter: user {user} has two rows")
            else:
                setattr(published, split, row)
    return out


def pipeline_split(folder: Path, dataset: str | None = None) -> pd.DataFrame:
    """The split the benchmark's run config makes of ``folder``: its source and split settings, ``path`` replaced."""
    from bench.scientific import base_ops
    from ingestion.sources import SourceSpec, iter_interaction_chunks, iter_item_chunks
    from ingestion.splits import SplitSettings, split_interactions

    ops = base_ops()
    source = {**ops["ingest_source"]["config"], "path": str(folder), "dataset": dataset or dataset_stem(folder)}
    spec = SourceSpec(**source)
    interactions = pd.concat(list(iter_interaction_chunks(spec)), ignore_index=True)
    items = pd.concat(list(iter_item_chunks(spec)), ignore_index=True)
    splits, _stats = split_interactions(interactions, SplitSettings(**ops["interaction_splits"]["config"]),
                                        known_items=items["item_id"])
    return splits


def history_cap(published: dict[str, PublishedUser]) -> int:
    """The published histories' length limit: the longest history in the files."""
    rows = (r for p in published.values() for r in (*p.train, p.valid, p.test) if r is not None)
    return max((len(history) for history, _ in rows), default=0)


def train_rows(prefix: list[str], cap: int) -> list[Row]:
    """The train rows UniSRec's preprocessing writes for a train prefix: latest target first."""
    return [(tuple(prefix[max(j - cap, 0):j]), prefix[j]) for j in range(len(prefix) - 1, 0, -1)]


def _short(items: tuple[str, ...] | list[str]) -> str:
    items = list(items)
    shown = " ".join(items) if len(items) <= 6 else " ".join([*items[:3], "...", *items[-3:]])
    return f"[{len(items)}: {shown}]"


def compare(splits: pd.DataFrame, published: dict[str, PublishedUser], *, cap: int | None = None,
            keep: int = 10) -> Comparison:
    """Compare the pipeline's split with the published rows, user by user (see the module docstring);
    ``cap`` defaults to the longest published history."""
    cap = history_cap(published) if cap is None else cap
    result = Comparison(published_users=len(published), split_users=int(splits["user_id"].nunique()), cap=cap)
    ordered = splits.sort_values(["user_id", "position"], kind="stable")
    ours = {str(user): (list(map(str, g["item_id"])), list(map(str, g["split"])))
            for user, g in ordered.groupby("user_id", sort=True)}
    for user in sorted(set(published) | set(ours)):
        both = user in published and user in ours
        result.count("users", both, user, "only in the published files" if user in published
                     else "only in the pipeline's split", keep)
        if not both:
            continue
        rows, (items, labels) = published[user], ours[user]
        n = len(items)
        expected_labels = ["train"] * (n - 2) + ["valid", "test"]
        result.count("split order", labels == expected_labels, user, f"labels {labels}", keep)
        prefix = [i for i, s in zip(items, labels, strict=True) if s == "train"]
        valid = next((i for i, s in zip(items, labels, strict=True) if s == "valid"), None)
        test = next((i for i, s in zip(items, labels, strict=True) if s == "test"), None)
        for name, row, target, history in (("valid", rows.valid, valid, prefix),
                                           ("test", rows.test, test, [*prefix, valid])):
            if row is None:
                result.count(f"{name} target", False, user, f"no published {name} row", keep)
                continue
            result.count(f"{name} target", target == row[1], user, f"published {row[1]}, split {target}", keep)
            got = tuple(history[max(len(history) - cap, 0):])
            result.count(f"{name} history", got == row[0], user,
                         f"published {_short(row[0])}, split {_short(got)}", keep)
        regenerated = train_rows(prefix, cap)
        same = regenerated == rows.train
        result.train_rows += len(rows.train)
        result.train_rows_matched += sum(a == b for a, b in zip(regenerated, rows.train, strict=False))
        first_diff = next((j for j, (a, b) in enumerate(zip(regenerated, rows.train, strict=False)) if a != b),
                          min(len(regenerated), len(rows.train)))
        result.count("train prefix", same, user,
                     f"{len(rows.train)} published train rows, {len(regenerated)} from the split's "
                     f"{len(prefix)}-item prefix; first difference at row {first_diff + 1}", keep)
    return result


def summary(result: Comparison) -> str:
    lines = [f"users: published {result.published_users:,}, pipeline split {result.split_users:,}; "
             f"history cap {result.cap}"]
    for check, label in CHECKS.items():
        lines.append(f"  {label:<62} {result.matched.get(check, 0):>6,} / {result.checked.get(check, 0):,}")
    lines.append(f"  {'published train rows regenerated from the split':<62} {result.train_rows_matched:>6,} / "
                 f"{result.train_rows:,}")
    if result.ok:
        lines.append("OK: the pipeline's split is exactly the published one")
    else:
        lines.append(f"MISMATCH: first {len(result.mismatches)}:")
        lines.extend(f"  {m}" for m in result.mismatches)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.scientific import DATA

    parser = argparse.ArgumentParser(prog="python -m bench.published_split", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA,
                        help="folder of the RecBole/UniSRec files (default $DIGR_SCIENTIFIC_DATA or %(default)s)")
    parser.add_argument("--dataset", default=None, help="file stem (auto when the folder holds one)")
    parser.add_argument("--show", type=int, default=10, help="how many mismatches to name")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data folder {args.data} (set DIGR_SCIENTIFIC_DATA or --data)", file=sys.stderr)
        return 2
    published = read_published(args.data, args.dataset)
    splits = pipeline_split(args.data, args.dataset)
    per_split = splits["split"].value_counts()
    print(f"published split: {args.data.resolve()}")
    print(f"pipeline split: {len(splits):,} interactions (train {per_split.get('train', 0):,}, valid "
          f"{per_split.get('valid', 0):,}, test {per_split.get('test', 0):,}), {splits['item_id'].nunique():,} items")
    result = compare(splits, published, keep=args.show)
    print(summary(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
