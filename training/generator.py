"""The generative recommender: a seq2seq model that reads SID histories and writes the next item's SID.

- ``arch="t5"`` (default): ``T5ForConditionalGeneration`` sized for CPU training, decoded with the
  trie-constrained, vectorised beam search of ``training.constrained_decoding``.
- ``arch="causal_lm_lora"``: an HF causal LM (from ``causal_lm_path``, or a tiny randomly initialised
  Llama for tests) whose vocabulary is extended by the SID tokens (placed after the LM's own ids),
  with LoRA adapters from ``peft`` when ``lora_r > 0``; decoded with transformers ``generate`` and a
  ``prefix_allowed_tokens_fn`` over the valid SIDs.

``train_generator`` runs supervised training (SFT) with Lightning: validation NDCG@10 / HR@10 from
constrained beam search, best and last checkpoints, early stopping, resume from ``last.ckpt``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import nn
from transformers import (
    T5Config,
    T5ForConditionalGeneration,
    get_constant_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from config_schema import from_mapping, to_mapping
from metrics.ranking import evaluate_rankings
from training.constrained_decoding import BeamResult, constrained_beam_search, decoder_beam_search
from training.distributed import all_reduce_sum, batch_share, gather_rows, trainer_kwargs
from training.item_generator import ItemCausalModel
from training.sequence_data import LABEL_PAD, SampleEncoder, SequenceSample, collate_items, layout_of
from training.settings import DistributedSettings, GeneratorConfig, SequenceSettings
from training.sid_trie import SidTrie
from training.sid_vocab import PAD_ID, SidVocab
from training.warm_start import WarmStartReport, WarmStartSource, warm_start

VAL_NDCG = "val_ndcg@10"
VAL_HR = "val_hr@10"


# --------------------------------------------------------------------------- model construction


def build_t5(vocab: SidVocab, config: GeneratorConfig) -> T5ForConditionalGeneration:
    """A randomly initialised T5 whose vocabulary is exactly the SID vocabulary (seeded)."""
    t5_config = T5Config(
        vocab_size=vocab.vocab_size,
        d_model=config.d_model,
        d_kv=config.d_model // config.num_heads,
        d_ff=config.d_ff,
        num_layers=config.num_encoder_layers,
        num_decoder_layers=config.num_decoder_layers,
        num_heads=config.num_heads,
        dropout_rate=config.dropout,
        feed_forward_proj="relu",
        pad_token_id=vocab.pad_id,
        eos_token_id=vocab.eos_id,
        decoder_start_token_id=vocab.pad_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return T5ForConditionalGeneration(t5_config)


def tiny_causal_lm_config(base_vocab: int = 32, hidden: int = 64, layers: int = 2, heads: int = 4) -> Any:
    """A tiny Llama config for tests of the causal-LM path (random weights, nothing downloaded)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=base_vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
        tie_word_embeddings=False,
    )


