"""Source loaders register themselves: the registry, the kind check, and a new loader that is one module.

The extensibility test writes a loader module into a temporary folder that is part of the
``ingestion.loaders`` package path (exactly what dropping a file into ``ingestion/loaders/`` does) and
ingests from it through the real ``ingest_source`` / ``interaction_splits`` assets, with nothing else edited.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from pydantic import ValidationError

import ingestion.loaders as loaders
from config_schema import UnknownSettingError, from_mapping
from ingestion.errors import IngestionError
from ingestion.loaders import (
    SourceLoader,
    UnknownSourceKind,
    discover,
    loader_for,
    register_loader,
    registered_kinds,
    unregister_loader,
)
from ingestion.sources import SourceSpec, iter_interaction_chunks, iter_item_chunks, source_files

BUILT_IN = {"demo", "amazon2018", "amazon2023", "recbole", "movielens", "tabular"}
ROOT = Path(__file__).resolve().parents[1]


def test_every_built_in_format_is_registered_by_a_module_of_the_package() -> None:
    assert BUILT_IN <= set(registered_kinds())
    for kind in BUILT_IN:
        loader = loader_for(kind)
        assert isinstance(loader, SourceLoader) and loader.kind == kind
        assert type(loader).__module__.startswith("ingestion.loaders.")
        assert loader.summary and loader.suffixes and all(s.startswith(".") for s in loader.suffixes)
    # no central list: the package folder is the list
    modules = {p.stem for p in (ROOT / "ingestion" / "loaders").glob("*.py") if not p.stem.startswith("_")}
    assert {type(loader_for(k)).__module__.rsplit(".", 1)[-1] for k in registered_kinds()} <= modules


def test_unknown_kind_is_an_error_naming_the_registered_ones() -> None:
    with pytest.raises(UnknownSourceKind, match=r"unknown source kind 'csv'; registered: \[.*'amazon2018'.*'tabular'"):
        loader_for("csv")
    with pytest.raises(ValidationError, match=r"unknown source kind 'csv'; registered: .*'demo'.*'movielens'"):
        SourceSpec(kind="csv", path=".")


def test_source_spec_from_a_mapping_rejects_unknown_keys_by_name(tmp_path: Path) -> None:
    with pytest.raises(UnknownSettingError, match=r"\['typo'\].*allowed: \[.*'kind'.*'max_bad_lines'"):
        from_mapping(SourceSpec, {"kind": "amazon2018", "path": str(tmp_path), "typo": 1}, where="test")
    spec = from_mapping(SourceSpec, {"kind": "recbole", "path": str(tmp_path), "dataset": "Scientific"})
    assert (spec.kind, spec.dataset, spec.loader) == ("recbole", "Scientific", loader_for("recbole"))


def test_each_loader_checks_the_fields_it_needs() -> None:
    with pytest.raises(ValidationError, match="source kind 'amazon2018' needs `path`"):
        SourceSpec(kind="amazon2018")
    with pytest.raises(ValidationError, match=r"needs \['interactions_file', 'items_file'\]"):
        SourceSpec(kind="tabular", path=".")
    with pytest.raises(ValidationError, match="n_motivations must be <= 25"):
        SourceSpec(kind="demo", path=".", n_motivations=26)
    assert SourceSpec(kind="movielens", path=".").kind == "movielens"  # nothing else needed


def test_registration_refuses_clashes_bad_names_and_incomplete_loaders() -> None:
    class Clash(SourceLoader):
        kind = "recbole"

        def files(self, spec):
            return []

        def interactions(self, spec, chunk_rows):
            return iter(())

        def items(self, spec, chunk_rows):
            return iter(())

    with pytest.raises(ValueError, match=r"source kind 'recbole' is registered twice: by .*RecBoleLoader and .*Clash"):
        register_loader(Clash)
    assert type(loader_for("recbole")).__name__ == "RecBoleLoader"

    class BadName(Clash):
        kind = "Bad Name"

    with pytest.raises(ValueError, match="lower-case identifier"):
        register_loader(BadName)

    class Incomplete(SourceLoader):
        kind = "incomplete"

    with pytest.raises(TypeError, match="abstract"):
        register_loader(Incomplete)
    with pytest.raises(TypeError, match="not a SourceLoader"):
        register_loader(object())  # type: ignore[type-var]
    assert "incomplete" not in registered_kinds() and "bad name" not in registered_kinds()


# ---------------------------------------------------------------- a new loader is one module

NEW_LOADER = '''
"""JSON-lines events (``events.jsonl``: user, item, ts, stars) and a catalogue (``catalogue.jsonl``: item, title)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ingestion.errors import IngestionError
from ingestion.loaders import SourceLoader, register_loader
from ingestion.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, conform


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise IngestionError("file not found", path=str(path))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _chunks(frame: pd.DataFrame, schema: dict, chunk_rows: int):
    for start in range(0, len(frame), chunk_rows):
        yield conform(frame.iloc[start:start + chunk_rows], schema)


