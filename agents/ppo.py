"""RLHF-style PPO (Ziegler et al. 2019; Huang et al. 2023) with the Perez reward."""

from __future__ import annotations

import numpy as np
import torch

from agents.common.advantages import compute_gae, explained_variance, masked_mean, masked_whiten
from agents.common.base import OnPolicyLearner
from agents.common.config import PPOConfig
from agents.common.kl import kl_penalty
from agents.common.rollout import Rollout
from agents.common.training import autocast, clip_and_step, masked_sum, micro_batches


class PPO(OnPolicyLearner):
    """Clipped-surrogate PPO on token-level trajectories.

    reward_t = score on each utterance's last token - beta * KL_t  (seed paper eq. 1)
    GAE (gamma 1, lambda 0.95), whitened advantages, clipped policy and value losses
    (eqs. 4-6), several epochs over minibatches of dialogues; old logprobs and values come
    from the rollout itself.
    """

    config_class = PPOConfig
    config: PPOConfig

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        groups = [
            {
                "params": [p for p in self.policy.actor.parameters() if p.requires_grad],
                "lr": c.actor_lr,
            },
            {"params": list(self.policy.critic.parameters()), "lr": c.critic_lr},
        ]
        opt = torch.optim.AdamW(groups)
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
        return {"policy": opt}

    def select_trajectories(self, rollout: Rollout) -> list[int]:
        """Which dialogues this update learns from: all of them (RA-RLHF keeps a tail)."""
        return list(range(rollout.num_dialogues))

    def train(self, rollout: Rollout) -> dict[str, float]:
        c = self.config
        groups = self.select_trajectories(rollout)
        segments = rollout.segments_of(groups)
        dev = self.device
        # 1. rollout tensors as trajectories [B, L], built once
        batch = rollout.to_batch(groups)
        old_logprobs, ref_logprobs, old_values, mask = (
            batch.logprobs,
            batch.ref_logprobs,
            batch.values,
            batch.mask,
        )
        scores = self.scores(rollout, segments, groups)
        # 2. per-token reward: the judge's score at turn ends, the KL penalty everywhere
        kl = kl_penalty(old_logprobs, ref_logprobs, c.kl.estimator).masked_fill(~mask, 0.0)
        non_score_reward = -self.kl_ctl.value * kl
        rewards = scores + non_score_reward
        # 3. advantages and value targets
        advantages, returns = compute_gae(rewards, old_values, mask, c.gamma, c.lam)
        if c.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        # 4. epochs of minibatch updates
        rng = np.random.default_rng(self.rollout_seed(self.update_idx))
        stats: dict[str, list[float]] = {
            k: [] for k in ("pg", "vf", "approxkl", "clipfrac", "vclip")
        }
        params = [p for g in self.optimizers["policy"].param_groups for p in g["params"]]
        self.policy.train()
        for _ in range(c.ppo_epochs):
            for minibatch in np.array_split(rng.permutation(len(groups)), c.num_minibatches):
                # the minibatch's token means, accumulated over micro-batches of dialogues
                n_tokens = mask[torch.as_tensor(minibatch, device=dev)].sum().clamp_min(1)
                sums = dict.fromkeys(stats, 0.0)
                self.optimizers["policy"].zero_grad(set_to_none=True)
                for rows in micro_batches(minibatch.tolist(), c.micro_batch_size):
                    rows_t = torch.as_tensor(rows, device=dev)
                    with autocast(dev, c.bf16_autocast):
                        logprobs, values = self.policy.evaluate_batch(
                            batch.rows(rows_t), temperature=c.temperature
                        )
                    width = logprobs.shape[1]
                    mb_mask = mask[rows_t, :width]
                    mb_adv, mb_ret = advantages[rows_t, :width], returns[rows_t, :width]
                    mb_old_lp, mb_old_v = old_logprobs[rows_t, :width], old_values[rows_t, :width]
                    # clipped surrogate (eq. 5)
                    log_ratio = (logprobs - mb_old_lp).masked_fill(~mb_mask, 0.0)
                    ratio = log_ratio.exp()
                    pg_losses = -mb_adv * ratio
                    pg_losses2 = -mb_adv * ratio.clamp(1.0 - c.clip_range, 1.0 + c.clip_range)
                    pg_sum = masked_sum(torch.maximum(pg_losses, pg_losses2), mb_mask)
                    # clipped value loss (eq. 6)
                    v_clipped = mb_old_v + (values - mb_old_v).clamp(
                        -c.clip_range_value, c.clip_range_value
                    )
                    vf_losses = torch.maximum((values - mb_ret) ** 2, (v_clipped - mb_ret) ** 2)
                    vf_sum = 0.5 * masked_sum(vf_losses, mb_mask)
                    ((pg_sum + c.vf_coef * vf_sum) / n_tokens).backward()
                    with torch.no_grad():
                        sums["pg"] += pg_sum.item()
                        sums["vf"] += vf_sum.item()
                        sums["approxkl"] += 0.5 * masked_sum(log_ratio**2, mb_mask).item()
                        clipped = (pg_losses2 > pg_losses).float()
                        sums["clipfrac"] += masked_sum(clipped, mb_mask).item()
                        vclip = ((v_clipped - mb_ret) ** 2 > (values - mb_ret) ** 2).float()
                        sums["vclip"] += masked_sum(vclip, mb_mask).item()
                clip_and_step(self.optimizers["policy"], params, c.max_grad_norm)
                for k, v in sums.items():
                    stats[k].append(v / n_tokens.item())
        # 5. the KL controller follows the KL of the trajectories trained on
        mean_kl = kl.sum(1).mean().item()
        self.kl_ctl.update(mean_kl)
        return {
            "objective/kl": mean_kl,
            "objective/non_score_reward": non_score_reward.sum(1).mean().item(),
            "loss/policy": float(np.mean(stats["pg"])),
            "loss/value": float(np.mean(stats["vf"])),
            "policy/approxkl": float(np.mean(stats["approxkl"])),
            "policy/clipfrac": float(np.mean(stats["clipfrac"])),
            "val/clipfrac": float(np.mean(stats["vclip"])),
            "val/mean": masked_mean(old_values, mask).item(),
            "val/explained_variance": explained_variance(old_values, returns, mask),
            "returns/mean": masked_mean(returns, mask).item(),
        }
