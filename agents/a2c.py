"""Token-level A2C (Perez et al. 2022, as reimplemented in the seed paper, section 3.3)."""

from __future__ import annotations

from typing import Any

import torch

from agents.common.advantages import discounted_returns, explained_variance, masked_mean
from agents.common.base import OnPolicyLearner, adamw
from agents.common.config import A2CConfig
from agents.common.rollout import Rollout
from agents.common.training import (
    RunningMeanStd,
    autocast,
    clip_and_step,
    masked_sum,
    micro_batches,
    reference_distributions,
)


class A2C(OnPolicyLearner):
    """Advantage actor-critic with separate actor and critic objectives and optimizers.

    actor:  L = -E[A_t log pi(a_t|s_t)] + alpha * KL(pi || pi_ref)   (seed paper eq. 2)
    critic: L = mean_t (V(s_t) - R_t)^2 on normalised Monte-Carlo returns   (eq. 3)

    The KL is exact at each generated position (summed over the vocabulary, from the
    reference's distributions recomputed at training time, micro-batch by micro-batch), so
    its gradient is the KL's own; A_t = R_t - V(s_t).
    """

    config_class = A2CConfig
    config: A2CConfig

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self.return_stats = RunningMeanStd()
        return {
            "actor": adamw(self.policy.actor.parameters(), self.config.actor_lr),
            "critic": adamw(self.policy.critic.parameters(), self.config.critic_lr),
        }

    def train(self, rollout: Rollout) -> dict[str, float]:
        c = self.config
        groups = list(range(rollout.num_dialogues))
        segments = rollout.segments_of(groups)
        # 1. Monte-Carlo returns of the env rewards (the KL is in the actor loss, not the return)
        scores = self.scores(rollout, segments, groups)
        batch = rollout.to_batch(groups)
        mask = batch.mask
        returns = discounted_returns(scores, mask, c.gamma)
        if c.value_normalization:
            self.return_stats.update(returns[mask])
        mean, std = (
            (self.return_stats.mean, self.return_stats.std) if c.value_normalization else (0.0, 1.0)
        )
        n_tokens = mask.sum().clamp_min(1)
        values = torch.zeros_like(returns)
        kl = torch.zeros_like(returns)
        pg_total = critic_total = 0.0
        # 2. two objectives, two optimizers: the critic reads detached features, so each loss
        #    reaches only its own network. Micro-batches of dialogues accumulate the gradients
        #    of the batch's token means.
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self.policy.train()
        for rows in micro_batches(groups, c.micro_batch_size):
            mb = batch.rows(rows)
            with autocast(self.device, c.bf16_autocast):
                log_dist, values_n = self.policy.evaluate_batch(
                    mb, temperature=c.temperature, full=True
                )
                # the reference's distributions, recomputed here rather than kept since the
                # rollout (a [tokens, vocab] float32 table per dialogue)
                ref_log_dist = reference_distributions(
                    self.ref_model, self.policy, mb, temperature=c.temperature
                )
            logprobs = log_dist.gather(-1, mb.tokens[..., None]).squeeze(-1)
            # 3. exact per-position KL(pi || pi_ref)
            mb_kl = (log_dist.exp() * (log_dist - ref_log_dist.to(log_dist.dtype))).sum(-1)
            width = logprobs.shape[1]
            mb_mask, mb_returns = mask[rows, :width], returns[rows, :width]
            mb_values = values_n * std + mean
            advantages = (mb_returns - mb_values).detach()
            pg_sum = masked_sum(-advantages * logprobs, mb_mask)
            actor_loss = (pg_sum + self.kl_ctl.value * masked_sum(mb_kl, mb_mask)) / n_tokens
            critic_sum = masked_sum((values_n - (mb_returns - mean) / std) ** 2, mb_mask)
            actor_loss.backward()
            (critic_sum / n_tokens).backward()
            pg_total += pg_sum.item()
            critic_total += critic_sum.item()
            values[rows, :width] = mb_values.detach()
            kl[rows, :width] = mb_kl.detach()
        actor_grad = clip_and_step(
            self.optimizers["actor"], self.policy.actor.parameters(), c.max_grad_norm
        )
        critic_grad = clip_and_step(
            self.optimizers["critic"], self.policy.critic.parameters(), c.max_grad_norm
        )
        return {
            "loss/policy": pg_total / n_tokens.item(),
            "loss/value": critic_total / n_tokens.item(),
            "objective/kl": (kl * mask).sum(1).mean().item(),
            "policy/advantages_mean": masked_mean(returns - values, mask).item(),
            "policy/grad_norm": actor_grad,
            "val/grad_norm": critic_grad,
            "val/mean": masked_mean(values, mask).item(),
            "val/explained_variance": explained_variance(values, returns, mask),
            "returns/mean": masked_mean(returns, mask).item(),
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"return_stats": self.return_stats.state_dict()}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.return_stats.load_state_dict(state["return_stats"])
