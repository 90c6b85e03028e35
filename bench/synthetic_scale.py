"""Synthetic catalogues at a multiple of Amazon Scientific's size, for the growth benchmark (``bench.growth``).

    python -m bench.synthetic_scale OUT --scale 10 [--seed 0]

``write_scaled_dataset(out, scale)`` writes ``round(scale × 8,442)`` users, ``round(scale × 4,385)`` items and
``round(scale × 59,427)`` interactions (Scientific's counts) as RecBole atomic files in the UniSRec layout that
``ingest_source`` kind ``recbole`` reads, like ``../shared/data/amazon-scientific``: ``Synthetic.user2index``,
``.item2index``, ``.text`` and the leave-one-out ``.train/.valid/.test.inter`` (histories capped at 50, train rows
latest first), plus ``synthetic.json`` (counts and parameters, written last: a folder without it is incomplete).
Users and interactions match exactly; items match unless a motivation has fewer purchases than items (only at
scales far below 0.02), and then those items are left out.

What it is made of: the demo generator's catalogue (``ingestion.demo_data``: its motivations, products in buying
order, brands, shared and generic products, description sentences). An item is a product × brand family plus an
attribute, an optional variant and a model code unique to the item, so every item text differs while families
share words, as real catalogues do. Users follow the demo's structure: one motivation, or two one after the other
(35%), about 12% generic and 5% random purchases, the motivation's items ordered by their stage in the buying order
plus noise (all 22 motivations from scale 0.1 up; below, one per 20 items, so each still fills a sequence).
Sequences have at least 5 items (Scientific is 5-core) with Scientific's long tail of lengths; item
popularity is log-normal (σ 1: the top 10% of items take about a third of the interactions, Scientific 37%),
generic items 3× more popular. Every item is bought at least once. Draws are with replacement; a repeat within a
user is redrawn up to 3 times (the rest, well under 1% of interactions from scale 1 up, are kept: Scientific keeps
its 0.5%). Everything comes from one numpy generator seeded by ``seed`` and is vectorised (no Python loop per
interaction): 100× Scientific (302 MiB of files) writes in about 25 s, 1.4 GiB peak.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

# the demo's hand-written catalogue is the vocabulary (not re-typed here, so both stay one definition)
from ingestion.demo_data import _CATALOGUE, _EXTRA_SENTENCES, _GENERIC, _GENERIC_BRANDS, _SHARED, _VARIANT_SUFFIXES

SCIENTIFIC = {"users": 8_442, "items": 4_385, "interactions": 59_427}
STEM = "Synthetic"
MANIFEST = "synthetic.json"
GENERATOR_VERSION = 1  # bump when the files for a given (scale, seed) change
MIN_LENGTH = 5
HISTORY_CAP = 50  # the published Scientific files cut every history to its last 50 items
_GENERIC_SHARE, _NOISE_SHARE, _TWO_MOTIVATION_SHARE = 0.12, 0.05, 0.35
_EXTRA_P = 0.33  # sequence length = 5 + (geometric - 1): mean ≈ 7, Scientific 7.04
_POPULARITY_SIGMA = 1.0
_REDRAW_ROUNDS = 3
_ITEMS_PER_MOTIVATION = 20
_ATTRIBUTES = ("Matte Black", "White", "Slate Grey", "Navy Blue", "Forest Green", "Brick Red", "Stainless Steel",
               "Bamboo", "Recycled Plastic", "Heavy Duty", "Lightweight", "Travel Size", "Small", "Medium", "Large",
               "Extra Large", "Gen 2", "Gen 3", "2019 Model", "2020 Model", "Refill Pack", "Bundle", "Classic",
               "Eco Line")
_ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
_CHUNK_ROWS = 500_000


def target_counts(scale: float) -> dict[str, int]:
    """Users, items and interactions of ``scale`` × Scientific; a scale too small for one user and item is an
    error."""
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    counts = {k: round(v * scale) for k, v in SCIENTIFIC.items()}
    if counts["users"] < 1 or counts["items"] < 1:
        raise ValueError(f"scale {scale} is too small: {counts['users']} users and {counts['items']} items "
                         f"(need at least one of each; the smallest usable scale is about 0.0003)")
    return counts


def write_scaled_dataset(out_dir: Path, scale: float, seed: int = 0) -> dict:
    """Write the data set of ``scale`` × Scientific into ``out_dir`` (see the module docstring); returns the
    manifest (counts, files, bytes). The same (scale, seed) always gives byte-identical files."""
    counts = target_counts(scale)
    rng = np.random.default_rng(seed)
    catalogue = _item_catalogue(rng, counts["items"])
    lengths = _lengths(rng, counts["users"], counts["interactions"])
    sequence = _sequences(rng, catalogue, lengths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # until the files are complete
    written = _write_files(rng, out_dir, catalogue, lengths, sequence)
    manifest = {"generator_version": GENERATOR_VERSION, "scale": scale, "seed": seed, "stem": STEM,
                "target": counts, **written,
                "bytes": sum((out_dir / name).stat().st_size for name in written["files"])}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read_manifest(out_dir: Path) -> dict | None:
    """The manifest of a complete data set in ``out_dir``, else None."""
    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


# --------------------------------------------------------------------------- the catalogue


def n_motivations(n_items: int) -> int:
    """Motivations in a catalogue of ``n_items``: all 22 from about 440 items (scale 0.1) up; fewer below (one
    per 20 items, at least 2), so each keeps enough items to fill a sequence without repeats."""
    return min(len(_CATALOGUE), max(2, n_items // _ITEMS_PER_MOTIVATION))


def _families(count: int) -> pd.DataFrame:
    """One row per product × brand of the demo catalogue's first ``count`` motivations (and the shared
    and generic products): its text parts, the motivations it serves (empty for generic products) and its stage
    in the usual buying order."""
    by_name = {m.name: i for i, m in enumerate(_CATALOGUE[:count])}
    rows = []
    for m, motivation in enumerate(_CATALOGUE[:count]):
        for stage, (product, leaf, sentence) in enumerate(motivation.products):
            rows += [(brand, product, " ".join((*motivation.category, leaf)), sentence, (m,), float(stage))
                     for brand in motivation.brands]
    for product, category, sentence, served in _SHARED:
        served = tuple(by_name[s] for s in served if s in by_name)
        # shared tools are mid-journey purchases, as in the demo
        rows += [(brand, product, " ".join(category), sentence, served, 3.0) for brand in _GENERIC_BRANDS if served]
    for product, category, sentence in _GENERIC:
        rows += [(brand, product, " ".join(category), sentence, (), 0.0) for brand in _GENERIC_BRANDS]
    return pd.DataFrame(rows, columns=["brand", "product", "category", "sentence", "motivations", "stage"])


def _item_catalogue(rng: np.random.Generator, n_items: int) -> pd.DataFrame:
    """``n_items`` items: family, distinct text, stage, home pool and popularity."""
    families = _families(n_motivations(n_items))
    n_fam = len(families)
    # every family once (while there are enough items), the rest uniformly
    family = rng.permutation(n_fam)[:n_items] if n_items <= n_fam else rng.permutation(
        np.concatenate([np.arange(n_fam), rng.integers(n_fam, size=n_items - n_fam)]))
    items = families.iloc[family].reset_index(drop=True)
    variant = np.where(rng.random(n_items) < 0.35, rng.integers(len(_VARIANT_SUFFIXES), size=n_items), -1)
    attribute = rng.integers(len(_ATTRIBUTES), size=n_items)
    extra = np.where(rng.random(n_items) < 0.7, rng.integers(len(_EXTRA_SENTENCES), size=n_items), -1)
    number = rng.permutation(n_items)  # unique per item: the model code makes every text distinct
    width = max(4, len(str(n_items)))
    initials = items["brand"].str.replace(r"[^A-Za-z]", "", regex=True).str[:2].str.upper()
    suffixes = np.array(["", *(f", {s}" for s in _VARIANT_SUFFIXES)], dtype=object)[variant + 1]
    attributes = np.array(_ATTRIBUTES, dtype=object)[attribute]
    codes = pd.Series(number).map(lambda n: f"{n:0{width}d}")
    title = (items["brand"] + " " + items["product"] + suffixes + ", " + attributes + " (Model " + initials + "-"
             + codes + ")")
    extras = np.array(["", *_EXTRA_SENTENCES], dtype=object)[extra + 1]
    description = items["sentence"] + pd.Series([" " + e.format(brand=b) if e else ""
                                                  for e, b in zip(extras, items["brand"], strict=True)])
    # Scientific's text is "title. categories. brand. "; the description sentences follow
    text = title + ". " + items["category"] + ". " + items["brand"] + ". " + description
    if title.str.contains(". ", regex=False).any():  # the loader takes the text before the first ". " as title
        raise ValueError("a synthetic title contains '. ', which the RecBole loader would split")
    popularity = rng.lognormal(0.0, _POPULARITY_SIGMA, size=n_items)
    generic = items["motivations"].map(len).to_numpy() == 0
    popularity[generic] *= 3.0  # generic items are the store's best sellers, as in the demo
    home = np.array([m[0] if m else -1 for m in items["motivations"]])  # -1: the generic pool
    return pd.DataFrame({"asin": _unique_ids(rng, "B0", 8, n_items), "text": text, "stage": items["stage"],
                         "motivations": items["motivations"], "home": home, "popularity": popularity})


# --------------------------------------------------------------------------- users and their sequences


def _lengths(rng: np.random.Generator, n_users: int, n_interactions: int) -> np.ndarray:
    """Sequence lengths ≥ 5 with a geometric tail, summing to ``n_interactions`` exactly."""
    extra_total = n_interactions - MIN_LENGTH * n_users
    if extra_total < 0:
        raise ValueError(f"{n_interactions} interactions cannot give {n_users} users {MIN_LENGTH} each")
    extra = rng.geometric(_EXTRA_P, size=n_users) - 1
    diff = extra_total - int(extra.sum())
    if diff > 0:  # add to users in proportion to their length: keeps the tail's shape
        weights = (extra + 1) / (extra + 1).sum()
        np.add.at(extra, rng.choice(n_users, size=diff, p=weights), 1)
    elif diff < 0:  # take away single extra items, drawn from all of them at once (never below zero)
        units = np.repeat(np.arange(n_users), extra)
        np.add.at(extra, rng.choice(units, size=-diff, replace=False), -1)
    return MIN_LENGTH + extra


def _sequences(rng: np.random.Generator, catalogue: pd.DataFrame, lengths: np.ndarray) -> np.ndarray:
    """The item (catalogue row) of every interaction, users in order, each user's in sequence order."""
    pools = _pools(catalogue)
    n_users, n_pursued, total = len(lengths), max(pools) + 1, int(lengths.sum())
    weight = rng.permutation(np.arange(1, n_pursued + 1) ** -0.3)  # some hobbies are more common, mildly
    weight[[m not in pools for m in range(n_pursued)]] = 0.0  # a motivation none of the items serves
    if (weight > 0).sum() < 2:
        raise ValueError(f"{len(catalogue)} items serve fewer than 2 motivations: too few for two-motivation users")
    weight /= weight.sum()
    first = rng.choice(n_pursued, size=n_users, p=weight)
    second = rng.choice(n_pursued, size=n_users, p=weight)
    while (same := second == first).any():
        second[same] = rng.choice(n_pursued, size=int(same.sum()), p=weight)
    two = rng.random(n_users) < _TWO_MOTIVATION_SHARE
    switch = np.maximum(1, np.round(lengths * rng.uniform(0.3, 0.7, size=n_users))).astype(np.int64)

    user = np.repeat(np.arange(n_users), lengths)
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(total) - start[user]
    kind = rng.random(total)  # < generic share: generic; < + noise share: random; else the motivation's
    segment = (two[user] & (position >= switch[user])).astype(np.int64)
    pool = np.where(segment == 1, second[user], first[user])  # motivation index; -1 generic, -2 any item
    pool[kind < _GENERIC_SHARE + _NOISE_SHARE] = -2
    pool[kind < _GENERIC_SHARE] = -1

    item = np.full(total, -1, dtype=np.int64)
    fixed = np.zeros(total, dtype=bool)
    # every item is bought at least once: one slot of its home pool each (random noise slots as a fallback)
    homeless = []
    for key, (members, _) in pools.items():
        if key == -2:
            continue
        home = members[catalogue["home"].to_numpy()[members] == key]
        slots = np.flatnonzero(pool == key)
        take = min(len(slots), len(home))
        chosen = rng.choice(slots, size=take, replace=False)
        item[chosen], fixed[chosen] = rng.permutation(home)[:take], True
        homeless.append(home[take:])
    spare = np.concatenate(homeless)
    if len(spare):
        slots = np.flatnonzero((pool == -2) & ~fixed)
        take = min(len(slots), len(spare))
        chosen = rng.choice(slots, size=take, replace=False)
        item[chosen], fixed[chosen] = spare[:take], True
    todo = ~fixed
    for _ in range(1 + _REDRAW_ROUNDS):
        for key, (members, cdf) in pools.items():
            slots = np.flatnonzero(todo & (pool == key))
            if len(slots):
                item[slots] = members[np.minimum(np.searchsorted(cdf, rng.random(len(slots)), side="right"),
                                                 len(members) - 1)]
        todo = _repeats(user, item, fixed, len(catalogue))
        if not todo.any():
            break

    # each motivation's purchases in its buying order (stage + noise), in the positions its slots hold
    focus = np.flatnonzero(pool >= 0)
    group = user[focus] * 2 + segment[focus]
    by_key = focus[np.lexsort((catalogue["stage"].to_numpy()[item[focus]] + rng.normal(0.0, 1.2, len(focus)),
                               group))]
    by_position = focus[np.lexsort((position[focus], group))]
    item[by_position] = item[by_key]
    return item


