"""MovieLens ml-100k, ml-1m and the CSV releases (ml-20m, ml-25m, ml-32m, ml-latest) to canonical frames.

ml-100k: ``u.data`` (user TAB item TAB rating TAB unix time) and ``u.item`` (pipe-separated, latin-1:
id | title | release date | video release date | IMDb URL | 19 genre flags in ``u.genre`` order).
ml-1m: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and ``movies.dat``
(``MovieID::Title::Genres`` with genres "A|B"), latin-1.
CSV releases ("ml-latest" here): ``ratings.csv`` (header ``userId,movieId,rating,timestamp``) and
``movies.csv`` (header ``movieId,title,genres``, titles quoted when they hold commas), UTF-8.

MovieLens genres are flat labels, not a path: ``categories`` is "Movies > " followed by the genres joined
with ", " (e.g. "Movies > Animation, Comedy"), or "Movies" when none; the placeholder genre "unknown"
and the CSV releases' "(no genres listed)" are dropped. Movies have no description, brand or image: "", "", <NA>.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from ingestion.errors import IngestionError
from ingestion.schema import INTERACTION_COLUMNS, ITEM_COLUMNS
from ingestion.text_files import BadLineBudget, ChunkBuilder, handle_bad_line, iter_lines, require_rows

MovieLensRelease = Literal["ml-100k", "ml-1m", "ml-latest"]
#: ml-100k and ml-1m are latin-1 (titles such as "Misérables"); the CSV releases are UTF-8
ENCODINGS: dict[str, str] = {"ml-100k": "latin-1", "ml-1m": "latin-1", "ml-latest": "utf-8"}
_CSV_HEADERS = {"ratings": "userId,movieId,rating,timestamp", "movies": "movieId,title,genres"}
ROOT_CATEGORY = "Movies"
_NO_GENRE = frozenset({"unknown", "(no genres listed)"})  # placeholders, not genres

#: ml-100k genre flag order (the contents of ``u.genre``)
ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


class BadLine(ValueError):
    """A malformed line; ``_parse_file`` adds the file and line number."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class MovieLensFiles:
    """The ratings and movies files of one MovieLens release."""

    release: MovieLensRelease
    ratings: Path
    movies: Path


def find_movielens_files(folder: Path) -> MovieLensFiles:
    """Detect the release in ``folder`` by its file names (``u.data``, ``ratings.dat`` or ``ratings.csv``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestionError("MovieLens source folder not found", path=str(folder))
    layouts: tuple[tuple[MovieLensRelease, str, str], ...] = (
        ("ml-100k", "u.data", "u.item"), ("ml-1m", "ratings.dat", "movies.dat"),
        ("ml-latest", "ratings.csv", "movies.csv"))
    for release, ratings_name, movies_name in layouts:
        if (folder / ratings_name).is_file():
            if not (folder / movies_name).is_file():
                raise IngestionError(f"{release} movies file {movies_name} not found", path=str(folder))
            return MovieLensFiles(release=release, ratings=folder / ratings_name, movies=folder / movies_name)
    raise IngestionError(
        f"no MovieLens ratings file (u.data, ratings.dat or ratings.csv); files present: "
        f"{sorted(p.name for p in folder.iterdir())}", path=str(folder))


def iter_movielens_interactions(files: MovieLensFiles, chunk_rows: int = 200_000,
                                max_bad_lines: int = 0) -> Iterator[pd.DataFrame]:
    """Stream canonical interaction chunks from ``u.data``, ``ratings.dat`` or ``ratings.csv``."""
    split = {"ml-100k": _splitter("\t"), "ml-1m": _splitter("::"), "ml-latest": _csv_fields}[files.release]
    header = _CSV_HEADERS["ratings"] if files.release == "ml-latest" else None
    yield from _parse_file(files.ratings, ENCODINGS[files.release], header, _rating_parser(split),
                           INTERACTION_COLUMNS, chunk_rows, max_bad_lines)


def iter_movielens_items(files: MovieLensFiles, chunk_rows: int = 50_000,
                         max_bad_lines: int = 0) -> Iterator[pd.DataFrame]:
    """Stream canonical item chunks from ``u.item``, ``movies.dat`` or ``movies.csv`` (genres -> categories)."""
    parse = {"ml-100k": _ml100k_movie, "ml-1m": _genre_list_parser(_splitter("::")),
             "ml-latest": _genre_list_parser(_csv_fields)}[files.release]
    header = _CSV_HEADERS["movies"] if files.release == "ml-latest" else None
    yield from _parse_file(files.movies, ENCODINGS[files.release], header, parse, ITEM_COLUMNS, chunk_rows,
                           max_bad_lines)


def genre_categories(genres: list[str]) -> str:
    """The categories string for a movie's genres (see the module docstring)."""
    kept = [g for g in genres if g and g not in _NO_GENRE]
    return f"{ROOT_CATEGORY} > {', '.join(kept)}" if kept else ROOT_CATEGORY


