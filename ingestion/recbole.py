"""RecBole atomic files back to canonical frames: the UniSRec layout (already split) and the plain one.

UniSRec layout, for a dataset stem ``X``: ``X.text`` (``item_id:token``, ``text:token_seq`` = "title. categories.
brand. "), ``X.item2index`` and ``X.user2index`` (original id TAB integer index, no header) and
``X.train.inter`` / ``X.valid.inter`` / ``X.test.inter`` (``user_id:token``, ``item_id_list:token_seq``
= space-separated history of item indexes, ``item_id:token`` = next item index).

Interactions: each user's whole sequence, rebuilt from every row of every split file present. The files
are written the way UniSRec's preprocessing writes them: for a user with the sequence ``s`` (``n`` items),
the test row is ``s[-1]`` after the history ``s[:-1]``, the valid row ``s[-2]`` after ``s[:-2]`` and the
train rows ``s[j]`` after ``s[:j]`` for every ``j`` from ``n - 3`` down to 1 (latest first), each history
cut to its last ``cap`` items (50 in the published data; ``cap`` is taken as the longest history in the
files). The test row alone is therefore not enough: a user with more than ``cap + 1`` interactions has
lost their first ones there (on Scientific 43 interactions of 3 users), and only the train rows still
hold them. Rebuilding: the train rows whose history is under the cap, shortest first (each names the
item after its whole history), then the capped train rows, each the one whose history is the last
``cap`` items rebuilt so far (where two such rows differ, the one the file lists later, as the
published files list a user's rows latest first), then the valid row, then the test row. Every row must
continue the sequence rebuilt before it (its history is all of it, or its last ``cap`` items when
capped); a row that does not, or a second valid/test row of a user, is an ``IngestionError`` naming its
file and line. A user with only some of the files' rows gets what those rows hold (with only a test
row: its history and item). Users come in the order they first appear in the test, valid, train files.

These files carry no time, so the timestamp is synthetic and only keeps the order:
``SYNTHETIC_EPOCH + position * SYNTHETIC_STEP`` (position 0-based within the user's sequence; one day
apart). Timestamps never tie within a user, so the published order is the order (the split's source-order
tie-break never applies) and a repeated item is a separate interaction. Ratings are NaN (implicit
feedback).

Items: the text is "title. categories. brand. " with fields missing at will, so it cannot be split
reliably. Heuristic: the title is the text before the first ". " and the description is the rest of the
text (categories and brand words included), so ``title + ". " + description`` restores the text;
``categories`` and ``brand`` stay empty and ``image_url`` is <NA>.

Plain RecBole layout: one ``X.inter`` (header ``user_id:token item_id:token [rating:float]
[timestamp:float]``, raw ids) and ``X.item`` (``item_id:token`` plus any of the title fields
``title``/``movie_title``/``item_name``/``name``/``book_title``, ``description``, the category fields
``categories``/``category``/``genre``/``class`` and ``brand``; values taken as written, whitespace
collapsed). Without a timestamp column a user's interactions get synthetic times in file order, as above;
without a rating column ratings are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ingestion.errors import IngestionError
from ingestion.schema import INTERACTION_COLUMNS, ITEM_COLUMNS
from ingestion.text_files import ChunkBuilder, iter_lines, require_rows

SYNTHETIC_EPOCH = 1_000_000_000  # 2001-09-09: an obviously synthetic origin
SYNTHETIC_STEP = 86_400  # one day between consecutive interactions of a user

_MIN_INT64, _MAX_INT64 = -(2**63), 2**63 - 1  # the timestamp column's range
_SPLITS = ("test", "valid", "train")  # preference order when rebuilding a user's sequence


_TITLE_FIELDS = ("title", "movie_title", "item_name", "name", "book_title")
_CATEGORY_FIELDS = ("categories", "category", "genre", "class")


@dataclass(frozen=True)
class RecBoleFiles:
    """The files of one dataset. ``inter`` maps "test"/"valid"/"train" to the UniSRec split files present,
    or "all" to the single ``<dataset>.inter`` of the plain layout."""

    inter: dict[str, Path]
    text: Path | None = None
    item: Path | None = None
    item2index: Path | None = None
    user2index: Path | None = None

    def all(self) -> list[Path]:
        """Every file the loader reads, in a stable order."""
        named = (self.text, self.item, self.item2index, self.user2index)
        return [p for p in named if p is not None] + list(self.inter.values())


def find_recbole_files(folder: Path, dataset: str | None) -> RecBoleFiles:
    """Locate a dataset's files; the stem is auto-detected when the folder holds exactly one dataset.

    Split ``<dataset>.{test,valid,train}.inter`` files select the UniSRec layout (which needs ``.text``,
    ``.item2index`` and ``.user2index``); a single ``<dataset>.inter`` selects the plain layout (which needs
    ``.item``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestionError("RecBole source folder not found", path=str(folder))
    if dataset is None:
        stems = sorted({_stem(p.name) for p in folder.iterdir() if _stem(p.name)})
        if len(stems) != 1:
            what = "no" if not stems else f"several ({stems})"
            raise IngestionError(f"{what} RecBole datasets (<dataset>.text/.item/.inter); set `dataset`",
                                 path=str(folder))
        dataset = stems[0]
    splits = {s: p for s in _SPLITS if (p := folder / f"{dataset}.{s}.inter").is_file()}
    if splits:
        required = {name: folder / f"{dataset}.{name}" for name in ("text", "item2index", "user2index")}
        missing = [p.name for p in required.values() if not p.is_file()]
        if not missing:
            return RecBoleFiles(inter=splits, text=required["text"], item2index=required["item2index"],
                                user2index=required["user2index"])
    elif (folder / f"{dataset}.inter").is_file():
        item = folder / f"{dataset}.item"
        if item.is_file():
            return RecBoleFiles(inter={"all": folder / f"{dataset}.inter"}, item=item)
        missing = [item.name]
    else:
        missing = [f"{dataset}.inter or {dataset}.{{test,valid,train}}.inter"]
    raise IngestionError(f"RecBole dataset {dataset!r} is missing files {missing}", path=str(folder))


def iter_recbole_interactions(files: RecBoleFiles, chunk_rows: int = 200_000) -> Iterator[pd.DataFrame]:
    """Stream canonical interactions (UniSRec: one full sequence per user; see the module docstring)."""
    rows = _iter_plain_interactions(files.inter["all"]) if "all" in files.inter else _iter_split_interactions(files)
    # an empty result names the interactions file (the test split's, in the UniSRec layout)
    yield from require_rows(_chunked(rows, INTERACTION_COLUMNS, chunk_rows), next(iter(files.inter.values())))


def recbole_has_ratings(files: RecBoleFiles) -> bool:
    """Whether the interactions carry ratings: the plain layout's header has a ``rating`` column (UniSRec: never)."""
    if "all" not in files.inter:
        return False
    path = files.inter["all"]
    return "rating" in _header(path, _non_blank(path), ("user_id", "item_id"), optional=("rating",))


def iter_recbole_items(files: RecBoleFiles, chunk_rows: int = 50_000) -> Iterator[pd.DataFrame]:
    """Stream canonical items from ``<dataset>.item``, else ``<dataset>.text`` (see the module docstring)."""
    source = files.item if files.item is not None else files.text
    if source is None:
        raise IngestionError("RecBole dataset has neither a .item nor a .text file")
    rows = _iter_plain_items(source) if source == files.item else _iter_text_items(source)
    yield from require_rows(_chunked(rows, ITEM_COLUMNS, chunk_rows), source)


def _stem(name: str) -> str | None:
    for suffix in (".test.inter", ".valid.inter", ".train.inter", ".inter", ".text", ".item"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _iter_plain_interactions(path: Path) -> Iterator[tuple[str, str, int, float]]:
    lines = _non_blank(path)
    header = _header(path, lines, ("user_id", "item_id"), optional=("rating", "timestamp"))
    positions: dict[str, int] = {}  # per-user count, for synthetic times when there is no timestamp
    for line_no, fields in _fields(path, lines, header):
        user, item = fields[header["user_id"]].strip(), fields[header["item_id"]].strip()
        if not user or not item:
            column = "user_id" if not user else "item_id"
            raise IngestionError("empty id", path=str(path), line=line_no, column=column)
        rating = _number(fields, header, "rating", path, line_no) if "rating" in header else math.nan
        if "timestamp" in header:
            timestamp = int(_number(fields, header, "timestamp", path, line_no))
            if not _MIN_INT64 <= timestamp <= _MAX_INT64:
                raise IngestionError(f"timestamp {fields[header['timestamp']].strip()!r} is out of range",
                                     path=str(path), line=line_no, column="timestamp")
        else:
            position = positions[user] = positions.get(user, -1) + 1
            timestamp = SYNTHETIC_EPOCH + position * SYNTHETIC_STEP
        yield user, item, timestamp, rating


def _iter_plain_items(path: Path) -> Iterator[tuple[str, str, str, str, str, None]]:
    lines = _non_blank(path)
    header = _header(path, lines, ("item_id",), optional=(*_TITLE_FIELDS, "description", *_CATEGORY_FIELDS,
                                                           "brand"))
    title = next((header[f] for f in _TITLE_FIELDS if f in header), None)
    category = next((header[f] for f in _CATEGORY_FIELDS if f in header), None)
    description, brand = header.get("description"), header.get("brand")
    for line_no, fields in _fields(path, lines, header):
        item_id = fields[header["item_id"]].strip()
        if not item_id:
            raise IngestionError("empty item id", path=str(path), line=line_no, column="item_id")
        yield (item_id, _cell(fields, title), _cell(fields, description), _cell(fields, category),
               _cell(fields, brand), None)


def _cell(fields: list[str], index: int | None) -> str:
    """The whitespace-collapsed value at ``index``; "" for a column the file does not have."""
    return " ".join(fields[index].split()) if index is not None else ""


def _number(fields: list[str], header: dict[str, int], name: str, path: Path, line_no: int) -> float:
    raw = fields[header[name]].strip()
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise IngestionError(f"{name} {raw!r} is not a number", path=str(path), line=line_no, column=name)
    return value


def _iter_text_items(path: Path) -> Iterator[tuple[str, str, str, str, str, None]]:
    lines = _non_blank(path)
    header = _header(path, lines, ("item_id", "text"))
    for line_no, fields in _fields(path, lines, header):
        item_id = fields[header["item_id"]].strip()
        if not item_id:
            raise IngestionError("empty item id", path=str(path), line=line_no, column="item_id")
        text = " ".join(fields[header["text"]].split())
        title, _, rest = text.partition(". ")
        yield item_id, title.strip(), rest.strip(), "", "", None


@dataclass(frozen=True, slots=True)
class _Row:
    """One row of a UniSRec split file: ``target`` follows ``history`` (both mapped back to original ids)."""

    history: list[str]
    target: str
    path: Path
    line: int


def _iter_split_interactions(files: RecBoleFiles) -> Iterator[tuple[str, str, int, float]]:
    if files.item2index is None or files.user2index is None:
        raise IngestionError("the UniSRec layout needs <dataset>.item2index and <dataset>.user2index")
    items = _read_index(files.item2index)
    users = _read_index(files.user2index)
    rows: dict[str, dict[str, list[_Row]]] = {}  # user -> split -> rows; users in order of first appearance
    cap = 0  # the history cap: the longest history in the files
    for split in ("test", "valid", "train"):
        if split not in files.inter:
            continue
        for user, row in _iter_rows(files.inter[split], users, items):
            of_user = rows.setdefault(user, {})
            if split != "train" and split in of_user:
                raise IngestionError(f"user {user!r} has a second row in the {split} split (the first is line "
                                     f"{of_user[split][0].line})", path=str(row.path), line=row.line,
                                     column="user_id")
            of_user.setdefault(split, []).append(row)
            cap = max(cap, len(row.history))
    for user, of_user in rows.items():
        yield from _timed(user, _rebuild(user, of_user, cap))


def _rebuild(user: str, of_user: dict[str, list[_Row]], cap: int) -> list[str]:
    """The user's whole sequence from their rows (the order is in the module docstring)."""
    sequence: list[str] = []
    train = of_user.get("train", [])
    for row in sorted((r for r in train if len(r.history) < cap), key=lambda r: len(r.history)):
        _extend(sequence, row, cap, user)
    # capped rows are windows of the sequence; each continues the one before it
    waiting: dict[tuple[str, ...], list[_Row]] = {}
    for row in (r for r in train if len(r.history) >= cap):
        waiting.setdefault(tuple(row.history), []).append(row)  # file order: latest first
    for _ in range(sum(map(len, waiting.values()))):
        candidates = waiting.get(tuple(_last(sequence, cap))) if sequence else None
        if not candidates:  # none continues (or nothing to continue): the one the file lists last is next
            candidates = max((rs for rs in waiting.values() if rs), key=lambda rs: rs[-1].line)
        _extend(sequence, candidates.pop(), cap, user)
    for row in (*of_user.get("valid", ()), *of_user.get("test", ())):
        _extend(sequence, row, cap, user)
    return sequence


def _extend(sequence: list[str], row: _Row, cap: int, user: str) -> None:
    """Append the row's target; its history must be the whole sequence so far, or its last ``cap`` items."""
    if not sequence:
        sequence.extend(row.history)
    elif row.history != (sequence if len(row.history) < cap else _last(sequence, cap)):
        raise IngestionError(
            f"user {user!r}: the history does not continue the sequence rebuilt from the user's other rows "
            f"({len(sequence)} items, ending {' '.join(sequence[-3:])}); it has {len(row.history)} items, "
            f"ending {' '.join(row.history[-3:])}, but must be all of them (or the last {cap} when capped)",
            path=str(row.path), line=row.line, column="item_id_list")
    sequence.append(row.target)


def _last(sequence: list[str], n: int) -> list[str]:
    return sequence[max(len(sequence) - n, 0):]  # (sequence[-0:] would be all of it)


def _timed(user: str, sequence: list[str]) -> Iterator[tuple[str, str, int, float]]:
    for position, item in enumerate(sequence):
        yield user, item, SYNTHETIC_EPOCH + position * SYNTHETIC_STEP, math.nan


def _iter_rows(path: Path, users: dict[str, str], items: dict[str, str]) -> Iterator[tuple[str, _Row]]:
    """``(user_id, row)`` per line of a split file, ids mapped back to the original ones."""
    lines = _non_blank(path)
    header = _header(path, lines, ("user_id", "item_id_list", "item_id"))
    for line_no, fields in _fields(path, lines, header):
        user = _lookup(users, fields[header["user_id"]].strip(), path, line_no, "user_id")
        history = [_lookup(items, token, path, line_no, "item_id_list")
                   for token in fields[header["item_id_list"]].split()]
        target = _lookup(items, fields[header["item_id"]].strip(), path, line_no, "item_id")
        yield user, _Row(history, target, path, line_no)


def _lookup(index: dict[str, str], token: str, path: Path, line_no: int, column: str) -> str:
    try:
        return index[token]
    except KeyError:
        raise IngestionError(f"index {token!r} is not in the {column.split('_')[0]}2index file",
                             path=str(path), line=line_no, column=column) from None


def _read_index(path: Path) -> dict[str, str]:
    """``index -> original id`` from an ``<id> TAB <index>`` file."""
    index: dict[str, str] = {}
    for line_no, line in _non_blank(path):
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 2 or not fields[0] or not fields[1].isdigit():
            raise IngestionError("expected '<original id> TAB <integer index>'", path=str(path), line=line_no)
        original, key = fields
        if index.setdefault(key, original) != original:
            raise IngestionError(f"index {key} is given to both {index[key]!r} and {original!r}",
                                 path=str(path), line=line_no)
    return index


def _non_blank(path: Path) -> Iterator[tuple[int, str]]:
    return ((n, line) for n, line in iter_lines(path) if line.strip())


def _header(path: Path, lines: Iterator[tuple[int, str]], wanted: tuple[str, ...],
            optional: tuple[str, ...] = ()) -> dict[str, int]:
    """Positions of the ``wanted`` (required) and present ``optional`` columns in a RecBole header line
    (``name:type`` TAB ...)."""
    first = next(lines, None)
    if first is None:
        raise IngestionError("empty file; expected a header line", path=str(path), line=1)
    line_no, line = first
    names = [field.split(":", 1)[0].strip() for field in line.split("\t")]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise IngestionError(f"header lacks columns {missing}; it has {names}", path=str(path), line=line_no)
    return {w: names.index(w) for w in (*wanted, *optional) if w in names}


def _fields(path: Path, lines: Iterator[tuple[int, str]],
            header: dict[str, int]) -> Iterator[tuple[int, list[str]]]:
    width = max(header.values()) + 1
    for line_no, line in lines:
        fields = line.split("\t")
        if len(fields) < width:
            raise IngestionError(f"expected {width} tab-separated fields, got {len(fields)}",
                                 path=str(path), line=line_no)
        yield line_no, fields


def _chunked(rows: Iterator[tuple], schema: dict[str, str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    chunks = ChunkBuilder(schema, chunk_rows)
    for row in rows:
        if (chunk := chunks.add(row)) is not None:
            yield chunk
    if (chunk := chunks.flush()) is not None:
        yield chunk