def _pools(catalogue: pd.DataFrame) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per pool (motivation index, -1 generic, -2 any item): its items and the cumulative popularity."""
    served: dict[int, list[int]] = {}
    for row, motivations in enumerate(catalogue["motivations"]):
        for m in motivations or (-1,):
            served.setdefault(m, []).append(row)
    served[-2] = list(range(len(catalogue)))
    popularity = catalogue["popularity"].to_numpy()
    out = {}
    for key in sorted(served):
        members = np.asarray(served[key], dtype=np.int64)
        cdf = np.cumsum(popularity[members])
        out[key] = (members, cdf / cdf[-1])
    return out


def _repeats(user: np.ndarray, item: np.ndarray, fixed: np.ndarray, n_items: int) -> np.ndarray:
    """Slots whose item the same user already bought in another slot (never a fixed slot: it keeps an item's
    only guaranteed purchase)."""
    key = user * n_items + item
    order = np.lexsort((~fixed, key))  # per (user, item): a fixed slot first, so it is never the repeat
    repeat = np.zeros(len(key), dtype=bool)
    repeat[order[1:]] = key[order[1:]] == key[order[:-1]]
    return repeat


# --------------------------------------------------------------------------- the files


def _write_files(rng: np.random.Generator, out_dir: Path, catalogue: pd.DataFrame, lengths: np.ndarray,
                 sequence: np.ndarray) -> dict:
    """The RecBole files; items are indexed in order of first appearance, as the published files are."""
    used, first = np.unique(sequence, return_index=True)
    used = used[np.argsort(first, kind="stable")]
    index = np.full(len(catalogue), -1, dtype=np.int64)
    index[used] = np.arange(len(used))
    tokens = index[sequence].astype(f"<U{len(str(len(used)))}")
    n_users = len(lengths)
    user_ids = _unique_ids(rng, "A", 13, n_users)
    files = {f"{STEM}.user2index": "".join(f"{u}\t{n}\n" for n, u in enumerate(user_ids)),
             f"{STEM}.item2index": "".join(f"{a}\t{n}\n" for n, a in enumerate(catalogue["asin"].to_numpy()[used]))}
    texts = catalogue.iloc[used].sort_values("asin")
    files[f"{STEM}.text"] = "item_id:token\ttext:token_seq\n" + "".join(
        f"{a}\t{t}\n" for a, t in zip(texts["asin"], texts["text"], strict=True))
    for name, text in files.items():
        (out_dir / name).write_text(text)

    # one string of every token, so a history is one slice of it: [a, b) -> big[offset[a]:offset[b] - 1]
    big = " ".join(tokens.tolist()) + " "
    offset = np.concatenate([[0], np.cumsum(np.char.str_len(tokens) + 1)])
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    end = start + lengths
    users = np.arange(n_users)
    for split, back in (("test", 1), ("valid", 2)):
        target = end - back
        _write_rows(out_dir / f"{STEM}.{split}.inter", users, np.maximum(start, target - HISTORY_CAP), target,
                    big, offset, tokens)
    # train rows: the targets from the third-to-last item down to the second, latest first per user
    n_train = lengths - 3
    train_user = np.repeat(users, n_train)
    k = np.arange(int(n_train.sum())) - np.repeat(np.cumsum(n_train) - n_train, n_train)
    target = end[train_user] - 3 - k
    _write_rows(out_dir / f"{STEM}.train.inter", train_user, np.maximum(start[train_user], target - HISTORY_CAP),
                target, big, offset, tokens)
    return {"users": n_users, "items": len(used), "interactions": int(lengths.sum()), "train_rows": len(target),
            "repeats": int(len(sequence) - len(np.unique(np.repeat(users, lengths) * len(catalogue) + sequence))),
            "files": sorted([*files, *(f"{STEM}.{s}.inter" for s in ("train", "valid", "test"))])}


def _write_rows(path: Path, users: np.ndarray, history_start: np.ndarray, target: np.ndarray, big: str,
                offset: np.ndarray, tokens: np.ndarray) -> None:
    with path.open("w") as out:
        out.write(_HEADER)
        for lo in range(0, len(users), _CHUNK_ROWS):
            part = slice(lo, lo + _CHUNK_ROWS)
            a, b = offset[history_start[part]].tolist(), (offset[target[part]] - 1).tolist()
            out.write("".join(f"{u}\t{big[i:j]}\t{t}\n" for u, i, j, t in zip(
                users[part].tolist(), a, b, tokens[target[part]].tolist(), strict=True)))


def _unique_ids(rng: np.random.Generator, prefix: str, length: int, count: int) -> np.ndarray:
    """``count`` distinct random ids of ``length`` characters (A-Z, 0-9) after ``prefix``, in draw order."""
    ids = np.empty(0, dtype=object)
    while len(ids) < count:
        chars = _ID_CHARS[rng.integers(len(_ID_CHARS), size=(count, length))]
        drawn = np.char.add(prefix, chars.view(f"<U{length}").ravel()).astype(object)
        ids = np.concatenate([ids, drawn])
        _, first = np.unique(ids, return_index=True)
        ids = ids[np.sort(first)]
    return ids[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.synthetic_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=float, required=True, help="multiple of Scientific's size, e.g. 10")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    manifest = write_scaled_dataset(args.out, args.scale, args.seed)
    print(json.dumps({k: manifest[k] for k in ("users", "items", "interactions", "train_rows", "repeats")})
          + f"\nwritten in {time.perf_counter() - started:.1f} s, {manifest['bytes'] / 2**20:.1f} MiB, to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
