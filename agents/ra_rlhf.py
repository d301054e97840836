"""RA-RLHF (Chaudhary et al., Algorithm 1): PPO on the lowest-return trajectories."""

from __future__ import annotations

from agents.common.config import RARLHFConfig
from agents.common.risk import cvar, select_lowest_returns, soft_risk_batch_size
from agents.common.rollout import Rollout
from agents.ppo import PPO


class RARLHF(PPO):
    """Risk-averse PPO: each update keeps the B0 dialogues with the lowest episode return
    (the sum of env rewards over the dialogue), B0 following the soft-risk schedule from the
    whole batch down to ceil(alpha * B). Advantages are whitened, and the adaptive KL
    controller updated, over the kept dialogues only (PPO.train sees only them)."""

    config_class = RARLHFConfig
    config: RARLHFConfig

    def select_trajectories(self, rollout: Rollout) -> list[int]:
        c = self.config
        b0 = soft_risk_batch_size(
            self.update_idx,
            rollout.num_dialogues,
            c.risk_alpha,
            c.risk_n,
            c.risk_rho,
            self.total_updates,
        )
        returns = rollout.episode_returns
        self._risk_stats = {
            "risk/b0": float(b0),
            "risk/cvar": cvar(returns, c.risk_alpha).item(),
        }
        return sorted(select_lowest_returns(returns, b0).tolist())

    def train(self, rollout: Rollout) -> dict[str, float]:
        stats = super().train(rollout)
        return {**stats, **self._risk_stats}
