"""``exclude_seen``: a user's history left out of every model's ranking (report) and of served recommendations.

The removal is one function over ranked item-index lists (:func:`evaluation.protocol.exclude_seen_items`);
the baselines (through ``split_result``), the generators (``rank_loader`` → ``rank_unseen``) and the pyfunc
all go through it. Off (the default) everything ranks exactly as before.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch

from evaluation.baselines import BaselineInputs, BaselineResult, metrics_from_ranks, registered_baselines, user_ranks
from evaluation.baselines import registry as baseline_registry
from evaluation.baselines.registry import Baseline, BaselineError, register, split_result, unregister
from evaluation.protocol import (
    PROTOCOL,
    EvaluationSettings,
    exclude_seen_items,
    kept_columns,
    protocol,
    seen_indices,
    seen_items,
    seen_mask,
    targets_in_history,
)
from metrics.ranking import evaluate_rankings
from tests.helpers import random_codes_with_suffix
from training.generator import GeneratorModule, evaluate_generator, rank_loader, rank_unseen, recommend
from training.sequence_data import SequenceDataModule, SequenceSample, layout_of
from training.settings import GeneratorConfig, SequenceSettings
from training.sid_vocab import SidVocab

torch.set_num_threads(1)

N_ITEMS = 30
ITEMS = tuple(f"it{i:02d}" for i in range(N_ITEMS))


# --------------------------------------------------------------------------- the exclusion function


def test_seen_items_are_removed_and_the_rest_moves_up():
    ranked = np.array([[5, 3, 7, 2, 9],
                       [1, 2, 3, 4, 5],
                       [8, 6, -1, -1, -1]])
    seen = [[3], [9], [8, 0]]  # row 1: a seen item it does not rank changes nothing
    out = exclude_seen_items(ranked, seen)
    np.testing.assert_array_equal(out, [[5, 7, 2, 9, -1],
                                        [1, 2, 3, 4, 5],
                                        [6, -1, -1, -1, -1]])
    # cut to k, or padded with -1 to k
    np.testing.assert_array_equal(exclude_seen_items(ranked, seen, k=2), [[5, 7], [1, 2], [6, -1]])
    np.testing.assert_array_equal(exclude_seen_items(ranked, seen, k=7)[0], [5, 7, 2, 9, -1, -1, -1])
    # the target's rank moves up by the seen items ranked above it
    targets = np.array([7, 4, 6])
    np.testing.assert_array_equal(user_ranks(ranked, targets, 5), [3, 4, 2])
    np.testing.assert_array_equal(user_ranks(out, targets, 5), [2, 4, 1])
    # a target among the seen items is never in its row: a miss
    np.testing.assert_array_equal(user_ranks(exclude_seen_items(ranked, [[7], [], []]), targets, 5), [0, 4, 2])
    # no seen items: the ranking as it was
    np.testing.assert_array_equal(exclude_seen_items(ranked, [[], [], []]), ranked)


def test_kept_columns_carry_scores_along_and_padding_is_never_seen():
    ranked = np.array([[4, 0, 2, -1]])
    scores = np.array([[-0.1, -0.5, -0.9, -np.inf]])
    cols = kept_columns(ranked, [np.array([0])], k=3)
    np.testing.assert_array_equal(cols, [[0, 2, -1]])
    np.testing.assert_allclose(np.take_along_axis(scores, np.maximum(cols, 0), axis=1)[cols >= 0], [-0.1, -0.9])
    # -1 padding is not an item: a row whose seen set has the largest index cannot hit the next row's padding
    mask = seen_mask(np.array([[0, -1], [3, -1]]), [[3], [0]])
    np.testing.assert_array_equal(mask, [[False, False], [False, False]])
    with pytest.raises(ValueError, match="one seen set per ranked row"):
        exclude_seen_items(ranked, [[0], [1]])
    with pytest.raises(ValueError, match=">= 0"):
        exclude_seen_items(ranked, [[-1]])


def test_exclusion_is_vectorised_over_many_rows():
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(50)[:20] for _ in range(300)])
    seen = [rng.choice(50, size=rng.integers(0, 30), replace=False) for _ in range(300)]
    out = exclude_seen_items(ranked, seen, k=10)
    for row, s, got in zip(ranked, seen, out, strict=True):
        expected = [i for i in row if i not in set(s)][:10]
        assert got.tolist() == expected + [-1] * (10 - len(expected))


def sequences_frame() -> pd.DataFrame:
    """Six users over ``ITEMS``; u5 bought it03 again as its test target (a repeat), u0 has a long history."""
    rng = np.random.default_rng(7)
    seqs = {f"u{u}": [ITEMS[i] for i in rng.permutation(N_ITEMS)[: n]] for u, n in enumerate((24, 6, 9, 12, 7, 8))}
    seqs["u5"][-1] = seqs["u5"][2]  # the test target is an item seen before
    rows = []
    for user, seq in seqs.items():
        for p, item in enumerate(seq):
            split = "train" if p < len(seq) - 2 else ("valid" if p == len(seq) - 2 else "test")
            rows.append((user, item, 1000 + p, p, 5.0, split))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "position", "rating", "split"])


def test_seen_items_are_the_whole_prefix_before_the_target():
    splits = sequences_frame()
    valid, test = seen_items(splits, "valid"), seen_items(splits, "test")
    u0 = splits[splits["user_id"] == "u0"]["item_id"].tolist()
    assert valid["u0"] == tuple(u0[:-2]) and test["u0"] == tuple(u0[:-1])  # not cut to any history cap
    assert set(valid) == set(test) == {f"u{i}" for i in range(6)}
    assert targets_in_history(splits, "test") == 1 and targets_in_history(splits, "valid") == 0
    index = {item: i for i, item in enumerate(ITEMS)}
    idx = seen_indices(test, ["u1", "nobody"], {k: v for k, v in index.items() if k != test["u1"][0]})
    assert len(idx[0]) == len(set(test["u1"])) - 1 and idx[1].size == 0  # unknown items and users: nothing


# --------------------------------------------------------------------------- baselines


def inputs(exclude_seen: bool, **kw) -> BaselineInputs:
    return BaselineInputs(sequences_frame(), ITEMS, max_history=4, ks=(5, 10), exclude_seen=exclude_seen, **kw)


SASREC_FAST = {"hidden": 16, "layers": 1, "heads": 1, "max_epochs": 2, "patience": 1, "batch_size": 16,
               "eval_batch_size": 16}


def _evaluate(key: str, baseline: Baseline, exclude_seen: bool, tmp_path) -> BaselineResult:
    settings = SASREC_FAST if key == "sasrec" else None
    return baseline.evaluate(inputs(exclude_seen, checkpoint_dir=tmp_path / str(exclude_seen)), settings)


def test_every_baseline_ranks_without_seen_items(tmp_path, monkeypatch):
    """Each registered baseline, evaluated with exclude_seen, hands lists free of every seen item through the
    shared ``split_result``, ranked deep enough that ``cutoff`` items remain wherever its ranking has them
    (SASRec ranks the whole catalogue; most-popular only the items bought in train)."""
    listed: list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]] = []

    def recording(ranked, seen, k=None):
        out = exclude_seen_items(ranked, seen, k)
        listed.append((ranked, out, seen))
        return out

    monkeypatch.setattr(baseline_registry, "exclude_seen_items", recording)
    baselines = registered_baselines()
    assert {"popularity", "sasrec"} <= set(baselines)
    for key, baseline in baselines.items():
        listed.clear()
        result = _evaluate(key, baseline, True, tmp_path)
        assert len(listed) == 2, f"{key}: both splits must rank through split_result with their users"
        for before, ranked, seen in listed:
            assert ranked.shape[1] == 10 and before.shape[1] == inputs(True).rank_depth
            for full, row, s in zip(before, ranked, seen, strict=True):
                items = row[row >= 0].tolist()
                assert not set(items) & set(s.tolist()) and len(set(items)) == len(items), key
                available = {i for i in full.tolist() if i >= 0} - set(s.tolist())
                assert len(items) == min(10, len(available)), key
                if key == "sasrec":  # the whole catalogue: k items wherever it has them unseen
                    assert len(items) == min(10, N_ITEMS - len(set(s.tolist())))
        # u5's test target is an item it had seen: a miss for every model
        assert result.ranks["test"][list(result.user_ids["test"]).index("u5")] == 0, key
        for split in ("valid", "test"):
            assert result.metrics[split] == pytest.approx(metrics_from_ranks(result.ranks[split], ks=(5, 10)))


def test_popularity_with_exclude_seen_hand_computed():
    splits = sequences_frame()
    result = registered_baselines()["popularity"].evaluate(inputs(True))
    train = splits[splits["split"] == "train"]["item_id"].value_counts()
    order = [item for _, item in sorted((-int(c), item) for item, c in train.items())]  # train items only
    test_seen = seen_items(splits, "test")
    target = dict(zip(splits[splits["split"] == "test"]["user_id"], splits[splits["split"] == "test"]["item_id"],
                      strict=True))
    for user, rank in zip(result.user_ids["test"], result.ranks["test"], strict=True):
        unseen = [i for i in order if i not in set(test_seen[user])][:10]
        expected = unseen.index(target[user]) + 1 if target[user] in unseen else 0
        assert rank == expected, user


def test_a_baseline_that_ignores_the_exclusion_is_refused():
    def careless(inp, settings):  # ranks every user's target first and never hands its users over
        idx, frame = inp.item_index(), inp.interaction_splits
        metrics, ranks, users = {}, {}, {}
        for split in ("valid", "test"):
            rows = frame[frame["split"] == split]
            targets = np.array([idx[t] for t in rows["item_id"]])
            ranked = np.column_stack([targets, np.tile(np.arange(inp.cutoff - 1), (len(rows), 1))])
            metrics[split] = evaluate_rankings(ranked, targets, ks=inp.ks)
            ranks[split] = user_ranks(ranked, targets, inp.cutoff)
            users[split] = tuple(rows["user_id"])
        return BaselineResult(metrics=metrics, ranks=ranks, user_ids=users, cutoff=inp.cutoff)

    from dataclasses import dataclass

    @dataclass(frozen=True)
    class NoSettings:
        pass

    baseline = register(Baseline(key="careless_test", name="careless", settings=NoSettings, run=careless,
                                 module="tests.test_exclude_seen"))
    try:
        baseline.evaluate(inputs(False))  # off: nothing to check
        with pytest.raises(BaselineError, match="already-seen target ranked"):
            baseline.evaluate(inputs(True))
        with pytest.raises(BaselineError, match="needs the split and the rows' users"):
            split_result(np.zeros((1, 10), dtype=np.int64), np.zeros(1, dtype=np.int64), inputs(True))
    finally:
        unregister("careless_test")


# --------------------------------------------------------------------------- generators


def vocab() -> SidVocab:
    codes, suffix = random_codes_with_suffix(3, 3, (3, 3, 3), N_ITEMS)
    return SidVocab(list(ITEMS), codes, suffix)


def generator(arch: str, beam_width: int = 6) -> GeneratorModule:
    config = GeneratorConfig(arch=arch, d_model=32, d_ff=64, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                             dropout=0.0, beam_width=beam_width, eval_top_k=min(5, beam_width), seed=5)
    sequence = SequenceSettings(max_history=4, use_user_interests=False, history_text=False)
    return GeneratorModule(vocab(), config, sequence).eval()


def datamodule(module: GeneratorModule) -> SequenceDataModule:
    return SequenceDataModule.for_settings(sequences_frame(), module.vocab, module.sequence, batch_size=4, seed=0,
                                           user_prefix=None, layout=layout_of(module.config.arch), eval_batch_size=4)


@pytest.mark.parametrize("arch", ["item_causal", "t5"])
def test_generator_evaluation_ranks_without_seen_items(arch):
    from assets.recommender import evaluate_with_ranks

    module, splits = generator(arch), sequences_frame()
    dm = datamodule(module)
    index = {item: i for i, item in enumerate(module.vocab.item_ids)}
    for split in ("valid", "test"):
        seen = seen_items(splits, split)
        users = [s.user_id for s in dm.samples[split]]
        exclude = seen_indices(seen, users, index)
        ranked, targets = rank_loader(module, dm.loader(split), beam_width=6, top_k=6, exclude=exclude)
        assert ranked.shape == (len(users), 6)
        for row, s in zip(ranked, exclude, strict=True):
            assert not set(row.tolist()) & set(s.tolist())
            # the beam was widened past the user's seen items: six unseen items, all distinct
            assert (row >= 0).all() and len(set(row.tolist())) == 6
        metrics, frame = evaluate_with_ranks(module, dm, split, exclude=seen)
        assert metrics == pytest.approx(metrics_from_ranks(frame["rank"].to_numpy(), ks=(5, 10)))
        np.testing.assert_array_equal(frame["rank"].to_numpy(), user_ranks(ranked, targets, 6))
        if split == "test":
            assert int(frame.loc[frame["user_id"] == "u5", "rank"].iloc[0]) == 0  # the repeat target: a miss


def test_rank_unseen_fills_k_and_does_not_depend_on_the_other_rows():
    module = generator("item_causal", beam_width=4)
    from training.generator import encode_histories
    from training.sequence_data import SampleEncoder

    encoder = SampleEncoder(module.vocab)
    histories = [list(ITEMS[:26]), list(ITEMS[3:6]), list(ITEMS)]  # 26 seen of 30, 3 seen, everything seen
    seen = [[encoder.item_index(i) for i in h] for h in histories]
    batch = encode_histories(module, encoder, ["a", "b", "c"], histories)
    items, scores = rank_unseen(module, batch, seen, beam_width=4, top_k=5, scores=True)
    assert (items[0] >= 0).sum() == 4 and set(items[0][:4].tolist()) == set(range(26, 30))  # all 4 left
    assert (items[1] >= 0).all() and not set(items[1].tolist()) & set(seen[1])
    assert (items[2] == -1).all() and np.isneginf(scores[2]).all()  # nothing left to recommend
    finite = scores[1]
    assert np.isfinite(finite).all() and (np.diff(finite) <= 1e-6).all()  # best first
    for r in range(3):  # each row alone gives the same list
        one = encode_histories(module, encoder, ["x"], histories[r : r + 1])
        alone, _ = rank_unseen(module, one, seen[r : r + 1], beam_width=4, top_k=5)
        np.testing.assert_array_equal(alone[0], items[r])


def test_recommend_with_exclude_drops_the_history():
    module = generator("item_causal")
    history = ITEMS[:20]  # longer than the model's cap (4): every item of it is still excluded
    samples = [SequenceSample("u", history, "", "test")]
    plain = recommend(module, samples, k=5)
    recs = recommend(module, samples, k=5, exclude=[history])
    assert len(recs[0]) == 5 and not set(recs[0]) & set(history)
    assert len(plain[0]) == 5
    with pytest.raises(ValueError, match="exclude has 2 entries"):
        recommend(module, samples, k=5, exclude=[history, history])


def test_report_ranks_every_generator_again_without_seen_items(tmp_path, monkeypatch):
    """The report's road for generators: each checkpoint ranked again through ``evaluate_with_ranks`` with the
    users' seen items; a model whose user-interest tokens were never stored is listed, not shown."""
    import assets.evaluation as report_asset

    module = generator("item_causal")
    ckpt = tmp_path / "g.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams),
                "state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()}}, ckpt)
    asked = []
    monkeypatch.setattr(report_asset, "checkpoint_from_lineage",
                        lambda context, asset, key: asked.append((asset, key)) or str(ckpt))
    splits = sequences_frame()
    seen = {split: seen_items(splits, split) for split in ("valid", "test")}
    row = report_asset.GeneratorRow("x", "ablation_no_q_term", "policy", "ablation")
    cache = {}
    metrics, test_ranks = report_asset._rank_excluding_seen(None, None, splits, row, seen, cache)
    assert asked == [("ablation_no_q_term", "policy_checkpoint")] and row.prefix == "policy_"
    assert test_ranks["u5"] == 0 and set(metrics) == {"valid", "test"}
    assert metrics["test"] == pytest.approx(metrics_from_ranks(np.array(list(test_ranks.values())), ks=(5, 10)))
    shipped = report_asset.GeneratorRow("y", "recommender_sft", "shipped", "ablation")
    assert report_asset._rank_excluding_seen(None, None, splits, shipped, seen, cache) == (metrics, test_ranks)
    assert asked[-1] == ("recommender_sft", "checkpoint")  # same checkpoint: ranked once

    t5 = GeneratorModule(vocab(), GeneratorConfig(arch="t5", d_model=32, d_ff=64, num_heads=2, num_encoder_layers=1,
                                                  num_decoder_layers=1, beam_width=6, eval_top_k=5),
                         SequenceSettings(max_history=4, use_user_interests=True, history_text=False))
    torch.save({"hyper_parameters": dict(t5.hparams),
                "state_dict": {f"model.{k}": v for k, v in t5.model.state_dict().items()}}, ckpt)
    plain = report_asset.GeneratorRow("z", "ablation_no_item_interests", "shipped", "ablation",
                                      sids="semantic_ids_plain")
    with pytest.raises(report_asset.NotRankable, match="not stored"):
        report_asset._rank_excluding_seen(None, None, splits, plain, seen)