def _parse_file(path: Path, encoding: str, header: str | None, parse: Callable[[str], tuple],
                schema: dict[str, str], chunk_rows: int, max_bad_lines: int) -> Iterator[pd.DataFrame]:
    return require_rows(_parse_lines(path, encoding, header, parse, schema, chunk_rows, max_bad_lines), path)


def _parse_lines(path: Path, encoding: str, header: str | None, parse: Callable[[str], tuple],
                 schema: dict[str, str], chunk_rows: int, max_bad_lines: int) -> Iterator[pd.DataFrame]:
    on_bad_line = BadLineBudget(max_bad_lines) if max_bad_lines else None
    chunks = ChunkBuilder(schema, chunk_rows)
    expect_header = header is not None
    for line_no, line in iter_lines(path, encoding):
        if not line.strip():
            continue
        if expect_header:
            if line.strip().lstrip("\ufeff") != header:
                raise IngestionError(f"expected the header {header!r}, got {line[:80]!r}", path=str(path),
                                     line=line_no)
            expect_header = False
            continue
        try:
            row = parse(line)
        except BadLine as exc:
            handle_bad_line(IngestionError(str(exc), path=str(path), line=line_no, column=exc.column),
                            on_bad_line)
            continue
        if (chunk := chunks.add(row)) is not None:
            yield chunk
    if (chunk := chunks.flush()) is not None:
        yield chunk


def _splitter(sep: str) -> Callable[[str], list[str]]:
    return lambda line: line.split(sep)


def _csv_fields(line: str) -> list[str]:
    try:
        return next(csv.reader([line], strict=True))
    except csv.Error as exc:
        raise BadLine(f"malformed CSV line ({exc})") from None


def _rating_parser(split: Callable[[str], list[str]]) -> Callable[[str], tuple[str, str, int, float]]:
    def parse(line: str) -> tuple[str, str, int, float]:
        fields = split(line)
        if len(fields) != 4:
            raise BadLine(f"expected 4 fields (user, item, rating, time), got {len(fields)}")
        user, item, rating, timestamp = (f.strip() for f in fields)
        if not user or not item:
            raise BadLine("empty user or item id", column="user_id" if not user else "item_id")
        try:
            rating_value = float(rating)
        except ValueError:
            rating_value = math.nan
        if not math.isfinite(rating_value):
            raise BadLine(f"rating {rating!r} is not a number", column="rating")
        # isascii: str.isdigit() also accepts "²", which int() rejects; 18 digits always fit in int64
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp.lstrip("0")) <= 18):
            raise BadLine(f"timestamp {timestamp[:40]!r} is not a Unix time in seconds", column="timestamp")
        return user, item, int(timestamp), rating_value
    return parse


def _ml100k_movie(line: str) -> tuple[str, str, str, str, str, None]:
    fields = line.split("|")
    if len(fields) != 5 + len(ML100K_GENRES):
        raise BadLine(f"expected {5 + len(ML100K_GENRES)} '|'-separated fields, got {len(fields)}")
    flags = fields[5:]
    if any(f not in ("0", "1") for f in flags):
        raise BadLine("genre flags must be 0 or 1", column="genres")
    item_id, title = fields[0].strip(), fields[1].strip()
    if not item_id:
        raise BadLine("empty movie id", column="item_id")
    genres = [g for g, flag in zip(ML100K_GENRES, flags, strict=True) if flag == "1"]
    return item_id, title, "", genre_categories(genres), "", None


def _genre_list_parser(split: Callable[[str], list[str]]) -> Callable[[str], tuple[str, str, str, str, str, None]]:
    def parse(line: str) -> tuple[str, str, str, str, str, None]:
        fields = split(line)
        if len(fields) != 3:
            raise BadLine(f"expected 3 fields (id, title, genres), got {len(fields)}")
        item_id, title, genres = (f.strip() for f in fields)
        if not item_id:
            raise BadLine("empty movie id", column="item_id")
        return item_id, title, "", genre_categories(genres.split("|")), "", None
    return parse
