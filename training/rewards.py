"""The interest-aware GRPO reward, vectorised over a batch of sampled groups.

``r = 1[exact] + λ_valid·1[valid SID] + λ_pref·LCP/levels + α·q_target·1[exact]``

- exact: the sampled SID decodes to the target item (suffix included, so colliding items differ);
- valid: the sample is a complete SID of some catalogue item;
- LCP: length of the common prefix of the sampled and target *level codes* (suffix excluded), so a
  sample that gets the coarse levels right earns partial credit;
- q_target: the deep-interest quality of the target item (``interest_rewards``), 0 when unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def means(self) -> dict[str, float]:
        """Batch means of every term, for logging."""
        names = ("exact", "valid", "prefix", "quality", "total")
        return {k: float(getattr(self, k).float().mean()) for k in names}


def interest_aware_reward(
    sample_tokens: torch.Tensor,
    sample_item: torch.Tensor,
    target_tokens: torch.Tensor,
    target_item: torch.Tensor,
    target_quality: torch.Tensor,
    *,
    levels: int,
    config: RewardConfig | None = None,
) -> RewardBreakdown:
    """Rewards of ``G`` sampled SIDs for each of ``B`` users.

    ``sample_tokens`` [B, G, T] and ``target_tokens`` [B, T'] hold SID tokens from the first level on
    (anything after the first ``levels`` positions is ignored for the prefix term); ``sample_item``
    [B, G] is the decoded item index (-1 = not a valid SID); ``target_item`` [B] the target's index;
    ``target_quality`` [B] its quality in [0, 1].
    """
    config = config or RewardConfig()
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
    return RewardBreakdown(exact_r, valid_r, prefix_r, quality_r, exact_r + valid_r + prefix_r + quality_r)