# --------------------------------------------------------------------------- default behaviour unchanged


def test_defaults_keep_repeats():
    assert EvaluationSettings().exclude_seen is False and BaselineInputs(
        sequences_frame(), ITEMS, max_history=4).exclude_seen is False
    assert protocol(False) == PROTOCOL and "seen items are not excluded" in PROTOCOL
    assert "seen items are excluded" in protocol(True)
    from assets.evaluation import EvaluationConfig

    assert EvaluationConfig().exclude_seen is False
    assert EvaluationConfig(exclude_seen=True).build(EvaluationSettings).exclude_seen is True


def test_exclude_seen_off_gives_the_metrics_of_before(tmp_path):
    """Off: the baselines' rankings stay ``cutoff`` deep and unfiltered, and a generator's metrics are those
    of the untouched full-ranking path (``evaluate_generator``)."""
    from assets.recommender import evaluate_with_ranks
    from evaluation.baselines import evaluate_popularity

    off = inputs(False)
    assert off.rank_depth == off.cutoff == 10 and inputs(True).rank_depth == N_ITEMS
    # a third-party baseline that hands no users over keeps working while the setting is off
    ranked = np.tile(np.arange(10), (3, 1))
    targets = np.array([0, 4, 12])
    metrics, ranks = split_result(ranked, targets, off)
    assert metrics == evaluate_rankings(ranked, targets, ks=(5, 10)) and ranks.tolist() == [1, 5, 0]

    pop = registered_baselines()["popularity"].evaluate(off)
    splits = sequences_frame()
    for split in ("valid", "test"):
        assert pop.metrics[split] == pytest.approx(evaluate_popularity(splits, list(ITEMS), split, ks=(5, 10)))

    module = generator("item_causal", beam_width=10)
    dm = datamodule(module)
    for split in ("valid", "test"):
        metrics, _ = evaluate_with_ranks(module, dm, split)
        assert metrics == pytest.approx(evaluate_generator(module, dm.loader(split), beam_width=10))
        plain, _ = rank_loader(module, dm.loader(split), beam_width=10, top_k=10)
        with_none, _ = rank_loader(module, dm.loader(split), beam_width=10, top_k=10, exclude=None)
        np.testing.assert_array_equal(plain, with_none)


