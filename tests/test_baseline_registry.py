"""The baseline registry: baselines register themselves, a new one is one module, settings and ranks travel."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

import evaluation.baselines as baselines_pkg
from config_schema import UnknownSettingError
from evaluation.baselines import (
    Baseline,
    BaselineError,
    BaselineInputs,
    BaselineResult,
    get_baseline,
    metrics_from_ranks,
    register,
    registered_baselines,
    unregister,
    user_ranks,
)
from evaluation.baselines import registry as registry_mod
from evaluation.sasrec import SASRecConfig, load_sasrec, rank_split
from metrics.ranking import evaluate_rankings
from tests import helpers
from tests.helpers import loo_frame as frame


def cycle_splits(n_items: int = 9, n_users: int = 18, length: int = 7) -> pd.DataFrame:
    return helpers.cycle_splits(n_items, n_users, length)


def inputs(**kw) -> BaselineInputs:
    splits = kw.pop("splits", None)
    splits = cycle_splits() if splits is None else splits
    item_ids = sorted(splits["item_id"].unique())
    return BaselineInputs(splits, item_ids, **{"max_history": 6, **kw})


@pytest.fixture
def isolated_registry(monkeypatch):
    """A copy of the registry (built-ins included) that the test may change; restored afterwards."""
    registered_baselines()
    monkeypatch.setattr(registry_mod, "_REGISTRY", dict(registry_mod._REGISTRY))
    return registry_mod._REGISTRY


def test_builtin_baselines_are_discovered_in_report_order():
    found = registered_baselines()
    assert list(found)[:2] == ["popularity", "sasrec"]
    assert [found[k].name for k in ("popularity", "sasrec")] == ["most-popular", "SASRec"]
    assert found["sasrec"].settings is SASRecConfig
    assert found["sasrec"].module == "evaluation.baselines.sasrec"
    assert get_baseline("popularity") is found["popularity"]
    with pytest.raises(BaselineError, match="unknown baseline 'nope'; registered: \\['popularity', 'sasrec'"):
        get_baseline("nope")


def test_sasrec_history_cap_seed_and_accelerator_come_from_the_inputs_only():
    sasrec = get_baseline("sasrec")
    names = [f.name for f in sasrec.configurable_fields()]
    assert "max_len" not in names and "seed" not in names and "accelerator" not in names
    assert {"hidden", "max_epochs", "patience", "lr"} <= set(names)
    # configuring a decided field is an error that says where it comes from
    with pytest.raises(UnknownSettingError, match="\\['max_len'\\] cannot be configured.*max_len <- max_history"):
        sasrec.settings_from({"max_len": 50})
    with pytest.raises(UnknownSettingError, match="unknown key\\(s\\) \\['hiden'\\] in baseline 'sasrec' settings"):
        sasrec.settings_from({"hiden": 8})
    # the inputs decide them, from a mapping and over a settings object alike
    inp = inputs(max_history=4, seed=7)
    resolved = sasrec.resolve(inp, {"hidden": 16})
    assert (resolved.hidden, resolved.max_len, resolved.seed, resolved.accelerator) == (16, 4, 7, "cpu")
    resolved = sasrec.resolve(inp, SASRecConfig(max_len=99, seed=1, hidden=32))
    assert (resolved.hidden, resolved.max_len, resolved.seed) == (32, 4, 7)
    with pytest.raises(BaselineError, match="must be a SASRecConfig or a mapping"):
        sasrec.resolve(inp, 3)


TOY_MODULE = '''
"""A toy baseline: the catalogue in order, shifted by a configurable offset."""
from dataclasses import dataclass, field

import numpy as np

from evaluation.baselines import Baseline, BaselineInputs, BaselineResult, register
from evaluation.baselines.registry import EVAL_SPLITS, split_result
from training.sequence_data import build_samples


@dataclass(frozen=True)
class CatalogueOrderSettings:
    offset: int = field(default=0, metadata={"description": "items skipped at the start of the catalogue"})
    seed: int = 0


def run(inputs: BaselineInputs, settings: CatalogueOrderSettings) -> BaselineResult:
    samples = build_samples(inputs.interaction_splits, max_history=inputs.max_history)
    index = inputs.item_index()
    top = np.roll(np.arange(len(inputs.item_ids)), -settings.offset)[: inputs.cutoff]
    metrics, ranks, users = {}, {}, {}
    for split in EVAL_SPLITS:
        targets = np.asarray([index[s.target] for s in samples[split]])
        metrics[split], ranks[split] = split_result(np.tile(top, (len(targets), 1)), targets, inputs)
        users[split] = [s.user_id for s in samples[split]]
    return BaselineResult(metrics, ranks, users, inputs.cutoff,
                          info={"seed": settings.seed, "dir": str(inputs.checkpoint_dir)})


register(Baseline(key="catalogue_order", name="catalogue order", settings=CatalogueOrderSettings, run=run,
                  from_inputs={"seed": "seed"}))
'''


def test_a_new_baseline_is_one_module_dropped_into_the_package(tmp_path, monkeypatch, isolated_registry):
    # the package's search path gains a folder holding one new module, as if it were added to evaluation/baselines/
    extra = tmp_path / "more_baselines"
    extra.mkdir()
    (extra / "catalogue_order.py").write_text(textwrap.dedent(TOY_MODULE))
    (extra / "_helper.py").write_text("raise AssertionError('private modules are not imported')\n")
    monkeypatch.setattr(baselines_pkg, "__path__", [*baselines_pkg.__path__, str(extra)])
    name = "evaluation.baselines.catalogue_order"
    try:
        found = registered_baselines()
        assert list(found) == ["popularity", "sasrec", "catalogue_order"]  # order 100 by default: after built-ins
        toy = found["catalogue_order"]
        assert toy.module == name and [f.name for f in toy.configurable_fields()] == ["offset"]
        splits = frame({"u1": ["a", "b", "c", "d"], "u2": ["b", "c", "d", "a"], "u3": ["c", "a", "b", "c"]})
        result = toy.evaluate(inputs(splits=splits, seed=5, ks=(1, 2), checkpoint_dir=tmp_path / "ck"), {"offset": 1})
        # catalogue [a, b, c, d], offset 1: ranking [b, c]; valid targets c, d, b; test targets d, a, c
        assert result.ranks["valid"].tolist() == [2, 0, 1] and result.ranks["test"].tolist() == [0, 0, 2]
        assert result.metrics["valid"]["hr@2"] == pytest.approx(2 / 3)
        assert result.info == {"seed": 5, "dir": str(tmp_path / "ck" / "catalogue_order")}
        with pytest.raises(UnknownSettingError, match="\\['seed'\\] cannot be configured"):
            toy.evaluate(inputs(), {"seed": 1})
    finally:
        sys.modules.pop(name, None)


def test_register_api_and_its_errors(isolated_registry):
    @dataclass
    class NoSettings:
        pass

    def run(inp, settings):
        raise AssertionError("not called")

    b = register(Baseline(key="plugin", name="a plugin", settings=NoSettings, run=run, order=15))
    assert b.module == __name__
    assert list(registered_baselines()) == ["popularity", "plugin", "sasrec"]
    register(Baseline(key="plugin", name="again", settings=NoSettings, run=run))  # same module: replaces
    assert registered_baselines()["plugin"].name == "again"
    with pytest.raises(BaselineError, match="'popularity' is already registered by evaluation.baselines.popularity"):
        register(Baseline(key="popularity", name="mine", settings=NoSettings, run=run))
    unregister("plugin")
    assert "plugin" not in registered_baselines()
    with pytest.raises(BaselineError, match="no baseline 'plugin'"):
        unregister("plugin")
    with pytest.raises(BaselineError, match="from_inputs names 'max_len', not a field of NoSettings"):
        Baseline(key="x", name="x", settings=NoSettings, run=run, from_inputs={"max_len": "max_history"})
    with pytest.raises(BaselineError, match="inputs offer"):
        Baseline(key="x", name="x", settings=SASRecConfig, run=run, from_inputs={"max_len": "history"})
    with pytest.raises(BaselineError, match="settings must be a dataclass or pydantic model"):
        Baseline(key="x", name="x", settings=dict, run=run)
    with pytest.raises(BaselineError, match="identifier"):
        Baseline(key="not a key", name="x", settings=NoSettings, run=run)


def test_user_ranks_recompute_the_metrics():
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(30)[:10] for _ in range(200)])
    targets = rng.integers(0, 30, size=200)
    ranks = user_ranks(ranked, targets, 10)
    assert ranks.min() >= 0 and ranks.max() <= 10 and (ranks == 0).any() and (ranks == 1).any()
    hits = ranks > 0
    assert (ranked[hits, ranks[hits] - 1] == targets[hits]).all()  # 1-based position of the target
    assert metrics_from_ranks(ranks, (1, 5, 10)) == pytest.approx(evaluate_rankings(ranked, targets, (1, 5, 10)))


def test_result_and_inputs_are_validated():
    ok = {"valid": {"hr@5": 0.5}, "test": {"hr@5": 0.5}}
    users = {"valid": ["u1", "u2"], "test": ["u1", "u2"]}
    with pytest.raises(BaselineError, match="must lie in \\[0, 5\\]"):
        BaselineResult(ok, {"valid": [1, 6], "test": [0, 0]}, users, cutoff=5)
    with pytest.raises(BaselineError, match="one per user"):
        BaselineResult(ok, {"valid": [1], "test": [0, 0]}, users, cutoff=5)
    with pytest.raises(BaselineError, match="exactly the splits"):
        BaselineResult({"valid": {}}, {"valid": [1, 2], "test": [0, 0]}, users, cutoff=5)
    with pytest.raises(BaselineError, match="finite"):
        BaselineResult({"valid": {"hr@5": float("nan")}, "test": {}}, {"valid": [1, 2], "test": [0, 0]}, users, 5)
    r = BaselineResult(ok, {"valid": [1, 0], "test": [3, 5]}, users, cutoff=5)
    assert r.ranks_frame().to_dict("list") == {"split": ["valid", "valid", "test", "test"],
                                               "user_id": ["u1", "u2", "u1", "u2"], "rank": [1, 0, 3, 5]}
    with pytest.raises(BaselineError, match="lacks column\\(s\\) \\['position'\\]"):
        inputs(splits=cycle_splits().drop(columns=["position"]))
    with pytest.raises(BaselineError, match="max_history"):
        inputs(max_history=0)
    with pytest.raises(BaselineError, match="unique"):
        BaselineInputs(cycle_splits(), ["a", "a"], max_history=3)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sasrec_through_the_registry_rebuilds_from_its_checkpoint(tmp_path, one_thread):
    sasrec = get_baseline("sasrec")
    inp = inputs(max_history=5, seed=4, checkpoint_dir=tmp_path)
    result = sasrec.evaluate(inp, {"hidden": 16, "lr": 1e-2, "batch_size": 8, "max_epochs": 2, "patience": 2})
    info = result.info
    assert info["epochs"] == 2 and info["checkpoint"].startswith(str(tmp_path / "sasrec"))
    # the history cap and seed the caller gave are what the model was trained and saved with
    assert info["settings"]["max_len"] == 5 and info["settings"]["seed"] == 4
    reloaded = load_sasrec(info["checkpoint"])
    assert reloaded.config.max_len == 5 and reloaded.config.seed == 4 and reloaded.config.hidden == 16
    for split in ("valid", "test"):
        samples, ranked, targets = rank_split(reloaded, inp.interaction_splits, split, inp.cutoff)
        assert tuple(s.user_id for s in samples) == result.user_ids[split]
        np.testing.assert_array_equal(user_ranks(ranked, targets, inp.cutoff), result.ranks[split])
        assert metrics_from_ranks(result.ranks[split]) == pytest.approx(result.metrics[split])
        assert set(result.metrics[split]) == {"hr@5", "hr@10", "ndcg@5", "ndcg@10"}
    with pytest.raises(BaselineError, match="checkpoint_dir is required"):
        sasrec.evaluate(inputs(), {"max_epochs": 1})
