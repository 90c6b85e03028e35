"""Loaders for the Amazon Reviews 2018 and 2023 dumps (McAuley lab), streamed line by line.

2018: reviews ``<Cat>.json[.gz]`` (reviewerID, asin, overall, unixReviewTime) and metadata
``meta_<Cat>.json[.gz]`` (asin, title, description, category, brand, imageURL[HighRes]); some 2018
metadata files hold Python-literal lines (single quotes), read through ``ast.literal_eval``.
2023: reviews ``<Cat>.jsonl[.gz]`` (user_id, parent_asin, rating, timestamp in ms) and metadata
``meta_<Cat>.jsonl[.gz]`` (parent_asin, title, description, categories, store, main_category, images);
the item id is ``parent_asin``.
"""

from __future__ import annotations

import ast
import html
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ingestion.errors import IngestionError
from ingestion.schema import INTERACTION_COLUMNS, ITEM_COLUMNS
from ingestion.text_files import BadLineHandler, ChunkBuilder, handle_bad_line, iter_lines, require_rows

logger = logging.getLogger(__name__)

AmazonVersion = Literal["2018", "2023"]

AMAZON_SUFFIXES: dict[str, tuple[str, ...]] = {
    "2018": (".json.gz", ".json"),
    "2023": (".jsonl.gz", ".jsonl"),
}
_REVIEW_FIELDS = {
    "2018": ("reviewerID", "asin", "overall", "unixReviewTime"),
    "2023": ("user_id", "parent_asin", "rating", "timestamp"),
}
_WHITESPACE = re.compile(r"\s+")
_MAX_ABS_NUMBER = 2.0**62  # the fast path's bound; beyond it the checked path decides
_MIN_SECONDS, _MAX_SECONDS = -(2**63), 2**63 - 1  # the int64 timestamp column
_decode = json.JSONDecoder().decode  # skips json.loads' per-call type dispatch


@dataclass(frozen=True)
class AmazonFiles:
    """The two files of one Amazon category: reviews and item metadata."""

    reviews: Path
    meta: Path


