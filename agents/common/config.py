"""Typed learner configs: one dataclass per learner, each field documented (it is the --help)."""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from redteam_gym.defaults import SMOLLM2
from redteam_gym.envs.config import FIELDS as ENV_FIELDS
from redteam_gym.envs.config import EnvConfig


def env_keywords(cls):
    """Let a config take the fields of its nested `EnvConfig` as keywords of its own,
    `PPOConfig(max_turns=3, judge="semantic")`: they go into `env`, the one place that holds
    them (read them there, `config.env.max_turns`)."""
    init = cls.__init__
    own = {f.name for f in dataclasses.fields(cls)}

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        routed = {k: kwargs.pop(k) for k in list(kwargs) if k in ENV_FIELDS and k not in own}
        if routed:
            env = kwargs.get("env") or _default_env()
            if isinstance(env, dict):
                env = EnvConfig.from_dict(env)
            kwargs["env"] = env.replace(**routed)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def _default_env() -> EnvConfig:
    """The learners' env: one turn (`max_turns` 1, where the env's default is 3), the seed
    paper's and Perez et al.'s single-turn training setting."""
    return EnvConfig(max_turns=1)


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
class LoRAConfig:
    """LoRA adapters (Hu et al. 2021, through peft) in place of full fine-tuning of the policy.

    The adapters sit on the layers above the frozen bottom (`frozen_fraction`), so the bottom
    stays the reference's own and the shared-bottom forward keeps working; every base weight
    stays frozen, and the KL reference is the base with the adapters off (one copy of the
    weights). B starts at zero: before the first update the policy is the base model.
    """

    rank: int = 0
    """Rank of the adapters; 0 fine-tunes the full top layers instead (no adapters)."""
    alpha: int = 16
    """LoRA scaling numerator: the adapters' update is scaled by alpha / rank."""
    dropout: float = 0.0
    """Dropout on the adapters' input while training. Above 0, training forwards differ from
    the sampler's, so PPO's first ratios are no longer 1."""
    target_modules: str = "all-linear"
    """Comma-separated names of the linear modules that get adapters (e.g. 'q_proj,v_proj'),
    or 'all-linear': every linear module of the adapted layers."""

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list | tuple):
            self.target_modules = ",".join(self.target_modules)
        checks = {
            "rank": (
                isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 0,
                "an int >= 0 (0: full fine-tuning)",
            ),
            "alpha": (
                isinstance(self.alpha, int) and not isinstance(self.alpha, bool) and self.alpha > 0,
                "an int > 0",
            ),
            "dropout": (0.0 <= self.dropout < 1.0, "in [0, 1)"),
            "target_modules": (
                isinstance(self.target_modules, str) and bool(self.target_module_names),
                "'all-linear' or comma-separated module names",
            ),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise ValueError(
                    f"LoRAConfig.{name} must be {allowed}, got {getattr(self, name)!r}"
                )

    @property
    def enabled(self) -> bool:
        """Whether the policy trains adapters (rank > 0) rather than its full top layers."""
        return self.rank > 0

    @property
    def target_module_names(self) -> list[str]:
        """`target_modules` as a list of names (`['all-linear']` for every linear module)."""
        return [n.strip() for n in str(self.target_modules).split(",") if n.strip()]


@env_keywords
@dataclass
class LearnerConfig:
    """Settings shared by every learner."""

    env: EnvConfig = field(default_factory=_default_env)
    """The training env's settings (`RedTeamDialogue-v0`); its fields are also keywords of the
    learner config (`PPOConfig(max_turns=3)` sets `env.max_turns`)."""
    role: Literal["adversary", "defender"] = "adversary"
    """The side the learner plays: the adversary (RedTeamDialogue-v0) or the defender
    (SafeDialogue-v0, answering `opponent` or, without one, the prompts)."""
    opponent: str | None = None
    """The defender's user side: 'zero-shot', 'few-shot' or a trained adversary's run
    directory; None answers the prompts alone (one turn)."""
    # --- the policy ---
    adversary_model: str = SMOLLM2
    """The policy's initial LM (also the KL reference), whichever side it plays; a model
    name, HF id or local path."""
    adversary_system_prompt: str | None = None
    """System prompt of the adversary's chat; None uses the environment's default."""
    frozen_fraction: float = 0.5
    """Share of the adversary's bottom transformer layers that stay frozen (with LoRA: that
    get no adapters)."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """LoRA adapters instead of full fine-tuning (`lora.rank` > 0); adapters usually want a
    larger `actor_lr` (around 1e-4) than full fine-tuning does."""
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
        if isinstance(self.lora, dict):
            self.lora = LoRAConfig(**self.lora)
        if isinstance(self.env, dict):
            self.env = EnvConfig.from_dict(self.env)
        if not isinstance(self.env, EnvConfig):
            raise TypeError(f"env must be an EnvConfig, got {type(self.env).__name__}")
        checks = {
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "micro_batch_size": (self.micro_batch_size >= 0, ">= 0 (0: the whole batch)"),
            "max_new_tokens": (self.max_new_tokens >= 1, ">= 1"),
            "frozen_fraction": (0.0 <= self.frozen_fraction <= 1.0, "in [0, 1]"),
            "actor_lr": (self.actor_lr >= 0, ">= 0"),
            "critic_lr": (self.critic_lr >= 0, ">= 0"),
            "temperature": (self.temperature > 0, "> 0"),
            "gamma": (0.0 <= self.gamma <= 1.0, "in [0, 1]"),
            "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
        }
        from redteam_gym.rewards import DEFENDER_TERMS, RewardConfig

        mine = set(RewardConfig.parse(self.env.reward).weights)
        if self.role == "defender" and not mine & DEFENDER_TERMS:
            raise ValueError(
                f"{type(self).__name__}: role 'defender' needs a defender's reward (terms "
                f"{sorted(DEFENDER_TERMS)}, e.g. reward='safe'), got {self.env.reward!r}"
            )
        if self.role == "adversary" and mine & DEFENDER_TERMS:
            raise ValueError(
                f"{type(self).__name__}: the terms {sorted(mine & DEFENDER_TERMS)} are the "
                "defender's; the adversary's reward is e.g. 'perez' or 'implicit'"
            )
        if self.role == "adversary" and self.opponent is not None:
            raise ValueError(f"{type(self).__name__}.opponent is the defender's user side")
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise ValueError(
                    f"{type(self).__name__}.{name} must be {allowed}, got {getattr(self, name)!r}"
                )
        if self.lora.enabled and self.frozen_fraction >= 1.0:
            raise ValueError(
                f"{type(self).__name__}: LoRA adapts the layers above the frozen bottom, but "
                "frozen_fraction=1.0 freezes every layer"
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["env"] = self.env.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """From `to_dict` data; the flat env fields of older checkpoints' configs are read
        into `env`."""
        names = {f.name for f in dataclasses.fields(cls)} | ENV_FIELDS
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**data)

    def save(self, path: Path) -> None:
        from redteam_gym.files import atomic_write

        atomic_write(path, json.dumps({"class": type(self).__name__, **self.to_dict()}, indent=2))


@env_keywords
@dataclass
class A2CConfig(LearnerConfig):
    """A2C as in Perez et al. (2022), reimplemented in the seed paper (section 3.3)."""

    value_normalization: bool = True
    """Train the critic on running-normalised returns."""


@env_keywords
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


@env_keywords
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
        if not 0.0 <= self.risk_rho <= 1.0:
            raise ValueError(f"RARLHFConfig.risk_rho must be in [0, 1], got {self.risk_rho}")
        if isinstance(self.risk_n, bool) or not isinstance(self.risk_n, int) or self.risk_n < 0:
            raise ValueError(f"RARLHFConfig.risk_n must be an int >= 0, got {self.risk_n!r}")


CONFIGS: dict[str, type[LearnerConfig]] = {
    "a2c": A2CConfig,
    "ppo": PPOConfig,
    "ra-rlhf": RARLHFConfig,
}
"""Each learner's config class by its name (`agents.LEARNERS` holds the learners): what the
command line needs without loading the learners."""