# --------------------------------------------------------------------------- serving


def served(tmp_path, exclude_seen: bool = False, k: int = 5):
    """The pyfunc loaded from an (untrained) item-causal checkpoint and its serving metadata."""
    from serving.pyfunc_model import CHECKPOINT_ARTIFACT, METADATA_ARTIFACT, DeepInterestGRModel, ServingMetadata

    module = generator("item_causal")
    ckpt = tmp_path / "generator.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams),
                "state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()}}, ckpt)
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(asdict(ServingMetadata(item_titles={i: f"title {i}" for i in ITEMS}, k=k,
                                                      beam_width=6, exclude_seen=exclude_seen))))
    model = DeepInterestGRModel()
    model.load_context(SimpleNamespace(artifacts={CHECKPOINT_ARTIFACT: str(ckpt), METADATA_ARTIFACT: str(meta)}))
    return model, ckpt


def test_served_recommendations_leave_the_history_out(tmp_path):
    from serving.pyfunc_model import RecommendationInputError

    model, _ = served(tmp_path)
    histories = [list(ITEMS[:20]), [ITEMS[3], ITEMS[9]], list(ITEMS[:27])]
    frame = pd.DataFrame({"history": histories})
    out = model.predict(None, frame, params={"exclude_seen": True})
    for history, items, scores in zip(histories, out["item_ids"], out["scores"], strict=True):
        assert not set(items) & set(history)
        assert len(items) == min(5, N_ITEMS - len(set(history)))  # k items while the catalogue allows
        assert len(scores) == len(items) and all(math.isfinite(s) for s in scores)
        assert list(scores) == sorted(scores, reverse=True)
    # off (the logged default here): exactly the old answers
    before = model.predict(None, frame)
    np.testing.assert_equal(model.predict(None, frame, params={"exclude_seen": False}).to_dict(), before.to_dict())
    # the 27-item history leaves 3 unseen items; without the exclusion the top 5 must repeat history
    assert set(before["item_ids"][2]) & set(histories[2])
    with pytest.raises(RecommendationInputError, match="must be a bool"):
        model.predict(None, frame, params={"exclude_seen": "yes"})
    with pytest.raises(RecommendationInputError, match="unknown params"):
        model.predict(None, frame, params={"exclude": True})


