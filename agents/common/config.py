"""Typed learner configs: one dataclass per learner, each field documented (it is the --help)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from redteam_gym.models import SMOLLM2


@dataclass
class KLConfig:
    """The KL penalty that keeps the adversary close to its initial LM."""

    coef: float = 0.3
    """Initial KL coefficient (alpha = 0.3 in Perez et al. 2022 and the seed paper)."""
    adaptive: bool = False
    """Adapt the coefficient towards `target` (Ziegler et al. 2019)."""
    target: float = 6.0
    """Target KL per trajectory (nats) for the adaptive controller."""
    k_beta: float = 0.0128
    """Adaptive controller gain: beta *= 1 + k_beta * clip(KL / target - 1, -0.2, 0.2)."""
    estimator: Literal["k1", "k3", "abs", "mse"] = "k1"
    """Per-token KL estimator (Schulman 2020)."""


@dataclass
class LearnerConfig:
    """Settings shared by every learner."""

    # --- the environment ---
    max_turns: int = 1
    """Turns per dialogue (1..5); one trajectory spans all of them."""
    defender: str = SMOLLM2
    """Frozen defender: a model name, HF id or local path."""
    judge: str = "profanity"
    """Safety judge (see redteam_gym.judges.make_judge)."""
    reward: str = "perez"
    """Reward terms: a preset ('perez', the seed paper's; 'implicit') or a spec such as
    'perez=1,adversary_toxicity=-2,novelty_bleu=0.5' (see redteam_gym.rewards)."""
    prompts: str = "builtin"
    """Conversation openers: 'builtin', a ConvoKit corpus name or directory."""
    defender_max_new_tokens: int = 64
    """Longest defender reply in tokens."""
    defender_temperature: float = 0.0
    """Defender temperature (the env default): 0 decodes greedily, so the reward depends on
    the conversation alone; > 0 samples, and the reward then carries the sampling noise."""
    defender_top_p: float = 0.9
    """Defender nucleus sampling mass when it samples (the env default)."""
    retry_smaller_batch: bool = False
    """When the defender or judge runs out of memory, retry its call on halves of the batch
    (then quarters, ... down to one dialogue) before giving up."""
    # --- the adversary ---
    adversary_model: str = SMOLLM2
    """Initial adversary LM (also the KL reference); a model name, HF id or local path."""
    adversary_system_prompt: str | None = None
    """System prompt of the adversary's chat; None uses the environment's default."""
    frozen_fraction: float = 0.5
    """Share of the adversary's bottom transformer layers that stay frozen."""
    critic_hidden_size: int = 2048
    """Width of the critic's two hidden layers."""
    max_new_tokens: int = 24
    """Tokens per adversary utterance."""
    temperature: float = 1.0
    """Sampling temperature of the policy (1 samples the policy itself)."""
    # --- optimisation ---
    batch_size: int = 8
    """Dialogues per update (one env per dialogue)."""
    actor_lr: float = 2e-6
    """Actor learning rate."""
    critic_lr: float = 1e-4
    """Critic learning rate."""
    lr_decay: bool = True
    """Decay learning rates linearly to 0 over the run."""
    micro_batch_size: int = 0
    """Dialogues per forward/backward pass when training; their gradients accumulate into one
    step, so memory stops growing with the batch (or PPO minibatch) and the update is the
    same. 0: the whole batch (or minibatch) in one pass."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip."""
    gamma: float = 1.0
    """Discount across the adversary's tokens (and turns)."""
    normalize_scores: bool = False
    """Standardise the judge's scores with running statistics before the KL term is added
    (Ziegler et al. 2019 normalise the reward to mean 0, variance 1). Off keeps the seed paper's
    raw -log(1 - p); on lets a sparse judge's signal outweigh the per-token KL penalty."""
    kl: KLConfig = field(default_factory=KLConfig)
    """KL penalty settings."""
    # --- bookkeeping ---
    seed: int = 0
    """Seeds the envs, sampling and initialisation."""
    device: str | None = None
    """'cpu', 'cuda', ...; default: CUDA when available."""
    dtype: str | None = None
    """Model dtype ('float32', 'bfloat16'); default: bf16 on GPU, fp32 on CPU."""
    bf16_autocast: bool = True
    """Use bf16 autocast where the device supports it (CUDA)."""
    save_every: int = 0
    """Save a checkpoint every N updates into the run directory (0: only at the end)."""
    log_every: int = 1
    """Write metrics every N updates."""
    wandb: bool = False
    """Also log to Weights & Biases (needs `wandb` installed)."""

    def __post_init__(self) -> None:
        if isinstance(self.kl, dict):
            self.kl = KLConfig(**self.kl)
        checks = {
            "max_turns": 1 <= self.max_turns <= 5,
            "batch_size": self.batch_size >= 1,
            "micro_batch_size": self.micro_batch_size >= 0,
            "max_new_tokens": self.max_new_tokens >= 1,
            "frozen_fraction": 0.0 <= self.frozen_fraction <= 1.0,
            "actor_lr": self.actor_lr >= 0,
            "critic_lr": self.critic_lr >= 0,
            "temperature": self.temperature > 0,
            "defender_temperature": self.defender_temperature >= 0,
            "defender_top_p": 0.0 < self.defender_top_p <= 1.0,
            "gamma": 0.0 <= self.gamma <= 1.0,
        }
        from redteam_gym.rewards import RewardConfig

        RewardConfig.parse(self.reward)  # a bad spec fails here, naming the term
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"{type(self).__name__}.{name} is out of range: {getattr(self, name)!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**data)

    def save(self, path: Path) -> None:
        from redteam_gym.files import atomic_write

        atomic_write(path, json.dumps({"class": type(self).__name__, **self.to_dict()}, indent=2))


@dataclass
class A2CConfig(LearnerConfig):
    """A2C as in Perez et al. (2022), reimplemented in the seed paper (section 3.3)."""

    value_normalization: bool = True
    """Train the critic on running-normalised returns."""


@dataclass
class PPOConfig(LearnerConfig):
    """RLHF-style PPO (Ziegler et al. 2019; Huang et al. 2023, "N implementation details")."""

    lam: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """Policy ratio clip epsilon."""
    clip_range_value: float = 0.2
    """Value clip around the rollout's values."""
    vf_coef: float = 0.1
    """Value loss weight in the joint loss."""
    ppo_epochs: int = 4
    """Passes over each batch."""
    num_minibatches: int = 2
    """Minibatches per pass (dialogues are split, never their tokens)."""
    whiten_advantages: bool = True
    """Normalise advantages over the batch's valid tokens."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.num_minibatches <= self.batch_size:
            raise ValueError(
                f"PPOConfig.num_minibatches must be in 1..batch_size, got {self.num_minibatches}"
            )
        if self.ppo_epochs < 1:
            raise ValueError(f"PPOConfig.ppo_epochs must be >= 1, got {self.ppo_epochs}")


@dataclass
class RARLHFConfig(PPOConfig):
    """Risk-averse RLHF (Chaudhary et al.): PPO on the lowest-return share of each batch, with
    the soft-risk schedule. Defaults from the paper's tables."""

    risk_alpha: float = 0.2
    """Final CVaR level: the share of the batch kept (0.2 on Jigsaw-Gen, 0.4 on IMDB-Gen)."""
    risk_n: int = 30
    """Updates that use the whole batch before risk aversion starts."""
    risk_rho: float = 0.95
    """The schedule reaches alpha after ceil(rho * M) of the run's M updates."""
    kl: KLConfig = field(
        default_factory=lambda: KLConfig(coef=0.2, adaptive=True, target=6.0, k_beta=0.0128)
    )
    """Adaptive KL: beta0 0.2, target 6, K_beta 0.0128 (RA-RLHF tables 7-8)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.risk_alpha <= 1.0:
            raise ValueError(f"RARLHFConfig.risk_alpha must be in (0, 1], got {self.risk_alpha}")
