"""Source loaders register themselves: one module of this package per source format.

A loader is a :class:`SourceLoader` subclass decorated with :func:`register_loader` in any module of this
package. :func:`discover` imports every module here (``pkgutil`` over the package's ``__path__``; names
starting with ``_`` are skipped), so adding a format is one new module plus its tests, with no list to edit:
the ``kind`` of a source spec, the kinds the launchpad describes and the files the new-files sensor watches
all come from this registry.

Loader modules import from this package and the format parsers; they must not import
``ingestion.sources`` at module level (it imports this package), only under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

import pandas as pd

from ingestion.text_files import BadLineBudget, BadLineHandler

if TYPE_CHECKING:
    from ingestion.sources import SourceSpec

_KIND = re.compile(r"[a-z][a-z0-9_]*\Z")


class UnknownSourceKind(ValueError):
    """A source spec named a kind no loader registered."""


class SourceLoader(ABC):
    """Reads one source format: lists its files, streams canonical interaction and item chunks.

    Subclasses set ``kind`` (the name in run config), ``summary`` (what it reads in ``path``, one line for
    the docs) and ``suffixes`` (file name endings the new-files sensor watches for this kind), and override
    :meth:`check` to validate the :class:`~ingestion.sources.SourceSpec` fields they need.
    """

    kind: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()

    def check(self, spec: SourceSpec) -> None:
        """Raise ``ValueError`` naming what the spec lacks for this loader (runs when a spec is built)."""
        if not spec.path:
            raise ValueError(f"source kind {self.kind!r} needs `path`: the folder with its files")
        if spec.min_rating is not None and self.has_ratings(spec) is False:
            raise no_ratings_error(spec, "its rows carry no rating")

    def has_ratings(self, spec: SourceSpec) -> bool | None:
        """Whether this source's interactions carry explicit ratings, from the spec alone (no file reads):
        ``None`` when only the files can tell; ``iter_interaction_chunks`` then refuses a ``min_rating``
        once it has read a source without any rated row."""
        return None

    @abstractmethod
    def files(self, spec: SourceSpec) -> list[Path]:
        """The files this source reads (for lineage and change detection); missing ones are an error."""

    @abstractmethod
    def interactions(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """Canonical interaction frames (``ingestion.schema.INTERACTION_COLUMNS``), at most ``chunk_rows`` each."""

    @abstractmethod
    def items(self, spec: SourceSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """Canonical item frames (``ingestion.schema.ITEM_COLUMNS``), at most ``chunk_rows`` each."""


_LOADERS: dict[str, SourceLoader] = {}
_LOCK = threading.RLock()
_L = TypeVar("_L", type[SourceLoader], SourceLoader)


def register_loader(loader: _L) -> _L:
    """Register a loader class (instantiated without arguments) or instance under its ``kind``.

    Used as a class decorator in the loader's module. A kind claimed by another loader class is an error
    (re-importing the same module replaces its own entry).
    """
    if not (isinstance(loader, SourceLoader) or (isinstance(loader, type) and issubclass(loader, SourceLoader))):
        raise TypeError(f"{loader!r} is not a SourceLoader")
    instance = loader() if isinstance(loader, type) else loader
    kind = instance.kind
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"{type(instance).__qualname__}.kind must be a lower-case identifier, got {kind!r}")
    with _LOCK:
        current = _LOADERS.get(kind)
        if current is not None and _qualname(current) != _qualname(instance):
            raise ValueError(f"source kind {kind!r} is registered twice: by {_qualname(current)} "
                             f"and {_qualname(instance)}")
        _LOADERS[kind] = instance
    return loader


def unregister_loader(kind: str) -> None:
    """Remove a registered kind (tests and plug-ins that replace a loader)."""
    with _LOCK:
        _LOADERS.pop(kind, None)


def discover() -> None:
    """Import every module of this package not imported yet; each registers its loaders on import.

    A module that fails to import is an error here (a broken loader is never silently missing)."""
    with _LOCK:
        for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
            short = info.name.rsplit(".", 1)[-1]
            if not short.startswith("_") and info.name not in sys.modules:
                importlib.import_module(info.name)


def registered_kinds() -> tuple[str, ...]:
    """Every registered source kind, sorted."""
    discover()
    return tuple(sorted(_LOADERS))


def loader_for(kind: str) -> SourceLoader:
    """The loader registered for ``kind``; an unknown kind is an error naming the registered ones."""
    loader = _LOADERS.get(kind)
    if loader is None:
        discover()  # a module added since the last look
        loader = _LOADERS.get(kind)
    if loader is None:
        raise UnknownSourceKind(f"unknown source kind {kind!r}; registered: {list(registered_kinds())}")
    return loader


def bad_line_handler(spec: SourceSpec) -> BadLineHandler | None:
    """The skip budget ``spec.max_bad_lines`` asks for (None: fail on the first malformed line)."""
    return BadLineBudget(spec.max_bad_lines) if spec.max_bad_lines else None


def no_ratings_error(spec: SourceSpec, why: str) -> ValueError:
    """The error for a ``min_rating`` set on a source without ratings (names the setting)."""
    return ValueError(f"`min_rating` = {spec.min_rating:g} filters on ratings, but this {spec.kind!r} source "
                      f"has none ({why}); leave min_rating unset (None) for implicit feedback")


def _qualname(loader: SourceLoader) -> str:
    cls = type(loader)
    return f"{cls.__module__}.{cls.__qualname__}"


__all__ = ["SourceLoader", "UnknownSourceKind", "bad_line_handler", "discover", "loader_for", "no_ratings_error",
           "register_loader", "registered_kinds", "unregister_loader"]
