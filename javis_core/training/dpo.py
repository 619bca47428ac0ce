"""AV-DPO loss (docs/official.md §8.4): a separate Diffusion-DPO term per modality plus a flow-matching regulariser on winners.

For modality k with policy losses L^w, L^l and reference losses R^w, R^l (per pair):
    dpo_k = -log sigmoid(-0.5 * beta_k * ((L^w - L^l) - (R^w - R^l)))
    loss_k = dpo_k + sft_weight * L^w
    implicit_acc_k = mean[(L^w - L^l) < (R^w - R^l)]
total = sum over modalities, averaged over pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_BETA = {"audio": 1000.0, "video": 3000.0}
SFT_WEIGHT = 0.1


def av_dpo_loss(
    policy_winner: dict[str, torch.Tensor],
    policy_loser: dict[str, torch.Tensor],
    reference_winner: dict[str, torch.Tensor],
    reference_loser: dict[str, torch.Tensor],
    beta: dict[str, float] | float = DEFAULT_BETA,
    sft_weight: float = SFT_WEIGHT,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scalar loss and the logged metrics (policy_loss_k, dpo_loss_k, implicit_acc_k) per modality."""
    total = 0.0
    metrics: dict[str, float] = {}
    for modality in policy_winner:
        beta_k = beta if isinstance(beta, (int, float)) else beta[modality]
        policy_diff = policy_winner[modality] - policy_loser[modality]
        reference_diff = (reference_winner[modality] - reference_loser[modality]).detach()
        dpo = -F.logsigmoid(-0.5 * beta_k * (policy_diff - reference_diff))
        total = total + dpo + sft_weight * policy_winner[modality]
        metrics[f"policy_loss_{modality}"] = policy_winner[modality].detach().mean().item()
        metrics[f"dpo_loss_{modality}"] = dpo.detach().mean().item()
        metrics[f"implicit_acc_{modality}"] = (policy_diff < reference_diff).float().mean().item()
    return total.mean(), metrics