def find_amazon_files(folder: Path, dataset: str | None, version: AmazonVersion) -> AmazonFiles:
    """Locate ``<dataset>`` reviews and ``meta_<dataset>`` files; auto-detect the category when unique."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestionError("source folder not found", path=str(folder))
    suffixes = AMAZON_SUFFIXES[version]
    if dataset is None:
        stems = sorted({_strip_suffix(p.name, suffixes) for p in folder.iterdir()
                        if _strip_suffix(p.name, suffixes) and not p.name.startswith("meta_")})
        candidates = [s for s in stems if _first_existing(folder, f"meta_{s}", suffixes) is not None]
        if len(candidates) != 1:
            found = ", ".join(candidates) if candidates else "none"
            raise IngestionError(
                f"cannot auto-detect the Amazon {version} category: candidates with reviews and meta_ "
                f"files ({'/'.join(suffixes)}): {found}; set `dataset`", path=str(folder))
        dataset = candidates[0]
    reviews = _first_existing(folder, dataset, suffixes)
    meta = _first_existing(folder, f"meta_{dataset}", suffixes)
    if reviews is None or meta is None:
        name = dataset if reviews is None else f"meta_{dataset}"
        raise IngestionError(f"missing Amazon {version} file {name}{suffixes[0]} (or {name}{suffixes[1]})",
                             path=str(folder))
    return AmazonFiles(reviews=reviews, meta=meta)


def _strip_suffix(name: str, suffixes: tuple[str, ...]) -> str | None:
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _first_existing(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


# One linear pass over the markup. html.parser.HTMLParser is not used: on CPython 3.11 it takes
# quadratic (or worse) time on unclosed markup, e.g. 30 KB of "<a " took 26 s, so one hostile
# description could stall an ingest for hours. Quoted attribute values may hold ">"; an unclosed
# comment or script runs to the end of the text and is dropped, an unclosed tag is kept as text.
_ATTRS = r"""(?:"[^"]*+"?|'[^']*+'?|[^'">]++)*+"""  # possessive: never backtracks
_HTML_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"
    rf"|<(script|style)\b{_ATTRS}>?.*?(?:</(?i:\1)\s*>|\Z)"
    rf"|<(/?)([A-Za-z][^\s/>]*){_ATTRS}>?"
    r"|<[!?][^>]*>?",
    re.DOTALL | re.IGNORECASE,
)
_BLOCK_TAGS = frozenset({"br", "p", "li", "div", "tr"})


def _html_token(match: re.Match[str]) -> str:
    if match.group(3) is None:
        return ""  # comment, script, style, declaration
    if not match.group(0).endswith(">"):
        return match.group(0)  # "a<b" at the very end is text, not a tag (as html.parser reads it)
    if not match.group(2) and match.group(3).lower() in _BLOCK_TAGS:
        return " "  # block starts separate words; closing tags and inline tags do not
    return ""


def strip_html(text: str) -> str:
    """Plain text of an HTML fragment: tags, scripts, styles dropped; entities decoded; spaces collapsed.

    Linear time in the length of ``text``, whatever the markup.
    """
    if "<" in text:
        text = _HTML_TOKEN.sub(_html_token, text)
    if "&" in text:
        text = html.unescape(text)
    return _WHITESPACE.sub(" ", text).strip()


_MAX_DEPTH_ERRORS = (RecursionError, MemoryError)


def _parse_record(line: str, line_no: int, path: Path, allow_python_literal: bool) -> dict[str, Any]:
    try:
        record = _decode(line)
    except (ValueError, *_MAX_DEPTH_ERRORS) as json_error:
        # ValueError covers JSONDecodeError and integers over Python's 4300-digit limit; deep nesting
        # raises RecursionError
        record = None
        if allow_python_literal:
            try:
                record = ast.literal_eval(line)
            except (ValueError, TypeError, SyntaxError, OverflowError, *_MAX_DEPTH_ERRORS):
                record = None  # TypeError: unhashable keys such as {[]: 1}
        if record is None:
            if isinstance(json_error, json.JSONDecodeError):
                reason = f"{json_error.msg} at char {json_error.pos}"
            else:
                reason = f"{type(json_error).__name__}: {str(json_error)[:120]}"
            raise IngestionError(f"not a JSON object ({reason})", path=str(path), line=line_no) from json_error
    if not isinstance(record, dict):
        raise IngestionError(f"expected a JSON object, got {type(record).__name__}",
                             path=str(path), line=line_no)
    return record


def _iter_records(path: Path, on_bad_line: BadLineHandler | None,
                  allow_python_literal: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in iter_lines(path, encoding="utf-8-sig"):  # tolerate a leading BOM
        if not line.strip():
            continue  # trailing blank lines are common in these dumps and carry no record
        try:
            yield line_no, _parse_record(line, line_no, path, allow_python_literal)
        except IngestionError as error:
            handle_bad_line(error, on_bad_line)


def _required(record: dict[str, Any], field: str, line_no: int, path: Path) -> Any:
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise IngestionError("missing required field", path=str(path), line=line_no, column=field)
    return value


def _number(value: Any, field: str, line_no: int, path: Path) -> float:
    if isinstance(value, bool):
        raise IngestionError(f"expected a number, got {value!r}", path=str(path), line=line_no, column=field)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise IngestionError(f"expected a number, got {value!r}", path=str(path), line=line_no,
                             column=field) from None
    if not math.isfinite(number):
        raise IngestionError(f"expected a finite number, got {value!r}", path=str(path), line=line_no,
                             column=field)
    return number


def _encodable(row: tuple[Any, ...], line_no: int, path: Path, on_bad_line: BadLineHandler | None) -> bool:
    """False (after ``on_bad_line``) when a text holds a lone surrogate, which JSON's \\udXXX escapes allow
    but UTF-8, and so the warehouse, cannot store."""
    for value in row:
        # isascii() is O(1) on CPython, so well-formed ASCII rows cost nothing here
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                handle_bad_line(IngestionError(f"text holds a lone UTF-16 surrogate ({exc.reason}: "
                                               f"{value[exc.start:exc.end]!r})", path=str(path), line=line_no),
                                on_bad_line)
                return False
    return True


def iter_amazon_interactions(path: Path, version: AmazonVersion, chunk_rows: int = 200_000,
                             on_bad_line: BadLineHandler | None = None) -> Iterator[pd.DataFrame]:
    """Stream a reviews file as canonical interaction chunks (2023 millisecond timestamps become seconds).

    A file without any valid record is an ``IngestionError``.
    """
    return require_rows(_amazon_interactions(path, version, chunk_rows, on_bad_line), path)


def _amazon_interactions(path: Path, version: AmazonVersion, chunk_rows: int,
                         on_bad_line: BadLineHandler | None) -> Iterator[pd.DataFrame]:
    user_f, item_f, rating_f, time_f = _REVIEW_FIELDS[version]
    divisor = 1000 if version == "2023" else 1
    builder = ChunkBuilder(INTERACTION_COLUMNS, chunk_rows)
    for line_no, record in _iter_records(path, on_bad_line, allow_python_literal=version == "2018"):
        # fast path for the well-formed common case (tens of millions of lines); anything unusual goes
        # through the checked path below, which converts or names the exact problem
        user, item = record.get(user_f), record.get(item_f)
        rating, stamp = record.get(rating_f), record.get(time_f)
        if not (type(user) is str and user and type(item) is str and item
                and type(rating) in (int, float) and type(stamp) in (int, float)
                and -_MAX_ABS_NUMBER < rating < _MAX_ABS_NUMBER and -_MAX_ABS_NUMBER < stamp < _MAX_ABS_NUMBER):
            try:
                user = str(_required(record, user_f, line_no, path))
                item = str(_required(record, item_f, line_no, path))
                rating = _number(_required(record, rating_f, line_no, path), rating_f, line_no, path)
                stamp = _number(_required(record, time_f, line_no, path), time_f, line_no, path)
            except IngestionError as error:
                handle_bad_line(error, on_bad_line)
                continue
        seconds = int(stamp // divisor)
        if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
            handle_bad_line(IngestionError(f"timestamp {stamp!r} is out of range", path=str(path), line=line_no,
                                           column=time_f), on_bad_line)
            continue
        row = (user, item, seconds, float(rating))
        if not _encodable(row, line_no, path, on_bad_line):
            continue
        chunk = builder.add(row)
        if chunk is not None:
            yield chunk
    chunk = builder.flush()
    if chunk is not None:
        yield chunk


def _text(value: Any) -> str:
    """A text field that may be a string, a list of strings, or missing."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(part for part in (strip_html(str(v)) for v in value if v is not None) if part)
    return strip_html(str(value))