def test_served_default_comes_from_the_logged_metadata(tmp_path):
    model, _ = served(tmp_path, exclude_seen=True)
    history = list(ITEMS[:25])
    out = model.predict(None, pd.DataFrame({"history": [history]}))
    assert len(out["item_ids"][0]) == 5 and not set(out["item_ids"][0]) & set(history)
    kept = model.predict(None, pd.DataFrame({"history": [history]}), params={"exclude_seen": False})
    assert set(kept["item_ids"][0]) & set(history)  # 25 of 30 seen: a top 5 over everything repeats some


def test_logged_model_takes_exclude_seen_as_a_param(tmp_path):
    import mlflow

    from serving.pyfunc_model import log_recommender
    from tests.test_pyfunc_model import local_mlflow_store

    _, ckpt = served(tmp_path)
    history = list(ITEMS[:25])
    with local_mlflow_store(tmp_path / "mlflow"):
        mv = log_recommender(ckpt, {i: f"title {i}" for i in ITEMS}, name="digr-exclude-test", k=5, beam_width=6,
                             exclude_seen=True)
        assert mv.tags["digr.exclude_seen"] == "True"
        loaded = mlflow.pyfunc.load_model(f"models:/digr-exclude-test/{mv.version}")
        assert {p.name: p.default for p in loaded.metadata.get_params_schema().params} == {"exclude_seen": True}
        default = loaded.predict(pd.DataFrame({"history": [history]}))
        assert len(default["item_ids"][0]) == 5 and not set(default["item_ids"][0]) & set(history)
        kept = loaded.predict(pd.DataFrame({"history": [history]}), params={"exclude_seen": False})
        assert set(kept["item_ids"][0]) & set(history)


