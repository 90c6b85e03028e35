"""A seeded synthetic MovieLens ``ml-100k`` folder (``u.data``, ``u.item``), for tests and sizing runs.

Shaped like the real release so it goes through the real ``movielens`` loader unchanged:

- ``u.data``: ``user TAB item TAB rating TAB unix time``, rows in no particular order (as in ml-100k, which is
  neither sorted by user nor by time). Ratings are 1-5 stars, skewed like ml-100k's (≈ 6/11/27/34/22 %) and
  correlated with a hidden per-user taste for genres and a per-item quality. Every user rates at least
  ``min_ratings`` movies (ml-100k: 20); item popularity is long-tailed. Users rate in sessions: within one, the
  next rating follows a few seconds later or in the same second (``tie_share``), so same-user same-second ties
  occur as they do in MovieLens, where a page of ratings is often submitted at once.
- ``u.item``: ``id | title (year) | release date | video release date | IMDb URL | 19 genre flags``
  (``ingestion.movielens.ML100K_GENRES`` order), latin-1 encoded, with a few accented titles.

:func:`write_grouplens_sample` returns what it wrote (counts per rating, ties) so a test can say exactly which
rows a ``min_rating`` keeps. ``ml-100k`` itself is 943 users, 1,682 movies, 100,000 ratings:
``write_grouplens_sample(folder, n_users=943, n_items=1682, mean_ratings=106)`` writes a set of that size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingestion.movielens import ML100K_GENRES

#: ml-100k's share of 1..5 stars (6,110 / 11,370 / 27,145 / 34,174 / 21,201 of 100,000)
RATING_SHARES: tuple[float, ...] = (0.0611, 0.1137, 0.27145, 0.34174, 0.21201)
FIRST_TIMESTAMP = 874_724_710  # ml-100k's first rating (1997-09-20)
SPAN_SECONDS = 18_561_928  # ml-100k's ratings span about seven months

_ADJECTIVES = ("Silent", "Last", "Broken", "Golden", "Hidden", "Lonely", "Crimson", "Distant", "Wild", "Secret",
               "Frozen", "Little", "Dark", "Brave", "Lost", "Electric", "Midnight", "Sweet", "Fatal", "Endless")
_NOUNS = ("River", "Summer", "Kingdom", "Detective", "Highway", "Garden", "Stranger", "Harbor", "Promise", "Empire",
          "Season", "Mirror", "Frontier", "Orchestra", "Island", "Witness", "Voyage", "Carnival", "Café", "Misérables")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_REAL_GENRES = ML100K_GENRES[1:]  # "unknown" is the placeholder flag


@dataclass(frozen=True)
class GroupLensSample:
    """What :func:`write_grouplens_sample` wrote."""

    folder: Path
    n_users: int
    n_items: int
    n_ratings: int
    rating_counts: dict[int, int] = field(default_factory=dict)
    #: rows whose user rated another movie in the same second (both rows counted)
    tied_rows: int = 0
    #: movies no user rated (they are in ``u.item`` only)
    unrated_items: int = 0

    def kept(self, min_rating: float | None) -> int:
        """Rows a ``min_rating`` keeps (``None``: every row)."""
        if min_rating is None:
            return self.n_ratings
        return sum(n for stars, n in self.rating_counts.items() if stars >= min_rating)


def write_grouplens_sample(folder: str | Path, *, n_users: int = 60, n_items: int = 120, mean_ratings: int = 40,
                           min_ratings: int = 20, tie_share: float = 0.15, seed: int = 0) -> GroupLensSample:
    """Write ``u.data`` and ``u.item`` of a seeded ml-100k-style data set into ``folder`` (created if needed).

    Each user rates ``min_ratings`` movies plus a geometric number more (mean ``mean_ratings`` in all, at most
    every movie); ``tie_share`` is the chance that a rating in a session shares the previous one's second.
    """
    if n_users < 1 or n_items < 2:
        raise ValueError(f"need n_users >= 1 and n_items >= 2, got {n_users} and {n_items}")
    if not 1 <= min_ratings <= n_items:
        raise ValueError(f"min_ratings must lie in [1, n_items={n_items}], got {min_ratings}")
    if mean_ratings < min_ratings:
        raise ValueError(f"mean_ratings ({mean_ratings}) must be >= min_ratings ({min_ratings})")
    if not 0.0 <= tie_share < 1.0:
        raise ValueError(f"tie_share must lie in [0, 1), got {tie_share}")
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    # movies: 1-3 genres each (a few only "unknown", as in ml-100k), a hidden quality, long-tailed popularity
    genres = np.zeros((n_items, len(ML100K_GENRES)), dtype=np.int8)
    for i in range(n_items):
        if rng.random() < 0.01:
            genres[i, 0] = 1
        else:
            picked = rng.choice(len(_REAL_GENRES), size=int(rng.integers(1, 4)), replace=False)
            genres[i, 1 + picked] = 1
    quality = rng.normal(0.0, 0.6, n_items)
    popularity = 1.0 / (rng.permutation(n_items) + 10.0) ** 0.9
    popularity /= popularity.sum()

    # users: a taste over genres and a leniency; how many movies, when they started
    taste = rng.normal(0.0, 0.8, (n_users, len(ML100K_GENRES)))
    leniency = rng.normal(0.0, 0.4, n_users)
    extra = max(mean_ratings - min_ratings, 0)
    more = rng.geometric(1.0 / (extra + 1), n_users) - 1 if extra else np.zeros(n_users, dtype=np.int64)
    counts = np.minimum(min_ratings + more, n_items)

    rows: list[tuple[int, int, float, int]] = []  # user, item, score, time
    for u in range(n_users):
        items = rng.choice(n_items, size=int(counts[u]), replace=False, p=popularity)
        t = FIRST_TIMESTAMP + int(rng.integers(0, SPAN_SECONDS))
        for k, item in enumerate(items):
            if k:
                if rng.random() < 0.08:  # a new session: hours to weeks later
                    t += int(rng.integers(3_600, 21 * 86_400))
                elif rng.random() >= tie_share:  # the next rating on the page, seconds later
                    t += int(rng.integers(1, 90))
            affinity = float(taste[u] @ genres[item]) / max(int(genres[item].sum()), 1)
            score = quality[item] + leniency[u] + affinity + rng.normal(0.0, 0.7)
            rows.append((u + 1, int(item) + 1, score, t))

    # stars by score quantile, so the shares match ml-100k's
    scores = np.array([r[2] for r in rows])
    cuts = np.quantile(scores, np.cumsum(RATING_SHARES)[:-1])
    stars = (np.searchsorted(cuts, scores, side="right") + 1).astype(int)
    order = rng.permutation(len(rows))
    with open(folder / "u.data", "w", encoding="latin-1", newline="\n") as out:
        for j in order:
            user, item, _, t = rows[j]
            out.write(f"{user}\t{item}\t{stars[j]}\t{t}\n")

    with open(folder / "u.item", "w", encoding="latin-1", newline="\n") as out:
        for i in range(n_items):
            year = int(rng.integers(1930, 1998))
            title = f"{_ADJECTIVES[i % len(_ADJECTIVES)]} {_NOUNS[(i // len(_ADJECTIVES) + i) % len(_NOUNS)]}"
            if i >= len(_ADJECTIVES) * len(_NOUNS):
                title += f" {i // (len(_ADJECTIVES) * len(_NOUNS)) + 1}"
            date = f"{int(rng.integers(1, 29)):02d}-{_MONTHS[int(rng.integers(0, 12))]}-{year}"
            url = f"http://us.imdb.com/M/title-exact?{title.replace(' ', '%20')}%20({year})"
            flags = "|".join(str(int(f)) for f in genres[i])
            out.write(f"{i + 1}|{title} ({year})|{date}||{url}|{flags}\n")

    per_user_time = Counter((r[0], r[3]) for r in rows)
    tied = sum(n for n in per_user_time.values() if n > 1)
    rated = {r[1] for r in rows}
    return GroupLensSample(folder=folder, n_users=n_users, n_items=n_items, n_ratings=len(rows),
                           rating_counts={s: int((stars == s).sum()) for s in range(1, 6)}, tied_rows=tied,
                           unrated_items=n_items - len(rated))


__all__ = ["RATING_SHARES", "GroupLensSample", "write_grouplens_sample"]