def _category_path(value: Any) -> str:
    if not value:
        return ""
    if not isinstance(value, list | tuple):
        value = [value]  # a lone string, or a stray number / object in a hand-edited dump
    return " > ".join(part for part in (strip_html(str(v)) for v in value if v is not None) if part)


def _first_url(*candidates: Any) -> str | None:
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, list | tuple):
            for entry in value:
                if isinstance(entry, dict):
                    # 2023 images: prefer the largest rendition that exists
                    for key in ("hi_res", "large", "thumb"):
                        url = entry.get(key)
                        if isinstance(url, str) and url.strip():
                            return url.strip()
                elif isinstance(entry, str) and entry.strip():
                    return entry.strip()
    return None


def _item_row(record: dict[str, Any], version: AmazonVersion, line_no: int, path: Path) -> tuple[Any, ...]:
    if version == "2018":
        item = str(_required(record, "asin", line_no, path))
        categories = _category_path(record.get("category"))
        image = _first_url(record.get("imageURLHighRes"), record.get("imageURL"))
        brand = _text(record.get("brand"))
    else:
        item = str(_required(record, "parent_asin", line_no, path))
        # many 2023 records have empty `categories` but a `main_category`: better than nothing
        categories = _category_path(record.get("categories") or record.get("main_category"))
        image = _first_url(record.get("images"))
        brand = _text(record.get("store"))
    return item, _text(record.get("title")), _text(record.get("description")), categories, brand, image


def iter_amazon_items(path: Path, version: AmazonVersion, chunk_rows: int = 50_000,
                      on_bad_line: BadLineHandler | None = None) -> Iterator[pd.DataFrame]:
    """Stream a metadata file as canonical item chunks, HTML stripped, first occurrence of each id kept.

    The 2018 metadata dumps repeat some items verbatim; repeats are dropped and counted in the log.
    A file without any valid record is an ``IngestionError``.
    """
    return require_rows(_amazon_items(path, version, chunk_rows, on_bad_line), path)


def _amazon_items(path: Path, version: AmazonVersion, chunk_rows: int,
                  on_bad_line: BadLineHandler | None) -> Iterator[pd.DataFrame]:
    builder = ChunkBuilder(ITEM_COLUMNS, chunk_rows)
    seen: set[str] = set()
    duplicates = 0
    for line_no, record in _iter_records(path, on_bad_line, allow_python_literal=version == "2018"):
        try:
            row = _item_row(record, version, line_no, path)
        except IngestionError as error:
            handle_bad_line(error, on_bad_line)
            continue
        if not _encodable(row, line_no, path, on_bad_line):
            continue
        if row[0] in seen:
            duplicates += 1
            continue
        seen.add(row[0])
        chunk = builder.add(row)
        if chunk is not None:
            yield chunk
    chunk = builder.flush()
    if chunk is not None:
        yield chunk
    if duplicates:
        logger.info("%s: dropped %d repeated item records (first occurrence kept)", path, duplicates)