def test_cli_recommend_passes_exclude_seen(tmp_path, monkeypatch, capsys):
    import mlflow

    from digr_dagster import cli

    calls = []

    class FakeModel:
        metadata = SimpleNamespace(get_params_schema=lambda: SimpleNamespace(params=[SimpleNamespace(
            name="exclude_seen")]))

        def predict(self, frame, params=None):
            calls.append((frame.iloc[0]["history"], params))
            return pd.DataFrame({"item_ids": [["it09"]], "scores": [[-0.5]], "explanations": [[]],
                                 "unknown_items": [[]]})

    monkeypatch.setenv("DIGR_HOME", str(tmp_path))
    monkeypatch.setattr(mlflow, "set_tracking_uri", lambda uri: None)
    monkeypatch.setattr(mlflow.pyfunc, "load_model", lambda uri: FakeModel())
    assert cli.main(["recommend", "--history", "50,172,181", "--exclude-seen"]) == 0
    assert cli.main(["recommend", "--history", "50,172,181", "--no-exclude-seen"]) == 0
    assert cli.main(["recommend", "--history", "50,172,181"]) == 0
    assert [p for _, p in calls] == [{"exclude_seen": True}, {"exclude_seen": False}, None]
    assert list(calls[0][0]) == ["50", "172", "181"]
    assert "it09" in capsys.readouterr().out
    monkeypatch.setattr(FakeModel, "metadata", SimpleNamespace(get_params_schema=lambda: None))  # an older champion
    with pytest.raises(SystemExit, match="logged before the exclude_seen param"):
        cli.main(["recommend", "--history", "50", "--exclude-seen"])