class CausalSidLM(nn.Module):
    """An HF causal LM with the SID tokens appended to its vocabulary (LM id = ``offset + SID id``)."""

    def __init__(self, vocab: SidVocab, config: GeneratorConfig, lm_config: Any | None = None) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM

        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            if config.causal_lm_path:
                lm = AutoModelForCausalLM.from_pretrained(config.causal_lm_path, local_files_only=True)
            else:
                lm_config = lm_config or tiny_causal_lm_config(
                    hidden=config.d_model, layers=config.num_decoder_layers, heads=config.num_heads
                )
                lm = AutoModelForCausalLM.from_config(lm_config)
            self.offset = int(lm.get_input_embeddings().num_embeddings)
            lm.resize_token_embeddings(self.offset + vocab.vocab_size, mean_resizing=False)
        if config.lora_r > 0:
            try:
                import peft
            except ImportError as exc:
                raise ImportError(
                    "arch='causal_lm_lora' with lora_r > 0 needs the 'peft' package; "
                    "install it or set lora_r=0"
                ) from exc
            emb_name = _module_name(lm, lm.get_input_embeddings())
            head_name = _module_name(lm, lm.get_output_embeddings())
            lora = peft.LoraConfig(
                r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                target_modules="all-linear", modules_to_save=[emb_name, head_name], task_type="CAUSAL_LM",
            )
            lm = peft.get_peft_model(lm, lora)
        self.lm = lm
        self.pad = self.offset + vocab.pad_id
        self.eos = self.offset + vocab.eos_id

    def joint_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Concatenate prompt and target per row (right-padded); the loss covers the target only."""
        rows, labs = [], []
        for ids, mask, lab in zip(input_ids, attention_mask, labels, strict=True):
            prompt = ids[mask.bool()] + self.offset
            target = lab[lab != LABEL_PAD] + self.offset
            rows.append(torch.cat([prompt, target]))
            labs.append(torch.cat([torch.full_like(prompt, LABEL_PAD), target]))
        width = max(len(r) for r in rows)
        seq = torch.full((len(rows), width), self.pad, dtype=torch.long)
        att = torch.zeros_like(seq)
        lab_out = torch.full_like(seq, LABEL_PAD)
        for i, (r, lab) in enumerate(zip(rows, labs, strict=True)):
            seq[i, : len(r)], att[i, : len(r)], lab_out[i, : len(r)] = r, 1, lab
        return seq, att, lab_out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> Any:
        seq, att, lab = self.joint_batch(input_ids, attention_mask, labels)
        return self.lm(input_ids=seq, attention_mask=att, labels=lab)


def _module_name(root: nn.Module, target: nn.Module) -> str:
    for name, mod in root.named_modules():
        if mod is target:
            return name.split(".")[-1]
    raise ValueError("module not found in model")


def build_model(vocab: SidVocab, config: GeneratorConfig, sequence: SequenceSettings | None = None,
                item_text: np.ndarray | None = None, text_dim: int | None = None) -> nn.Module:
    """The model named by ``config.arch`` (``item_text``/``text_dim``: the items' text embeddings, read by
    ``arch="item_causal"`` with ``history_text``)."""
    if config.arch == "t5":
        return build_t5(vocab, config)
    if config.arch == "item_causal":
        return ItemCausalModel(vocab, config, sequence or SequenceSettings(use_user_interests=False),
                               item_text=item_text, text_dim=text_dim)
    return CausalSidLM(vocab, config)


# --------------------------------------------------------------------------- decoding


class SidPrefixIndex:
    """Valid SID prefixes -> allowed next tokens, and full SIDs -> item index (for ``generate``)."""

    def __init__(self, vocab: SidVocab) -> None:
        self.next: dict[tuple[int, ...], list[int]] = {}
        self.item_of: dict[tuple[int, ...], int] = {}
        allowed: dict[tuple[int, ...], set[int]] = {}
        for idx, item in enumerate(vocab.item_ids):
            toks = [int(t) for t in vocab.item_tokens(item)]
            for j in range(len(toks)):
                allowed.setdefault(tuple(toks[:j]), set()).add(toks[j])
            self.item_of[tuple(toks)] = idx
        self.next = {k: sorted(v) for k, v in allowed.items()}
        self.max_len = max(len(k) for k in self.item_of)


def rank_causal(
    model: CausalSidLM, input_ids: torch.Tensor, attention_mask: torch.Tensor, index: SidPrefixIndex,
    *, beam_width: int, top_k: int,
) -> np.ndarray:
    """Top-``k`` item indices per row from ``generate`` constrained to valid SIDs (-1 pads)."""
    prompts = [ids[m.bool()] + model.offset for ids, m in zip(input_ids, attention_mask, strict=True)]
    width = max(len(p) for p in prompts)
    seq = torch.full((len(prompts), width), model.pad, dtype=torch.long)
    att = torch.zeros_like(seq)
    for i, p in enumerate(prompts):  # left padding, so every row's generation starts at column `width`
        seq[i, width - len(p) :], att[i, width - len(p) :] = p, 1

    def allowed(_batch_id: int, ids: torch.Tensor) -> list[int]:
        gen = tuple(int(t) - model.offset for t in ids[width:])
        nxt = index.next.get(gen)
        return [t + model.offset for t in nxt] if nxt else [model.pad]

    n_ret = min(top_k, beam_width)
    out = model.lm.generate(
        input_ids=seq, attention_mask=att, num_beams=beam_width, num_return_sequences=n_ret,
        max_new_tokens=index.max_len, prefix_allowed_tokens_fn=allowed, do_sample=False,
        eos_token_id=model.eos, pad_token_id=model.pad, early_stopping=True,
    )
    gen = (out[:, width:] - model.offset).view(len(prompts), n_ret, -1).tolist()
    ranked = np.full((len(prompts), top_k), -1, dtype=np.int64)
    eos = model.eos - model.offset
    for b, beams in enumerate(gen):
        seen: list[int] = []
        for toks in beams:
            toks = toks[: toks.index(eos) + 1] if eos in toks else toks
            item = index.item_of.get(tuple(toks), -1)
            if item >= 0 and item not in seen:
                seen.append(item)
        ranked[b, : len(seen)] = seen
    return ranked


# --------------------------------------------------------------------------- Lightning module


class GeneratorModule(L.LightningModule):
    """SFT of the generative recommender; validation ranks the full catalogue with constrained beams.

    The checkpoint describes the model: its SID vocabulary, its ``GeneratorConfig`` (seed included) and the
    ``SequenceSettings`` its inputs were built with (history cap, user-interest tokens, history text), so
    every later stage encodes users exactly as training did without looking anything up elsewhere; an
    ``item_causal`` model with history text carries the items' text embeddings in its weights.
    """

    def __init__(self, vocab: SidVocab | dict, config: GeneratorConfig | dict,
                 sequence: SequenceSettings | dict | None = None, item_text: np.ndarray | None = None,
                 text_dim: int | None = None) -> None:
        super().__init__()
        self.vocab = vocab if isinstance(vocab, SidVocab) else SidVocab.from_dict(vocab)
        self.config = config if isinstance(config, GeneratorConfig) else from_mapping(
            GeneratorConfig, config, where="checkpoint config")
        if sequence is None:  # no text to read unless told: the defaults' history_text needs the item text
            sequence = SequenceSettings(history_text=False)
        self.sequence = sequence if isinstance(sequence, SequenceSettings) else from_mapping(
            SequenceSettings, sequence, where="checkpoint sequence settings")
        # the vocabulary travels in the checkpoint so it reloads alone; kept out of the logger (too big)
        if self.sequence.history_text and self.config.arch != "item_causal":
            raise ValueError(f"history_text=True is read by arch='item_causal' only, not arch={self.config.arch!r}")
        if item_text is not None:  # a tensor: Lightning's hyperparameter bookkeeping compares init args with ==
            item_text = torch.as_tensor(np.asarray(item_text, dtype=np.float32))
            text_dim = int(item_text.shape[1])
        self.text_dim = text_dim
        self.save_hyperparameters(
            {"vocab": self.vocab.to_dict(), "config": to_mapping(self.config),
             "sequence": to_mapping(self.sequence), "text_dim": text_dim}, logger=False
        )
        self.model = build_model(self.vocab, self.config, self.sequence, item_text, text_dim)
        self.trie = SidTrie.from_vocab(self.vocab)
        self._prefix_index: SidPrefixIndex | None = None
        self._val_ranked: list[np.ndarray] = []
        self._val_targets: list[np.ndarray] = []
        self._val_loss_sums: tuple[float, ...] = ()  # multi-process: (loss x tokens, tokens) per batch, flat

    @property
    def layout(self) -> str:
        """The batch layout the model reads (``training.sequence_data.layout_of``)."""
        return layout_of(self.config.arch)

    # -- scoring
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy of the target SID tokens."""
        if self.config.arch == "item_causal":
            return self.model(batch)
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        ).loss

    @torch.no_grad()
    def beam(self, batch: dict[str, torch.Tensor], *, beam_width: int, top_k: int) -> BeamResult:
        """Trie-constrained beam search over a collated batch: ranked items with their log-probabilities
        (``arch="t5"`` and ``"item_causal"``; the causal-LM path ranks through ``generate``, without scores)."""
        was_training = self.model.training
        self.model.eval()
        try:
            if self.config.arch == "item_causal":
                items = batch["items"].to(self.device)
                return decoder_beam_search(self.model.decoder(items), len(items), self.trie, self.vocab,
                                           beam_width=beam_width, top_k=top_k, device=self.device)
            if self.config.arch == "t5":
                return constrained_beam_search(
                    self.model, batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                    self.trie, self.vocab, beam_width=beam_width, top_k=top_k,
                )
            raise NotImplementedError(f"beam scores are not available for arch={self.config.arch!r}")
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def rank(
        self, batch: dict[str, torch.Tensor], *, beam_width: int | None = None, top_k: int | None = None,
    ) -> np.ndarray:
        """Top-k item indices (rows of ``vocab.item_ids``) per row of a collated batch; -1 where fewer exist."""
        beam_width = beam_width or self.config.beam_width
        top_k = top_k or self.config.eval_top_k
        if self.config.arch != "causal_lm_lora":
            res = self.beam(batch, beam_width=beam_width, top_k=top_k)
            return np.asarray(res.item_index.cpu(), dtype=np.int64)
        if self._prefix_index is None:
            self._prefix_index = SidPrefixIndex(self.vocab)
        was_training = self.model.training
        self.model.eval()
        try:
            return rank_causal(self.model, batch["input_ids"].to(self.device),
                               batch["attention_mask"].to(self.device), self._prefix_index,
                               beam_width=beam_width, top_k=top_k)
        finally:
            self.model.train(was_training)

    def rank_padded(self, batch: dict[str, torch.Tensor], depth: int, beam_width: int | None = None) -> np.ndarray:
        """Like :meth:`rank`, ``depth`` columns wide even when the beam is narrower (-1 fills the rest)."""
        beam_width = beam_width or self.config.beam_width
        ranked = self.rank(batch, beam_width=beam_width, top_k=min(depth, beam_width))
        if ranked.shape[1] < depth:
            ranked = np.pad(ranked, ((0, 0), (0, depth - ranked.shape[1])), constant_values=-1)
        return ranked

    # -- Lightning hooks
    def on_fit_start(self) -> None:
        if self.logger is not None:
            self.logger.log_hyperparams({**asdict(self.config), **asdict(self.sequence)})

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # dropout draws from a per-step seed, so a run resumed from a checkpoint equals an uninterrupted one
        torch.manual_seed(self.config.seed * 1_000_003 + self.global_step)

    @property
    def multi_process(self) -> bool:
        """Training under DDP with more than one process (the batch is a share of the global batch)."""
        return self._trainer is not None and self.trainer.world_size > 1

    def target_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """How many target tokens the batch's mean loss averages over."""
        if "labels" in batch:
            return (batch["labels"] != LABEL_PAD).sum()
        targets = batch["items"][:, 1:]  # item chunks: every real position after the first is a target
        return (self.model.sid_tokens[targets[targets >= 0]] != PAD_ID).sum()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        rows = len(next(iter(batch.values())))
        if self.multi_process:  # the gradient of the global batch's mean, not the mean of the ranks' means
            weight, rows = batch_share(self.target_tokens(batch), rows, loss.device)
            loss = loss * weight.to(loss.dtype)
        self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=rows, sync_dist=self.multi_process)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self.multi_process:  # summed over the ranks at the epoch's end (ranks may hold unequal batch counts)
            tokens = float(self.target_tokens(batch))
            self._val_loss_sums += float(self(batch)) * tokens, tokens
        else:
            self.log("val_loss", self(batch), on_epoch=True, batch_size=len(batch["target_index"]))
        # NDCG@10 is the monitored metric: rank 10 deep (slots beyond the beam count as misses)
        depth = max(10, self.config.eval_top_k)
        self._val_ranked.append(self.rank_padded(batch, depth))
        self._val_targets.append(batch["target_index"].cpu().numpy())

    def on_validation_epoch_end(self) -> None:
        if not self._val_ranked and not self.multi_process:
            return
        # every rank ranked its shard of the users: the metric is computed over all of them, on every rank alike
        depth = max(10, self.config.eval_top_k)
        ranked, targets = gather_rows(self._val_ranked, width=depth), gather_rows(self._val_targets)
        self._val_ranked, self._val_targets = [], []
        if self.multi_process:
            # the mean over every rank's target tokens: one process logs the row-weighted mean of its batches' means,
            # the same value when validation is one batch (the default eval batch holds 128 users)
            sums = all_reduce_sum(torch.tensor([sum(self._val_loss_sums[0::2]), sum(self._val_loss_sums[1::2])],
                                               dtype=torch.float64, device=self.device))
            self._val_loss_sums = ()
            if float(sums[1]) > 0:
                self.log("val_loss", float(sums[0] / sums[1]), sync_dist=True)
        if not len(targets):
            return
        ks = sorted({5, 10, self.config.eval_top_k})
        for name, value in evaluate_rankings(ranked, targets, ks=ks).items():
            self.log(f"val_{name}", value, prog_bar=name == "ndcg@10", sync_dist=self.multi_process)

    def configure_optimizers(self) -> Any:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.config.lr,
        )
        # the schedule always spans config.max_epochs, so a run stopped early and resumed later follows
        # the same learning-rate curve as an uninterrupted one
        per_epoch = self.trainer.estimated_stepping_batches / max(1, self.trainer.max_epochs)
        total = max(1, math.ceil(per_epoch * self.config.max_epochs))
        warmup = int(self.config.warmup_ratio * total)
        if self.config.lr_schedule == "constant":
            sched = get_constant_schedule_with_warmup(opt, warmup)
        else:
            sched = get_linear_schedule_with_warmup(opt, warmup, total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def load_generator(checkpoint_path: str | Path) -> GeneratorModule:
    """Load the policy of an SFT or GRPO checkpoint as a ``GeneratorModule`` (CPU, eval mode)."""
    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    hp = ckpt.get("hyper_parameters", {})
    missing = [k for k in ("vocab", "config", "sequence") if k not in hp]
    if missing:
        raise ValueError(f"{checkpoint_path} is not a self-describing generator checkpoint (no {missing} "
                         "hyperparameters); retrain it")
    module = GeneratorModule(hp["vocab"], hp["config"], hp["sequence"], text_dim=hp.get("text_dim"))
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    module.model.load_state_dict(state)
    return module.eval()


# --------------------------------------------------------------------------- training


class MetricHistory(Callback):
    """Validation metrics per epoch; stored in checkpoints so a resumed run keeps its full history."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": float(trainer.current_epoch), "global_step": float(trainer.global_step)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")})
        self.history.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])


@dataclass
class TrainResult:
    """Where training left its checkpoints and what it measured."""

    best_checkpoint: str
    last_checkpoint: str
    best_val_ndcg: float
    epochs_completed: int
    global_step: int
    resumed_from: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    warm_start: WarmStartReport | None = None  # what a warm start carried over (None: random start or resumed)


def make_trainer(
    config: GeneratorConfig,
    checkpoint_dir: str | Path,
    max_epochs: int,
    logger: Any,
    callbacks: list[Callback],
    *,
    distributed: DistributedSettings | None = None,
    **overrides: Any,
) -> L.Trainer:
    """A deterministic trainer (on CPU) that writes checkpoints only under ``checkpoint_dir``, on the processes
    ``distributed`` names (default ``config.distributed``; GRPO passes its own)."""
    kwargs: dict[str, Any] = {
        "gradient_clip_val": config.gradient_clip_val,
        "check_val_every_n_epoch": config.val_every_n_epochs,
        **overrides,
    }
    return L.Trainer(
        **trainer_kwargs(distributed or config.distributed, config.accelerator), max_epochs=max_epochs,
        logger=logger if logger is not None else False, callbacks=callbacks,
        # CUDA lacks deterministic kernels for some ops: warn there instead of failing
        deterministic=True if config.accelerator == "cpu" else "warn", **kwargs,
        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(checkpoint_dir), log_every_n_steps=10,
    )


def checkpoint_callbacks(checkpoint_dir: str | Path, prefix: str) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """Best-by-validation-NDCG@10 checkpoint, and ``last.ckpt`` rewritten after every epoch.

    ``save_last=True`` is not used: since Lightning 2.6 it only writes when the monitored metric
    improved, which would leave a stale ``last.ckpt`` to resume from.
    """
    best = ModelCheckpoint(
        dirpath=checkpoint_dir, filename=f"{prefix}-epoch{{epoch:03d}}", auto_insert_metric_name=False,
        monitor=VAL_NDCG, mode="max", save_top_k=1,
    )
    last = ModelCheckpoint(
        dirpath=checkpoint_dir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
        save_on_train_epoch_end=True, enable_version_counter=False,
    )
    return best, last


def train_generator(
    datamodule: L.LightningDataModule,
    vocab: SidVocab,
    config: GeneratorConfig,
    *,
    sequence: SequenceSettings | None = None,
    logger: Any = None,
    checkpoint_dir: str | Path,
    resume: bool = True,
    max_epochs: int | None = None,
    item_text: np.ndarray | None = None,
    warm_start_from: WarmStartSource | None = None,
) -> TrainResult:
    """Supervised training (SFT) with early stopping on validation NDCG@10.

    ``warm_start_from``: a trained generator whose weights the model starts from (``training.warm_start``;
    raises ``WarmStartError`` when they cannot seed it); ignored when the run resumes from its own checkpoint.

    ``item_text`` [n_items, dim] (``vocab.item_ids`` order): the items' text embeddings, needed by
    ``arch="item_causal"`` with ``sequence.history_text`` (they travel in the checkpoint).

    ``sequence`` (default: the datamodule's history cap, no other change) is stored in the checkpoint; it
    must describe the datamodule's windows. ``max_epochs`` (default ``config.max_epochs``) stops the trainer
    after that many epochs in total; with ``resume=True`` a ``last.ckpt`` in ``checkpoint_dir`` is continued
    from its epoch and step.
    """
    dm_cap = getattr(datamodule, "max_history", None)
    if sequence is None:
        sequence = SequenceSettings(max_history=dm_cap or SequenceSettings().max_history,
                                    use_user_interests=bool(getattr(datamodule, "user_prefix", None)),
                                    history_text=item_text is not None)
    if dm_cap is not None and dm_cap != sequence.max_history:
        raise ValueError(f"the datamodule's windows use max_history={dm_cap}, the sequence settings say "
                         f"{sequence.max_history}: build the datamodule from the settings")
    if len(datamodule.val_dataloader().dataset) == 0:
        raise ValueError("no validation samples: early stopping on validation NDCG@10 needs them")
    L.seed_everything(config.seed, workers=True, verbose=False)
    checkpoint_dir = Path(checkpoint_dir)
    last = checkpoint_dir / "last.ckpt"
    resume_from = str(last) if resume and last.exists() else None
    if layout_of(config.arch) != getattr(datamodule, "layout", "windows"):
        raise ValueError(f"arch={config.arch!r} reads the {layout_of(config.arch)!r} layout, the datamodule serves "
                         f"{getattr(datamodule, 'layout', 'windows')!r}: build it with layout=layout_of(arch)")
    module = GeneratorModule(vocab, config, sequence, item_text=item_text)
    report = None
    if warm_start_from is not None and resume_from is None:
        report = warm_start(module.model, vocab, config, module.sequence, warm_start_from,
                            min_same_sid_share=config.warm_start_min_same_sid, text_dim=module.text_dim)
    ckpt_cb, last_cb = checkpoint_callbacks(checkpoint_dir, "best")
    history = MetricHistory()
    callbacks: list[Callback] = [
        ckpt_cb, last_cb, EarlyStopping(monitor=VAL_NDCG, mode="max", patience=config.patience), history
    ]
    trainer = make_trainer(config, checkpoint_dir, max_epochs or config.max_epochs, logger, callbacks,
                           limit_train_batches=config.max_batches_per_epoch or 1.0)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    best = ckpt_cb.best_model_score
    return TrainResult(
        best_checkpoint=ckpt_cb.best_model_path,
        last_checkpoint=str(last),
        best_val_ndcg=float(best) if best is not None else float("nan"),
        epochs_completed=trainer.current_epoch,
        global_step=trainer.global_step,
        resumed_from=resume_from,
        history=list(history.history),
        warm_start=report,
    )


# --------------------------------------------------------------------------- inference


def rank_loader(module: GeneratorModule, loader: Any, *, exclude: Sequence[Sequence[int]] | None = None,
                **kw: Any) -> tuple[np.ndarray, np.ndarray]:
    """Ranked item indices [n, top_k] and target indices [n] over a loader of collated batches.

    ``exclude``: per row of the loader (in order), item indices to leave out of that row's ranking (the user's
    seen items); the rows are then ranked by :func:`rank_unseen` and still hold ``top_k`` items where the
    catalogue has them. ``None`` (default) ranks exactly as before.
    """
    if exclude is not None and kw.get("beam_width") is None:
        kw["beam_width"] = module.config.beam_width
    if exclude is not None and kw.get("top_k") is None:
        kw["top_k"] = module.config.eval_top_k
    ranked, targets, start = [], [], 0
    for batch in loader:
        if exclude is None:
            ranked.append(module.rank(batch, **kw))
        else:
            n = len(batch["target_index"])
            ranked.append(rank_unseen(module, batch, exclude[start : start + n], **kw)[0])
            start += n
        targets.append(batch["target_index"].numpy())
    if exclude is not None and start != len(exclude):
        raise ValueError(f"exclude has {len(exclude)} rows, the loader {start}")
    return np.concatenate(ranked), np.concatenate(targets)


def rank_unseen(module: GeneratorModule, batch: dict[str, torch.Tensor], seen: Sequence[Sequence[int]], *,
                beam_width: int, top_k: int, scores: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Top-``top_k`` item indices per row of ``batch`` with the row's ``seen`` item indices removed (and, with
    ``scores``, their beam log-probabilities; -1 / -inf where fewer items exist).

    A row is decoded ``beam_width + len(history)`` wide (the history the model reads, at most its cap), so
    ``top_k`` items normally remain once its seen items are dropped; a row still short of them while the
    catalogue has more is decoded again twice as wide, up to the whole catalogue. A row's width depends on its
    own history only, so its ranking does not depend on the other rows of the batch. The removal is
    :func:`evaluation.protocol.kept_columns`, the one the baselines' rankings go through.
    """
    from evaluation.protocol import kept_columns

    n, n_items = len(seen), module.vocab.n_items
    if n != len(next(iter(batch.values()))):
        raise ValueError(f"seen has {n} rows, the batch {len(next(iter(batch.values())))}")
    if scores and module.config.arch == "causal_lm_lora":
        raise NotImplementedError("beam scores are not available for arch='causal_lm_lora'")
    seen = [np.unique(np.asarray(s, dtype=np.int64)) for s in seen]
    n_seen = np.fromiter((s.size for s in seen), dtype=np.int64, count=n)
    need = np.minimum(top_k, n_items - n_seen)  # what the catalogue can give once the seen items are gone
    base = max(beam_width, top_k)
    width = np.minimum(n_items, base + np.minimum(n_seen, module.sequence.max_history))
    width = np.maximum(width, top_k)
    out_items = np.full((n, top_k), -1, dtype=np.int64)
    out_scores = np.full((n, top_k), -np.inf) if scores else None
    pending = np.arange(n)
    while pending.size:
        still = []
        for w in np.unique(width[pending]):
            rows = pending[width[pending] == w]
            sub = batch if rows.size == n else {key: value[torch.as_tensor(rows)] for key, value in batch.items()}
            if scores:
                res = module.beam(sub, beam_width=int(w), top_k=int(w))
                items, row_scores = res.item_index.cpu().numpy().astype(np.int64), res.scores.cpu().numpy()
            else:
                items, row_scores = module.rank(sub, beam_width=int(w), top_k=int(w)), None
            cols = kept_columns(items, [seen[r] for r in rows], top_k)
            got = (cols >= 0).sum(axis=1)
            done = (got >= need[rows]) | (w >= n_items)
            safe = np.maximum(cols, 0)
            out_items[rows] = np.where(cols >= 0, np.take_along_axis(items, safe, axis=1), -1)
            if scores:
                out_scores[rows] = np.where(cols >= 0, np.take_along_axis(row_scores, safe, axis=1), -np.inf)
            still.append(rows[~done])
        pending = np.sort(np.concatenate(still))  # sorted: a full set of rows is the batch itself
        width[pending] = np.minimum(n_items, 2 * width[pending])
    return out_items, out_scores


def recommend(
    module: GeneratorModule,
    samples: Sequence[SequenceSample],
    trie: SidTrie | None = None,
    vocab: SidVocab | None = None,
    k: int = 10,
    *,
    user_prefix: dict[str, Sequence[int]] | None = None,
    batch_size: int = 64,
    beam_width: int | None = None,
    exclude: Sequence[Sequence[str]] | None = None,
) -> list[list[str]]:
    """Top-``k`` recommended item ids per sample (best first) by constrained beam search.

    ``trie``/``vocab`` are checked against the module's own (which travel in its checkpoint) and must
    describe the same vocabulary; decoding uses the module's. ``exclude``: per sample, item ids never to
    recommend (e.g. everything the user has seen, not only the capped history the model reads); the lists
    still hold ``k`` items where the catalogue has them (:func:`rank_unseen`).
    """
    vocab = vocab or module.vocab
    if vocab.vocab_size != module.vocab.vocab_size or vocab.item_ids != module.vocab.item_ids:
        raise ValueError(
            f"vocab (size {vocab.vocab_size}, {vocab.n_items} items) differs from the model's "
            f"(size {module.vocab.vocab_size}, {module.vocab.n_items} items)"
        )
    if trie is not None and (trie.vocab_size != vocab.vocab_size or trie.n_items != vocab.n_items):
        raise ValueError(f"trie ({trie.n_items} items) was not built from the model's vocabulary")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if exclude is not None and len(exclude) != len(samples):
        raise ValueError(f"exclude has {len(exclude)} entries for {len(samples)} samples")
    beam_width = max(beam_width or module.config.beam_width, k)
    encoder = SampleEncoder(vocab, user_prefix)
    index = {item: i for i, item in enumerate(vocab.item_ids)}
    out: list[list[str]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = encode_histories(module, encoder, [s.user_id for s in chunk], [s.history for s in chunk])
        if exclude is None:
            ranked = module.rank(batch, beam_width=beam_width, top_k=k)
        else:
            seen = [[index[i] for i in items if i in index] for items in exclude[start : start + batch_size]]
            ranked, _ = rank_unseen(module, batch, seen, beam_width=beam_width, top_k=k)
        out.extend([[vocab.item_ids[i] for i in row if i >= 0] for row in ranked])
    return out


def encode_histories(module: GeneratorModule, encoder: SampleEncoder, users: Sequence[str],
                     histories: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
    """A batch of histories (each cut to the model's history cap) in the layout the module reads."""
    cap = module.sequence.max_history
    histories = [list(h)[-cap:] if cap else list(h) for h in histories]
    if module.layout == "items":
        return collate_items([{"items": [encoder.item_index(i) for i in h]} for h in histories])
    inputs = [encoder.encode_input(u, h) for u, h in zip(users, histories, strict=True)]
    width = max(len(x) for x in inputs)
    input_ids = torch.full((len(inputs), width), module.vocab.pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, x in enumerate(inputs):
        input_ids[i, : len(x)], mask[i, : len(x)] = torch.tensor(x), 1
    return {"input_ids": input_ids, "attention_mask": mask}


def evaluate_generator(
    module: GeneratorModule, loader: Any, *, ks: Sequence[int] = (5, 10), beam_width: int | None = None
) -> dict[str, float]:
    """HR@K / NDCG@K of the module over a loader (full ranking, constrained beam search)."""
    ranked, targets = [], []
    for batch in loader:
        ranked.append(module.rank_padded(batch, max(ks), beam_width))
        targets.append(batch["target_index"].numpy())
    return evaluate_rankings(np.concatenate(ranked), np.concatenate(targets), ks=ks)

