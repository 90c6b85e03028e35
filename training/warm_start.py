"""Warm start: a generator begins from a trained one's weights instead of random ones.

A nightly run sees yesterday's catalogue plus a few new items, and semantic IDs that the frozen codebook kept
(``training.sid_extension``). The model that ships already knows what every code token means, so the new run
starts from it: each token row of the embeddings and the output layer moves to the token that means the same
in the new vocabulary (level ``l`` code ``c``, suffix ``s``, a named block), rows of tokens the old vocabulary
lacked keep their seeded random start, every other weight is copied, and the per-item text embeddings are the
new catalogue's own. A source trained on other semantic IDs (another codebook, the plain-text SIDs of the
TIGER-style baseline) would hand over rows whose tokens mean something else; it is refused, as is one whose
shapes differ (another size, history cap or input road).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from config_schema import from_mapping
from training.settings import GeneratorConfig, SequenceSettings
from training.sid_vocab import PAD_ID, SidVocab

#: per architecture, the weights whose first axis is the token vocabulary: their rows move with the tokens
VOCAB_ROWS: dict[str, tuple[str, ...]] = {
    "item_causal": ("token_in.weight", "token_out.weight", "out.weight", "out.bias"),
    "t5": ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"),
}
#: what belongs to the catalogue, not to training: always the new model's own (the items' text embeddings)
PER_ITEM = frozenset({"item_text"})
#: settings that decide the weights' shapes or what an input position means: equal in source and target
SHAPE_SETTINGS = ("arch", "d_model", "d_ff", "num_encoder_layers", "num_decoder_layers", "num_heads")
SEQUENCE_SETTINGS = ("max_history", "use_user_interests", "interest_tokens", "interest_depth", "history_text")


class WarmStartError(ValueError):
    """A source model the new one cannot start from; the message names every reason."""


@dataclass(frozen=True)
class WarmStartSource:
    """A trained generator to start from: its vocabulary, settings and weights (``model.``-less names)."""

    name: str  # where it came from, for lineage (a registry URI or a checkpoint path)
    vocab: SidVocab
    config: GeneratorConfig
    sequence: SequenceSettings
    text_dim: int | None
    state: dict[str, torch.Tensor]

    @classmethod
    def from_checkpoint(cls, path: str | Path, name: str | None = None) -> WarmStartSource:
        """Read a self-describing SFT/GRPO checkpoint (full or slim, as the pyfunc logs it)."""
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
        missing = [k for k in ("vocab", "config", "sequence") if k not in hp]
        if missing or "state_dict" not in ckpt:
            raise WarmStartError(f"{path} is not a self-describing generator checkpoint (lacks "
                                 f"{missing or ['state_dict']}); it cannot seed a warm start")
        state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        return cls(name=name or str(path), vocab=SidVocab.from_dict(hp["vocab"]),
                   config=from_mapping(GeneratorConfig, hp["config"], where=f"{path} config"),
                   sequence=from_mapping(SequenceSettings, hp["sequence"], where=f"{path} sequence settings"),
                   text_dim=hp.get("text_dim"), state=state)


@dataclass(frozen=True)
class WarmStartReport:
    """What a warm start carried over (Dagster metadata and MLflow params read ``metadata()``)."""

    source: str
    shared_items: int  # items in both vocabularies
    same_sid_items: int  # of those, items whose SID is the same in both
    new_items: int  # items the source never saw
    tokens_copied: int
    tokens_fresh: int  # tokens of the new vocabulary the source lacks (random start)
    tensors_copied: int

    @property
    def same_sid_share(self) -> float:
        return self.same_sid_items / self.shared_items if self.shared_items else 0.0

    def metadata(self) -> dict[str, Any]:
        return {"warm_start_source": self.source, "warm_start_shared_items": self.shared_items,
                "warm_start_same_sid_share": round(self.same_sid_share, 4), "warm_start_new_items": self.new_items,
                "warm_start_tokens_copied": self.tokens_copied, "warm_start_tokens_fresh": self.tokens_fresh,
                "warm_start_tensors_copied": self.tensors_copied}


def token_correspondence(old: SidVocab, new: SidVocab) -> tuple[np.ndarray, np.ndarray]:
    """``(new_ids, old_ids)``: the token pairs that mean the same in both vocabularies (the specials, each
    level's codes both have, the suffixes both have, named blocks both have, up to the shorter block)."""
    if old.levels != new.levels:
        raise WarmStartError(f"the source's semantic IDs have {old.levels} levels, the new ones {new.levels}")
    pairs = [np.arange(min(old.n_special, new.n_special))] * 2
    spans = [(o_off, n_off, min(o_size, n_size)) for o_off, n_off, o_size, n_size in zip(
        old.level_offsets, new.level_offsets, old.level_sizes, new.level_sizes, strict=True)]
    spans.append((old.suffix_offset, new.suffix_offset, min(old.suffix_size, new.suffix_size)))
    spans += [(old.blocks[b][0], new.blocks[b][0], min(old.blocks[b][1], new.blocks[b][1]))
              for b in sorted(set(old.blocks) & set(new.blocks))]
    new_ids = [pairs[0]] + [n_off + np.arange(size) for _, n_off, size in spans]
    old_ids = [pairs[1]] + [o_off + np.arange(size) for o_off, _, size in spans]
    return np.concatenate(new_ids).astype(np.int64), np.concatenate(old_ids).astype(np.int64)


def sid_agreement(old: SidVocab, new: SidVocab) -> tuple[int, int]:
    """``(shared, same)``: items in both vocabularies, and those whose SID means the same tokens in both."""
    new_ids, old_ids = token_correspondence(old, new)
    to_new = np.full(old.vocab_size, -1, dtype=np.int64)
    to_new[old_ids] = new_ids
    to_new[PAD_ID] = PAD_ID
    known = set(new.item_ids)
    shared = [i for i in old.item_ids if i in known]
    if not shared:
        return 0, 0
    old_rows = to_new[old.items_tokens(shared)]
    new_rows = new.items_tokens(shared)
    width = min(old_rows.shape[1], new_rows.shape[1])
    # a longer row's extra column is pad on both sides when the SIDs agree (suffix-less items)
    same = (old_rows[:, :width] == new_rows[:, :width]).all(axis=1)
    same &= (old_rows[:, width:] == PAD_ID).all(axis=1) & (new_rows[:, width:] == PAD_ID).all(axis=1)
    return len(shared), int(same.sum())


def incompatibilities(source: WarmStartSource, config: GeneratorConfig, sequence: SequenceSettings,
                      text_dim: int | None) -> list[str]:
    """Every reason the source's weights cannot seed a model of ``config``/``sequence`` (empty: they can)."""
    problems = [f"{key}: source {getattr(source.config, key)!r}, new {getattr(config, key)!r}"
                for key in SHAPE_SETTINGS if getattr(source.config, key) != getattr(config, key)]
    problems += [f"sequence.{key}: source {getattr(source.sequence, key)!r}, new {getattr(sequence, key)!r}"
                 for key in SEQUENCE_SETTINGS if getattr(source.sequence, key) != getattr(sequence, key)]
    if sequence.history_text and source.text_dim != text_dim:
        problems.append(f"text embedding size: source {source.text_dim}, new {text_dim} (another text encoder)")
    if config.arch not in VOCAB_ROWS:
        problems.append(f"arch {config.arch!r} has no warm start (only {sorted(VOCAB_ROWS)})")
    return problems


def warm_start_problems(source: WarmStartSource, vocab: SidVocab, config: GeneratorConfig,
                        sequence: SequenceSettings, *, min_same_sid_share: float,
                        text_dim: int | None = None) -> list[str]:
    """Every reason ``source`` cannot seed a model of ``vocab``/``config``/``sequence`` (empty: it can): other
    shapes, fewer than ``min_same_sid_share`` of the shared items keeping their SID, or no item in common."""
    problems = incompatibilities(source, config, sequence, text_dim)
    if source.vocab.levels != vocab.levels:
        return [*problems, f"semantic-ID levels: source {source.vocab.levels}, new {vocab.levels}"]
    shared, same = sid_agreement(source.vocab, vocab)
    if shared == 0:
        problems.append("the source knows none of the new catalogue's items")
    elif same / shared < min_same_sid_share:
        problems.append(f"only {same / shared:.1%} of the {shared} shared items keep their semantic ID (need "
                        f">= {min_same_sid_share:.0%}): the source was trained on other semantic IDs")
    return problems


def warm_start(model: nn.Module, vocab: SidVocab, config: GeneratorConfig, sequence: SequenceSettings,
               source: WarmStartSource, *, min_same_sid_share: float, text_dim: int | None = None) -> WarmStartReport:
    """Load ``source``'s weights into ``model`` (built for ``vocab``/``config``/``sequence``), token rows
    matched by meaning. Raises :class:`WarmStartError` naming every reason when it cannot (those of
    :func:`warm_start_problems`, or weights missing on either side), before changing ``model``."""
    problems = warm_start_problems(source, vocab, config, sequence, min_same_sid_share=min_same_sid_share,
                                   text_dim=text_dim)
    if problems:
        raise WarmStartError(f"cannot warm-start from {source.name}: " + "; ".join(problems))
    target = model.state_dict()
    rows = set(VOCAB_ROWS[config.arch])
    missing = sorted(set(target) - set(source.state) - PER_ITEM)
    extra = sorted(set(source.state) - set(target) - PER_ITEM)
    wrong = sorted(k for k in set(target) & set(source.state) - rows - PER_ITEM
                   if target[k].shape != source.state[k].shape)
    if missing or extra or wrong:
        raise WarmStartError(f"cannot warm-start from {source.name}: weights missing {missing[:5]}, unexpected "
                             f"{extra[:5]}, of another shape {wrong[:5]}")
    new_ids, old_ids = token_correspondence(source.vocab, vocab)
    loaded = {}
    for key, tensor in target.items():
        if key in PER_ITEM:
            continue
        if key in rows:
            merged = tensor.detach().clone()  # tokens the source lacks keep the seeded random start
            merged[torch.as_tensor(new_ids)] = source.state[key][torch.as_tensor(old_ids)].to(merged.dtype)
            loaded[key] = merged
        else:
            loaded[key] = source.state[key]
    model.load_state_dict(loaded, strict=False)
    shared, same = sid_agreement(source.vocab, vocab)
    return WarmStartReport(source=source.name, shared_items=shared, same_sid_items=same,
                           new_items=vocab.n_items - shared, tokens_copied=len(new_ids),
                           tokens_fresh=vocab.vocab_size - len(new_ids), tensors_copied=len(loaded))
