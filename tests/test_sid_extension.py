"""New items get semantic IDs from the frozen codebook: existing SIDs unchanged, the set unique and prefix-free."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.test_rqvae import SMALL, clustered
from training.rqvae import train_rqvae
from training.semantic_ids import SemanticIdError, SemanticIdTable
from training.sid_extension import CodebookCapacity, extend_semantic_ids, fullest_prefix_fill

N_OLD = 300


@pytest.fixture(scope="module")
def trained():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = clustered(n=400)
        result = train_rqvae(data[:N_OLD], replace(SMALL, seed=5, max_epochs=6))
        ids = [f"i{k:03d}" for k in range(len(data))]
        table = SemanticIdTable.from_codes(ids[:N_OLD], result.codes, result.distances)
        yield result.module, table, ids, data
    finally:
        torch.set_num_threads(before)


def _prefix_free(sids: list[tuple[int, ...]]) -> bool:
    full = set(sids)
    return not any(s[:k] in full for s in sids for k in range(1, len(s)))


def test_existing_sids_stay_and_new_ones_are_fresh_unique_and_prefix_free(trained) -> None:
    module, table, ids, data = trained
    ext = extend_semantic_ids(module, table, ids[N_OLD:], data[N_OLD:])
    new = ext.table
    assert new.item_ids[:N_OLD] == table.item_ids
    assert new.sid_strings()[:N_OLD] == table.sid_strings()  # what the generator learned is untouched
    assert len(set(new.sid_strings())) == len(new.item_ids) == len(data)
    assert _prefix_free([new.sid_of(i) for i in new.item_ids])
    assert (new.suffix[N_OLD:] == -1).all()  # fresh codes, no suffix
    # an item whose first choice was free gets exactly what the RQ-VAE assigns it
    codes, _ = module.assign_codes(data[N_OLD:])
    same = (new.codes[N_OLD:] == codes).all(axis=1)
    assert same.sum() == ext.new_items - ext.moved and ext.new_items == len(data) - N_OLD
    assert (new.codes[N_OLD:, :-2] == codes[:, :-2]).all()  # only the last two levels ever move
    assert 0 <= ext.moved_share <= 1 and (ext.mean_extra_distance > 0) == (ext.moved > 0)


def test_extension_is_reproducible_and_independent_of_input_order(trained) -> None:
    module, table, ids, data = trained
    first = extend_semantic_ids(module, table, ids[N_OLD:], data[N_OLD:])
    order = np.random.default_rng(0).permutation(len(data) - N_OLD)
    shuffled = extend_semantic_ids(module, table, [ids[N_OLD + k] for k in order], data[N_OLD:][order])
    assert {i: first.table.sid_of(i) for i in first.table.item_ids} == {
        i: shuffled.table.sid_of(i) for i in shuffled.table.item_ids}


def test_a_crowded_codebook_asks_for_retraining(trained) -> None:
    module, table, ids, data = trained
    # the same vectors again under other ids: each first choice is the code its twin already holds
    twins = extend_semantic_ids(module, table, [f"twin-{i}" for i in ids[:50]], data[:50])
    assert twins.moved == 50 and twins.moved_share == 1.0
    reasons = CodebookCapacity(max_moved_share=0.2, max_fill=1.0).reasons(twins)
    assert reasons and "had to move to a free code" in reasons[0]
    assert 0 < fullest_prefix_fill(twins.table, codebook_size=16) <= 1


def test_bad_input_is_refused_naming_the_problem(trained) -> None:
    module, table, ids, data = trained
    with pytest.raises(SemanticIdError, match=r"already have a semantic ID, e.g. \['i000'\]"):
        extend_semantic_ids(module, table, ["i000"], data[:1])
    with pytest.raises(SemanticIdError, match=r"duplicate new item ids: \['n1'\]"):
        extend_semantic_ids(module, table, ["n1", "n1"], data[:2])
    with pytest.raises(SemanticIdError, match=r"embeddings must be \[n_new_items, dim\] for 2 new items"):
        extend_semantic_ids(module, table, ["n1", "n2"], data[:3])
    assert extend_semantic_ids(module, table, [], data[:0]).table is table


def test_a_full_codebook_is_an_error_asking_for_retraining(trained) -> None:
    module, _, _, data = trained
    every = np.array([(a, b) for a in range(16) for b in range(16)])  # all 256 codes of the 2 x 16 codebook
    full = SemanticIdTable([f"f{k}" for k in range(len(every))], every, np.full(len(every), -1))
    with pytest.raises(SemanticIdError, match=r"every code under prefix \(root\) is taken \(new item 'n1'\): "
                                              r"retrain the codebook"):
        extend_semantic_ids(module, full, ["n1"], data[:1])
    # one free code anywhere: the new item takes it, however far
    ext = extend_semantic_ids(module, SemanticIdTable(full.item_ids[1:], every[1:], full.suffix[1:]), ["n1"], data[:1])
    assert ext.table.sid_of("n1") == (0, 0) and ext.moved == int(module.assign_codes(data[:1])[0][0].tolist() != [0, 0])


def test_the_asset_extends_the_codebook_for_new_items_and_retrains_when_asked(digr_env) -> None:
    import dagster as dg
    import pandas as pd

    from digr_dagster.resources.warehouse import Warehouse
    from tests.test_settings_roads import _materialise, _meta, _report

    data = clustered(n=60, dim=24, clusters=60, seed=2)  # spread out: the codebook has room
    ids = [f"i{k:02d}" for k in range(60)]

    def embeddings(n: int) -> pd.DataFrame:
        return pd.DataFrame({"item_id": ids[:n], "text": ids[:n], "n_descriptors": 0,
                             "embedding": [v.tolist() for v in data[:n]]})

    base = {"n_levels": 2, "codebook_size": 16, "max_epochs": 20, "seed": 5, "batch_size": 16}
    with dg.DagsterInstance.get() as instance:
        def run(n: int, config: dict) -> dict:
            Warehouse().replace({"item_embeddings": embeddings(n)})
            _report(instance, "item_embeddings", embeddings(n)[["item_id", "text"]])
            return _meta(_materialise(instance, ["semantic_ids"], {"semantic_ids": {"config": config}}),
                         "semantic_ids")

        first = run(50, base)
        assert first["codebook"] == "trained (no earlier SID table)"
        # a tiny catalogue crowds a small codebook: the default limits ask for retraining and say why
        crowded = run(60, base)["codebook"]
        assert crowded.startswith("trained (") and "had to move to a free code" in crowded
        shrunk = run(50, base)  # ten items left the catalogue: the same codebook, their rows dropped
        assert shrunk["codebook"] == "extended (no retraining)" and shrunk["new_items"] == 0
        before = Warehouse().read("semantic_ids").set_index("item_id")["sid"]
        base = {**base, "refresh_max_moved_share": 1.0, "refresh_max_fill": 1.0}  # not codebook settings
        second = run(60, base)  # ten new items tonight
        after = Warehouse().read("semantic_ids").set_index("item_id")["sid"]
        assert second["codebook"] == "extended (no retraining)" and second["new_items"] == 10
        assert second["checkpoint"] == shrunk["checkpoint"]  # the same codebook
        assert after.loc[before.index].equals(before) and after.is_unique and len(after) == 60
        assert run(60, {**base, "refresh": "retrain"})["codebook"] == "trained (refresh=retrain)"
        assert run(60, {**base, "seed": 6})["codebook"] == "trained (the codebook settings changed)"
