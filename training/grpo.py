"""GRPO fine-tuning of the SFT generator with the interest-aware reward.

Per batch of users: draw a group of ``G`` valid SIDs per user from the current policy (eval mode, no grad),
score them with :func:`training.rewards.interest_aware_reward`, normalise the rewards within each group into
advantages, then take ``updates_per_batch`` optimiser steps on the PPO clipped surrogate minus ``β·KL`` (k3
estimator, per token) to the frozen SFT reference. Log-probabilities are the policy's own (unconstrained)
token log-probabilities, for the old, new and reference models alike.

The group (``GRPOConfig.rollout``):

- ``"beam"`` (default): the top-``G`` distinct valid items of the policy's trie-constrained beam search
  (width ``G``), the list the model would recommend. Every candidate is a different item, so the group
  ranks the target against the policy's own strongest competitors instead of spending draws on duplicates
  of the mode. Users for whom the search finds fewer than ``G`` items (a catalogue smaller than ``G``) keep
  the ones found: the missing slots are masked out of the normalisation and the loss, and a user with fewer
  than two found candidates contributes nothing.
- ``"sample"``: ``G`` trie-constrained samples with replacement at ``temperature`` (the original rollout).

``train_grpo`` keeps the SFT model when the best validation NDCG@10 of GRPO (validated every
``val_check_interval`` of an epoch) is below SFT's (RL can lower ranking quality even while the reward rises).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from config_schema import from_mapping, to_mapping
from training.constrained_decoding import constrained_sample, decoder_sample
from training.distributed import all_reduce_sum
from training.generator import (
    GeneratorConfig,
    GeneratorModule,
    MetricHistory,
    checkpoint_callbacks,
    evaluate_generator,
    load_generator,
    make_trainer,
)
from training.rewards import RewardBreakdown, interest_aware_reward
from training.sequence_data import LABEL_PAD
from training.settings import GRPOConfig, SequenceSettings
from training.sid_vocab import SidVocab


def quality_vector(vocab: SidVocab, item_quality: dict[str, float] | list[float]) -> torch.Tensor:
    """Item quality in ``vocab.item_ids`` order; items without a value get 0."""
    if isinstance(item_quality, dict):
        values = [float(item_quality.get(item, 0.0)) for item in vocab.item_ids]
    else:
        values = [float(v) for v in item_quality]
        if len(values) != len(vocab.item_ids):
            raise ValueError(f"item_quality has {len(values)} values for {len(vocab.item_ids)} items")
    q = torch.tensor(values, dtype=torch.float32)
    if torch.isnan(q).any() or (q < 0).any() or (q > 1).any():
        raise ValueError("item quality must lie in [0, 1]")
    return q


def sequence_token_logprobs(
    model: Any, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor, tokens: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities [N, T] of ``tokens`` under a T5 model, and the mask of real tokens."""
    labels = tokens.masked_fill(tokens == pad_id, LABEL_PAD)
    decoder_input = model.prepare_decoder_input_ids_from_labels(labels=labels)
    out = model(
        encoder_outputs=(encoder_hidden,), attention_mask=encoder_mask, decoder_input_ids=decoder_input
    )
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    token_logp = logp.gather(-1, tokens.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return token_logp, tokens != pad_id


@torch.no_grad()
def sample_rewards(
    module: GeneratorModule,
    batch: dict[str, torch.Tensor],
    item_quality: torch.Tensor,
    config: GRPOConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, RewardBreakdown]:
    """The group of ``config.group_size`` valid SIDs per row (policy in eval mode), drawn as
    ``config.rollout`` says, scored with ``config.reward`` in ``config.reward_shape``.

    Returns tokens [B, G, T], item indices [B, G] (beam: -1 and pad tokens in the slots the search did not
    fill; sample: always valid) and the reward breakdown [B, G]. ``generator`` seeds sampling (unused by beam).
    """
    if config.rollout == "beam":
        res = module.beam(batch, beam_width=config.group_size, top_k=config.group_size)
        # beam search runs in inference mode: clone so the tokens can index a later forward with grad
        tokens, items = res.tokens.clone().long(), res.item_index.clone().long()
    else:
        tokens, items = _sample_group(module, batch, config, generator)
    target_tokens = batch["labels"].masked_fill(batch["labels"] == LABEL_PAD, module.vocab.pad_id)
    target = batch["target_index"]
    rewards = interest_aware_reward(
        tokens, items, target_tokens, target, item_quality[target],
        levels=module.vocab.levels, config=config.reward, shape=config.reward_shape,
    )
    return tokens, items, rewards


def _sample_group(
    module: GeneratorModule, batch: dict[str, torch.Tensor], config: GRPOConfig, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rollout="sample"``: tokens [B, G, T] and items [B, G] of trie-constrained samples with replacement."""
    if module.config.arch == "item_causal":
        was_training = module.model.training
        module.model.eval()
        try:
            res = decoder_sample(module.model.decoder(batch["items"]), len(batch["items"]), module.trie,
                                 module.vocab, num_samples=config.group_size, temperature=config.temperature,
                                 generator=generator, device=batch["items"].device)
        finally:
            module.model.train(was_training)
    else:
        res = constrained_sample(
            module.model, batch["input_ids"], batch["attention_mask"], module.trie, module.vocab,
            num_samples=config.group_size, temperature=config.temperature, generator=generator,
        )
    return torch.as_tensor(res.tokens).long(), torch.as_tensor(res.item_index).long()


def group_advantages(
    reward: torch.Tensor, found: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages ``(r − mean) / (std + eps)`` [B, G] within each row's found candidates (unbiased std), and
    the weight [B, G] of each candidate in the loss: 1 for a found candidate of a row with at least two found,
    0 otherwise (a lone candidate has nothing to be ranked against). With every candidate found this is
    exactly the plain per-row normalisation."""
    if bool(found.all()):
        adv = (reward - reward.mean(dim=1, keepdim=True)) / (reward.std(dim=1, keepdim=True) + eps)
        return adv, torch.ones_like(reward)
    f = found.float()
    n = f.sum(dim=1, keepdim=True)
    mean = (reward * f).sum(dim=1, keepdim=True) / n.clamp(min=1)
    var = (((reward - mean) * f) ** 2).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)
    weight = f * (n >= 2).float()
    adv = (reward - mean) / (var.sqrt() + eps) * weight
    return adv, weight


class GRPOModule(GeneratorModule):
    """The SFT generator plus a frozen reference copy, trained with GRPO (manual optimisation)."""

    def __init__(
        self,
        vocab: SidVocab | dict,
        config: GeneratorConfig | dict,
        grpo: GRPOConfig | dict,
        item_quality: dict[str, float] | list[float],
        sequence: SequenceSettings | dict | None = None,
        text_dim: int | None = None,
    ) -> None:
        super().__init__(vocab, config, sequence, text_dim=text_dim)
        if self.config.arch not in ("t5", "item_causal"):
            raise NotImplementedError("GRPO is implemented for arch='t5' and arch='item_causal' only")
        self.grpo = grpo if isinstance(grpo, GRPOConfig) else from_mapping(GRPOConfig, grpo, where="checkpoint grpo")
        self.register_buffer("item_quality", quality_vector(self.vocab, item_quality))
        self.save_hyperparameters(
            {
                "vocab": self.vocab.to_dict(),
                "config": to_mapping(self.config),
                "sequence": to_mapping(self.sequence),
                "grpo": to_mapping(self.grpo),
                "item_quality": self.item_quality.tolist(),
                "text_dim": text_dim,
            },
            logger=False,
        )
        self.reference = copy.deepcopy(self.model)
        self.reference.requires_grad_(False)
        self.automatic_optimization = False

    @classmethod
    def from_sft_checkpoint(
        cls, sft_checkpoint: str | Path, grpo: GRPOConfig, item_quality: dict[str, float] | list[float]
    ) -> GRPOModule:
        """Policy and frozen reference both initialised from an SFT checkpoint (vocab and config too)."""
        sft = load_generator(sft_checkpoint)
        module = cls(sft.vocab, sft.config, grpo, item_quality, sft.sequence, text_dim=sft.text_dim)
        module.load_policy(sft.model.state_dict())
        return module

    def load_policy(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Start from SFT weights: policy and reference both get ``state_dict``."""
        self.model.load_state_dict(state_dict)
        self.reference.load_state_dict(state_dict)

    def on_fit_start(self) -> None:
        if self.logger is not None:
            grpo = {f"grpo_{k}": v for k, v in asdict(self.grpo).items()}
            self.logger.log_hyperparams({**asdict(self.config), **grpo})

    @torch.no_grad()
    def sample_group(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, RewardBreakdown]:
        """The group of ``G`` SIDs per row from the current policy, scored (see :func:`sample_rewards`)."""
        return sample_rewards(self, batch, self.item_quality, self.grpo, generator)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # seeded by step, so sampling is reproducible and unaffected by resuming (beam rollouts are deterministic)
        gen = torch.Generator(device=self.device).manual_seed(self.grpo.seed * 1_000_003 + self.global_step)
        tokens, items, rewards = self.sample_group(batch, gen)
        b, g, t = tokens.shape
        found = items >= 0 if self.grpo.rollout == "beam" else torch.ones_like(items, dtype=torch.bool)
        adv, weight = group_advantages(rewards.total, found, self.grpo.adv_eps)
        adv, weight = adv.reshape(-1), weight.reshape(-1)
        n_seq, logged_rows = weight.sum().clamp(min=1), b
        if self.multi_process:
            # divide by the global batch's candidates over the world: DDP averages the ranks' gradients, so their
            # mean is the single-process gradient of the global mean
            totals = all_reduce_sum(torch.stack([weight.sum().detach(), torch.tensor(float(b), device=weight.device)]))
            n_seq = totals[0].clamp(min=1) / self.trainer.world_size
            logged_rows = int(totals[1])  # every rank logs the global rows, so Lightning averages them fairly
        flat = tokens.reshape(b * g, t)
        with torch.no_grad():
            ref_lp, mask = self._group_logprobs(self.reference, batch, flat, g)
        maskf = mask.float() * weight[:, None]  # tokens of unfound candidates (all pad) never count
        n_tok = maskf.sum(dim=1).clamp(min=1)
        opt = self.optimizers()
        stats: dict[str, float] = {}
        old_lp: torch.Tensor | None = None
        for _ in range(self.grpo.updates_per_batch):
            new_lp, _ = self._group_logprobs(self.model, batch, flat, g)
            if old_lp is None:  # the weights that sampled the group: no extra forward needed
                old_lp = new_lp.detach()
            ratio = torch.exp(new_lp - old_lp)
            surr = torch.minimum(
                ratio * adv[:, None],
                ratio.clamp(1 - self.grpo.clip_eps, 1 + self.grpo.clip_eps) * adv[:, None],
            )
            d = ref_lp - new_lp
            kl = torch.exp(d) - d - 1  # k3: unbiased, non-negative estimate of KL(policy || reference)
            per_seq = ((surr - self.grpo.kl_beta * kl) * maskf).sum(dim=1) / n_tok
            loss = -(per_seq * weight).sum() / n_seq
            opt.zero_grad()
            self.manual_backward(loss)
            self.clip_gradients(opt, gradient_clip_val=self.grpo.gradient_clip_val, gradient_clip_algorithm="norm")
            opt.step()
            clipped = ((ratio - 1).abs() > self.grpo.clip_eps).float()
            stats = {
                "loss": float(loss.detach()),
                "kl": float(((kl.detach() * maskf).sum(1) / n_tok * weight).sum() / n_seq),
                "clip_frac": float((clipped * maskf).sum() / maskf.sum().clamp(min=1)),
            }
        logs = {f"grpo/reward_{k}": v for k, v in rewards.means(found).items()}
        logs["grpo/group_found"] = float(found.float().sum(dim=1).mean())
        logs.update({f"grpo/{k}": v for k, v in stats.items()})
        self.log_dict(logs, on_step=True, on_epoch=True, batch_size=logged_rows, sync_dist=self.multi_process)
        return torch.tensor(stats["loss"])

    def _group_logprobs(
        self, model: Any, batch: dict[str, torch.Tensor], flat: torch.Tensor, g: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities [B * g, T] of the group's SIDs under ``model`` (policy or reference),
        and the mask of real tokens."""
        model.eval()  # no dropout: old, new and reference log-probs must come from the same function
        if self.config.arch == "item_causal":
            return model.token_logprobs(batch["items"], flat, g), flat != self.vocab.pad_id
        enc = model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        hidden = enc.last_hidden_state.repeat_interleave(g, dim=0)
        enc_mask = batch["attention_mask"].repeat_interleave(g, dim=0)
        return sequence_token_logprobs(model, hidden, enc_mask, flat, self.vocab.pad_id)

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.grpo.lr, weight_decay=self.grpo.weight_decay,
        )


@dataclass
class GRPOResult:
    """Which model to use downstream and the evidence for that choice."""

    kept: Literal["sft", "grpo"]
    checkpoint: str
    grpo_checkpoint: str
    sft_val_ndcg: float
    grpo_val_ndcg: float
    sft_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def train_grpo(
    sft_checkpoint: str | Path,
    datamodule: L.LightningDataModule,
    vocab: SidVocab,
    item_quality: dict[str, float],
    config: GRPOConfig,
    *,
    logger: Any = None,
    checkpoint_dir: str | Path,
    max_epochs: int | None = None,
    resume: bool = True,
) -> GRPOResult:
    """GRPO from an SFT checkpoint; returns ``kept="sft"`` when validation NDCG@10 got worse.

    Validation runs every ``config.val_check_interval`` of an epoch (of every ``val_every_n_epochs``-th epoch);
    the best validated policy is the GRPO checkpoint."""
    sft = load_generator(sft_checkpoint)
    if sft.config.accelerator != "cpu" and torch.cuda.is_available():
        sft = sft.to("cuda")  # the baseline evaluation runs where training does
    if sft.vocab.item_ids != vocab.item_ids or sft.vocab.vocab_size != vocab.vocab_size:
        raise ValueError("the SFT checkpoint was trained on a different SID vocabulary than the one given")
    if len(datamodule.val_dataloader().dataset) == 0:
        raise ValueError("no validation samples: GRPO compares validation NDCG@10 with the SFT model")
    L.seed_everything(config.seed, workers=True, verbose=False)
    sft_metrics = evaluate_generator(sft, datamodule.val_dataloader(), ks=(5, 10))

    module = GRPOModule.from_sft_checkpoint(sft_checkpoint, config, item_quality)
    checkpoint_dir = Path(checkpoint_dir)
    last = checkpoint_dir / "last.ckpt"
    ckpt_cb, last_cb = checkpoint_callbacks(checkpoint_dir, "grpo")
    history = MetricHistory()
    callbacks: list[Callback] = [ckpt_cb, last_cb, history]
    trainer = make_trainer(
        sft.config, checkpoint_dir, max_epochs or config.max_epochs, logger, callbacks,
        distributed=config.distributed, gradient_clip_val=None, check_val_every_n_epoch=config.val_every_n_epochs,
        val_check_interval=float(config.val_check_interval),
        limit_train_batches=config.max_batches_per_epoch or 1.0,
    )
    if logger is not None:
        logger.log_metrics({f"sft_val_{k}": v for k, v in sft_metrics.items()}, step=0)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume and last.exists() else None)

    best = ckpt_cb.best_model_score
    grpo_ndcg = float(best) if best is not None else float("-inf")
    sft_ndcg = sft_metrics["ndcg@10"]
    kept: Literal["sft", "grpo"] = "sft" if grpo_ndcg < sft_ndcg else "grpo"
    return GRPOResult(
        kept=kept,
        checkpoint=str(sft_checkpoint) if kept == "sft" else ckpt_cb.best_model_path,
        grpo_checkpoint=ckpt_cb.best_model_path,
        sft_val_ndcg=sft_ndcg,
        grpo_val_ndcg=grpo_ndcg,
        sft_metrics=sft_metrics,
        history=list(history.history),
    )
