"""The interest-aware GRPO reward, vectorised over a batch of candidate groups (two shapes, see
:func:`interest_aware_reward`).

- hit (``exact``): the candidate SID decodes to the target item (suffix included, so colliding items differ);
- valid: the candidate is a complete SID of some catalogue item;
- LCP: length of the common prefix of the candidate and target *level codes* (suffix excluded), so a
  candidate that gets the coarse levels right earns partial credit;
- q_target: the deep-interest quality of the target item (``interest_rewards``), 0 when unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from training.settings import RewardConfig


@dataclass
class RewardBreakdown:
    """Each term's contribution ([B, G], weights applied) and their sum."""

    exact: torch.Tensor
    valid: torch.Tensor
    prefix: torch.Tensor
    quality: torch.Tensor
    total: torch.Tensor

    def means(self, mask: torch.Tensor | None = None) -> dict[str, float]:
        """Batch means of every term, for logging; with ``mask`` [B, G], over its True entries only (the
        candidates a beam rollout found)."""
        names = ("exact", "valid", "prefix", "quality", "total")
        if mask is None:
            return {k: float(getattr(self, k).float().mean()) for k in names}
        m = mask.float()
        n = m.sum().clamp(min=1)
        return {k: float((getattr(self, k).float() * m).sum() / n) for k in names}


def interest_aware_reward(
    sample_tokens: torch.Tensor,
    sample_item: torch.Tensor,
    target_tokens: torch.Tensor,
    target_item: torch.Tensor,
    target_quality: torch.Tensor,
    *,
    levels: int,
    config: RewardConfig | None = None,
    shape: Literal["exact", "rank"] = "exact",
) -> RewardBreakdown:
    """Rewards of ``G`` candidate SIDs for each of ``B`` users.

    With ``hit = 1[candidate item == target item]``, ``valid = 1[candidate is a catalogue SID]``,
    ``pref = LCP(candidate levels, target levels) / levels`` and ``q = q_target``:

    - ``shape="exact"`` (the paper's sum, the original GRPO reward)::

          r = hit + λ_valid·valid + λ_pref·pref + α·q·hit

      a hit also collects the valid and full prefix credit: ``1 + λ_valid + λ_pref + α·q``.
    - ``shape="rank"`` (rank-aware; the recommended one)::

          r = hit·(1 + α·q) + (1 − hit)·(λ_valid·valid + λ_pref·pref)

      the target earns ``1 + α·q`` and nothing else; a miss earns only its validity and prefix partial
      credit, never ``q``. With ``λ_valid + λ_pref < 1`` every miss earns less than the hit, so after GRPO's
      normalisation within the group (advantage ``(r − mean) / std``) the target is the only candidate pushed
      up and the misses are pushed down, the more the less of the target's prefix they share: over a group
      that is the policy's own top list (beam rollouts) this is a listwise push of the target up the
      ranking. ``q`` scales how hard a hit is pushed, and a miss's reward does not depend on ``q``.

    In both shapes ``q`` is paid on a hit only. ``sample_tokens`` [B, G, T] and ``target_tokens`` [B, T'] hold
    SID tokens from the first level on (anything after the first ``levels`` positions is ignored for the
    prefix term); ``sample_item`` [B, G] is the decoded item index (-1 = not a valid SID); ``target_item``
    [B] the target's index; ``target_quality`` [B] its quality in [0, 1]. The breakdown's terms are each
    term's contribution under ``shape`` (rank: ``valid`` and ``prefix`` are zero on the hit).
    """
    config = config or RewardConfig()
    if shape not in ("exact", "rank"):
        raise ValueError(f"reward shape must be 'exact' or 'rank', got {shape!r}")
    if sample_tokens.ndim != 3 or sample_item.shape != sample_tokens.shape[:2]:
        raise ValueError(
            f"sample_tokens must be [B, G, T] and sample_item [B, G], got {tuple(sample_tokens.shape)} "
            f"and {tuple(sample_item.shape)}"
        )
    b = sample_tokens.shape[0]
    if target_tokens.ndim != 2 or target_tokens.shape[0] != b or target_item.shape != (b,):
        raise ValueError(
            f"target_tokens must be [B, T] and target_item [B] with B={b}, got "
            f"{tuple(target_tokens.shape)} and {tuple(target_item.shape)}"
        )
    if target_quality.shape != (b,):
        raise ValueError(f"target_quality must be [B]={b}, got {tuple(target_quality.shape)}")
    if not 1 <= levels <= min(sample_tokens.shape[2], target_tokens.shape[1]):
        raise ValueError(f"levels={levels} must be in 1..min(sample length, target length)")

    exact = (sample_item == target_item[:, None]) & (sample_item >= 0)
    valid = sample_item >= 0
    same = sample_tokens[..., :levels] == target_tokens[:, None, :levels]
    lcp = same.long().cumprod(dim=-1).sum(dim=-1)
    q = target_quality.to(torch.float32)[:, None]

    exact_r = exact.float()
    valid_r = config.lambda_valid * valid.float()
    prefix_r = config.lambda_pref * lcp.float() / levels
    quality_r = config.alpha * q * exact.float()
    if shape == "rank":  # partial credit is for misses only: a hit is worth 1 + α·q, nothing more
        miss = 1.0 - exact_r
        valid_r = valid_r * miss
        prefix_r = prefix_r * miss
    return RewardBreakdown(exact_r, valid_r, prefix_r, quality_r, exact_r + valid_r + prefix_r + quality_r)