@register_loader
class JsonLinesEvents(SourceLoader):
    kind = "jsonl_events"
    summary = "`events.jsonl` + `catalogue.jsonl`"
    suffixes = (".jsonl",)

    def check(self, spec) -> None:
        super().check(spec)
        if spec.interaction_columns:
            raise ValueError("jsonl_events has fixed field names: no interaction_columns")

    def files(self, spec) -> list[Path]:
        paths = [Path(spec.path) / "events.jsonl", Path(spec.path) / "catalogue.jsonl"]
        for path in paths:
            _rows(path)
        return paths

    def interactions(self, spec, chunk_rows: int):
        rows = _rows(Path(spec.path) / "events.jsonl")
        frame = pd.DataFrame({"user_id": [r["user"] for r in rows], "item_id": [r["item"] for r in rows],
                              "timestamp": [r["ts"] for r in rows], "rating": [r.get("stars") for r in rows]})
        yield from _chunks(frame, INTERACTION_COLUMNS, chunk_rows)

    def items(self, spec, chunk_rows: int):
        rows = _rows(Path(spec.path) / "catalogue.jsonl")
        frame = pd.DataFrame({"item_id": [r["item"] for r in rows], "title": [r["title"] for r in rows],
                              "description": "", "categories": "", "brand": "", "image_url": None})
        yield from _chunks(frame, ITEM_COLUMNS, chunk_rows)
'''

N_USERS, N_ITEMS, PER_USER = 12, 8, 5


@pytest.fixture
def new_loader_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``jsonl_events.py`` in a folder on the ``ingestion.loaders`` package path; removed afterwards."""
    folder = tmp_path / "more_loaders"
    folder.mkdir()
    (folder / "jsonl_events.py").write_text(textwrap.dedent(NEW_LOADER))
    assert "jsonl_events" not in registered_kinds()  # not before the module is on the package path
    monkeypatch.setattr(loaders, "__path__", [*loaders.__path__, str(folder)])
    yield folder
    unregister_loader("jsonl_events")
    sys.modules.pop("ingestion.loaders.jsonl_events", None)


def _write_source(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    events = [f'{{"user": "u{u}", "item": "i{(u + k) % N_ITEMS}", "ts": {1_500_000_000 + 86_400 * k}, "stars": 4}}'
              for u in range(N_USERS) for k in range(PER_USER)]
    (folder / "events.jsonl").write_text("\n".join(events) + "\n")
    (folder / "catalogue.jsonl").write_text(
        "\n".join(f'{{"item": "i{i}", "title": "Thing {i}"}}' for i in range(N_ITEMS)) + "\n")


def test_a_new_loader_module_is_discovered_and_checked(new_loader_module: Path, tmp_path: Path) -> None:
    discover()
    assert "jsonl_events" in registered_kinds()
    source = tmp_path / "src"
    _write_source(source)
    spec = SourceSpec(kind="jsonl_events", path=str(source))
    assert [p.name for p in source_files(spec)] == ["events.jsonl", "catalogue.jsonl"]
    chunks = list(iter_interaction_chunks(spec, chunk_rows=7))
    assert max(len(c) for c in chunks) == 7 and sum(len(c) for c in chunks) == N_USERS * PER_USER
    assert sum(len(c) for c in iter_item_chunks(spec)) == N_ITEMS
    with pytest.raises(ValidationError, match="fixed field names"):
        SourceSpec(kind="jsonl_events", path=str(source), interaction_columns={"user_id": "u"})
    with pytest.raises(IngestionError, match="file not found"):
        source_files(SourceSpec(kind="jsonl_events", path=str(tmp_path / "empty")))


def test_a_new_loader_module_ingests_through_the_assets(new_loader_module: Path, digr_env: Path,
                                                        tmp_path: Path) -> None:
    from assets.ingestion import ingest_source, interaction_splits
    from digr_dagster.resources.warehouse import Warehouse

    source = tmp_path / "src"
    _write_source(source)
    # nothing imported the new module yet: the first lookup of its kind finds it
    config = {"ops": {"ingest_source": {"config": {"kind": "jsonl_events", "path": str(source)}},
                      "interaction_splits": {"config": {"k_core": 2}}}}
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([ingest_source, interaction_splits], instance=instance,
                                resources={"warehouse": Warehouse()}, run_config=config)
    assert result.success
    md = result.asset_materializations_for_node("ingest_source")[0].metadata
    assert md["source_kind"].value == "jsonl_events"
    assert [Path(f["path"]).name for f in md["source_files"].value] == ["events.jsonl", "catalogue.jsonl"]
    con = duckdb.connect(str(digr_env / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM raw_interactions").fetchall()[0][0] == N_USERS * PER_USER
        assert con.execute("SELECT count(*) FROM items").fetchall()[0][0] == N_ITEMS
        assert con.execute("SELECT count(DISTINCT user_id) FROM interaction_splits").fetchall()[0][0] == N_USERS
    finally:
        con.close()


def test_readme_lists_every_registered_kind_and_names_the_one_place() -> None:
    section = (ROOT / "README.md").read_text().split("## Point it at your own data", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z0-9_]+)`", section, flags=re.MULTILINE)) - {"kind"}  # the header
    assert documented == set(registered_kinds())
    assert "### Add your own loader" in section and "ingestion/loaders/" in section
