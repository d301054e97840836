"""`OnPolicyLearner`: owns `learn -> collect_rollout -> train`, its state and logging.

A2C, PPO and RA-RLHF override `train` (their losses) and, for RA-RLHF, which trajectories
an update uses.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from agents.common.checkpoint import (
    CheckpointError,
    check_actor,
    checkpoint_dir,
    read_config,
    read_state,
    saved_update,
    write_checkpoint,
)
from agents.common.config import LearnerConfig
from agents.common.kl import AdaptiveKLController, FixedKLController, KLController
from agents.common.logger import Logger
from agents.common.policy import ActorCritic
from agents.common.rollout import Rollout, Segment, collect_rollout, turn_end_scores
from agents.common.training import RunningMeanStd
from redteam_gym.adversary import (
    EMPTY_UTTERANCE,
    parse_observation,
)
from redteam_gym.envs.config import EnvConfig
from redteam_gym.faults import ComponentError
from redteam_gym.interrupts import Interrupted, stop_on_sigint
from redteam_gym.models import SamplingConfig, default_device, default_dtype, load_causal_lm
from redteam_gym.models.generation import sample
from redteam_gym.models.loading import quiet_progress
from redteam_gym.models.thread import ThreadFormat
from redteam_gym.roles import ROLES

COLLAPSE_UNIQUE_SHARE = 0.25
"""A batch in which fewer than this share of utterances are distinct has collapsed."""


class UpdateError(RuntimeError):
    """An update failed because the env's defender or judge did (the message names which)."""


class CollapseWarning(UserWarning):
    """The adversary's batch collapsed onto a few utterances (mode collapse)."""


class OnPolicyLearner:
    """Base of the token-level learners.

    Args:
        config: the learner's config dataclass.
        env: a `RedTeamDialogue-v0` vector env with `batch_size` envs; made from the config
            when omitted.
    """

    config_class: ClassVar[type[LearnerConfig]] = LearnerConfig

    def __init__(
        self,
        config: LearnerConfig | None = None,
        env: Any = None,
        *,
        _actor_path: str | None = None,
    ) -> None:
        config = config or self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        self.config = config
        self.device = torch.device(config.device or default_device())
        self.dtype = getattr(torch, config.dtype) if config.dtype else default_dtype(self.device)
        # the side it plays, reading the conversation in its env's format
        self.role = ROLES[config.role].in_env(config.env)
        self._env = None
        if env is not None:
            self.env = env
        torch.manual_seed(config.seed)
        lora = config.lora.enabled
        # a checkpoint's trained actor loads in place of the initial one (one load, not two);
        # a LoRA checkpoint holds only adapters, which go back on the initial model
        actor, tokenizer = load_causal_lm(
            config.adversary_model if lora else _actor_path or config.adversary_model,
            device=self.device,
            dtype=self.dtype,
            frozen=False,
        )
        self.policy = ActorCritic(
            actor,
            tokenizer,
            critic_hidden_size=config.critic_hidden_size,
            frozen_fraction=config.frozen_fraction,
            thread=self.role.thread,
            lora=config.lora,
            adapters_from=_actor_path if lora else None,
        )
        self.ref_model: PreTrainedModel
        """The KL reference. With LoRA, the actor itself, read with its adapters off
        (`policy.adapters_off()`, which `score_with_reference` and `reference_distributions`
        enter): the base weights serve both, one copy."""
        if lora:
            self.ref_model = self.policy.actor
        else:
            # the frozen initial policy; when it is also the defender, the process-wide model
            # cache hands back the defender's copy (no second one in memory)
            self.ref_model, _ = load_causal_lm(
                config.adversary_model, device=self.device, dtype=self.dtype, frozen=True
            )
        # the reference forward that scores a rollout also computes the actor's frozen bottom
        self.policy.share_bottom(self.ref_model)
        self.kl_ctl: KLController = (
            AdaptiveKLController(config.kl.coef, config.kl.target, config.kl.k_beta)
            if config.kl.adaptive
            else FixedKLController(config.kl.coef)
        )
        self.sampling = SamplingConfig(
            max_new_tokens=config.max_new_tokens, temperature=config.temperature
        )
        self.system_prompt = config.adversary_system_prompt or self.role.system_prompt
        self.optimizers = self._build_optimizers()
        self.score_stats = RunningMeanStd()
        self.update_idx = 0
        self.total_updates = 0
        self.history: list[dict[str, float]] = []
        self._collapse_warned = False
        self._act_generator = torch.Generator(device=self.device).manual_seed(config.seed)

    # ----- hooks for subclasses ----------------------------------------------------------------

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train(self, rollout: Rollout) -> dict[str, float]:
        """One update from one rollout; returns the metrics to log."""
        raise NotImplementedError

    def scores(self, rollout: Rollout, segments: list[Segment], groups: list[int]) -> torch.Tensor:
        """`[B, L]` judge scores on each utterance's last token, standardised with the running
        statistics of every rollout so far when `normalize_scores` is on (the statistics take
        in all of this rollout's scores, whichever trajectories the update keeps)."""
        if not self.config.normalize_scores:
            return turn_end_scores(segments, groups).to(self.device)
        stats = self.score_stats
        stats.update(torch.tensor([s.reward for s in rollout.segments]))
        standardised = [(s.reward - stats.mean) / stats.std for s in segments]
        return turn_end_scores(segments, groups, standardised).to(self.device)

    # ----- the loop ----------------------------------------------------------------------------

    @property
    def env(self):
        """The training vector env, made from the config on first use when none was given."""
        if self._env is None:
            self.env = self._make_env()
        return self._env

    @env.setter
    def env(self, env) -> None:
        c = self.config
        if env.num_envs != c.batch_size:
            raise ValueError(f"env has {env.num_envs} envs but batch_size is {c.batch_size}")
        if env.max_turns != c.env.max_turns:
            raise ValueError(
                f"env has max_turns={env.max_turns} but max_turns is {c.env.max_turns}"
            )
        env_config = _env_config(env)
        theirs = env_config.thread_format() if env_config is not None else self.role.thread
        if self.role.thread_view is not None and theirs != self.role.thread:
            # the policy reads the conversation as its env's defender does
            raise ValueError(
                f"env's defender reads the conversation as {_format_name(theirs)} but the "
                f"{self.role.name}'s config says {_format_name(self.role.thread)}: give the "
                "config the env's defender_format (and completion settings)"
            )
        self._env = env
        pending, self._pending_reward_state = getattr(self, "_pending_reward_state", None), None
        if pending is not None and _reward_terms(env) is not None:
            _reward_terms(env).load_state_dict(pending)

    def _make_env(self):
        import redteam_gym  # noqa: F401  (registers the env)

        c = self.config
        # the defender and the judge go where the learner runs, unless the env config says
        env_config = c.env.replace(
            device=c.env.device or str(self.device), dtype=c.env.dtype or self.dtype
        )
        if self.role.name == "defender":
            return gym.make_vec(
                self.role.env_id,
                num_envs=c.batch_size,
                config=env_config,
                adversary=c.opponent,
            )
        return gym.make_vec(self.role.env_id, num_envs=c.batch_size, config=env_config)

    def rollout_seed(self, update_idx: int) -> int:
        """Each update's env and sampling seed depends only on the run seed and its index."""
        return int(np.random.SeedSequence([self.config.seed, update_idx]).generate_state(1)[0])

    def collect_rollout(self) -> Rollout:
        return collect_rollout(
            self.env,
            self.policy,
            self.ref_model,
            self.sampling,
            seed=self.rollout_seed(self.update_idx),
            system_prompt=self.system_prompt,
            role=self.role,
        )

    def _set_learning_rates(self) -> None:
        if not self.config.lr_decay or not self.total_updates:
            return
        frac = 1.0 - self.update_idx / self.total_updates
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * frac

    def learn(
        self,
        total_updates: int,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        until: int | None = None,
    ) -> OnPolicyLearner:
        """Train until `total_updates` updates are done (counting updates before a resume).

        With `run_dir`, writes TensorBoard logs there and checkpoints every `save_every`
        updates and at the end. `until` stops earlier, after that many updates, while the
        schedules (learning-rate decay, RA-RLHF's soft risk) still span `total_updates`: a
        run trained in phases (the two-player game's) follows the schedule of one run.
        """
        if total_updates < 1:
            raise ValueError(f"total_updates must be >= 1, got {total_updates}")
        if until is not None and not 0 <= until <= total_updates:
            raise ValueError(f"until must be in 0..total_updates={total_updates}, got {until}")
        stop_at = total_updates if until is None else until
        self.total_updates = total_updates
        run_path = Path(run_dir) if run_dir else None
        logger = Logger(run_path, self.config, resume_step=self.update_idx) if run_path else None
        bar = tqdm(
            total=stop_at,
            initial=self.update_idx,
            disable=not progress,
            desc=type(self).__name__,
            unit="update",
        )
        # Ctrl-C: the update in flight finishes and is saved (redteam_gym.interrupts)
        signals = contextlib.ExitStack()
        stop = signals.enter_context(stop_on_sigint("the update in flight, saving a checkpoint"))
        try:
            while self.update_idx < stop_at:
                start = time.perf_counter()
                self._set_learning_rates()
                rollout = self.collect_rollout()
                stats = rollout.stats()
                self._check_collapse(rollout, stats)
                stats.update(self.train(rollout))
                self.update_idx += 1
                stats["time/update_s"] = time.perf_counter() - start
                stats["objective/kl_coef"] = self.kl_ctl.value
                self.history.append({"update": self.update_idx, **stats})
                if logger and self.update_idx % self.config.log_every == 0:
                    logger.log(stats, self.update_idx)
                bar.set_postfix(
                    asr=f"{stats['redteam/asr']:.2f}", score=f"{stats['objective/scores']:.3f}"
                )
                bar.update(1)
                if (
                    run_path
                    and self.config.save_every
                    and self.update_idx % self.config.save_every == 0
                ):
                    self.save(run_path)
                if stop.requested:
                    break
        except ComponentError as exc:
            raise UpdateError(self._failure_message(exc, total_updates, run_path)) from exc
        finally:
            signals.close()
            bar.close()
            if logger:
                logger.close()
        if run_path:
            self.save(run_path)
        if stop.requested and self.update_idx < stop_at:
            where = (
                f"checkpoint of update {self.update_idx} saved in {run_path / 'checkpoint'}; "
                f"resume with `redteam-gym train --algo ... --updates {total_updates} "
                f"--out {run_path} --resume` or `{type(self).__name__}.load({str(run_path)!r})"
                f".learn({total_updates}, run_dir={str(run_path)!r})`"
                if run_path
                else "nothing saved (no run_dir); `learn` again to continue"
            )
            raise Interrupted(
                f"training stopped by SIGINT after update {self.update_idx} of {total_updates}: "
                + where
            )
        return self

    def _failure_message(
        self, exc: ComponentError, total_updates: int, run_path: Path | None
    ) -> str:
        saved = saved_update(run_path) if run_path else None
        kept = (
            f"; the checkpoint of update {saved} in {run_path / 'checkpoint'} and the metrics "
            f"of earlier updates are kept (resume with --resume)"
            if saved is not None and run_path is not None
            else "; no checkpoint was saved"
        )
        return f"update {self.update_idx + 1} of {total_updates} failed: {exc}{kept}"

    def _check_collapse(self, rollout: Rollout, stats: dict[str, float]) -> None:
        """Warn once per learner when a batch's utterances collapse onto a few."""
        share = stats.get("diversity/unique_share", 1.0)
        if self._collapse_warned or not share < COLLAPSE_UNIQUE_SHARE:
            return
        self._collapse_warned = True
        common = Counter(" ".join(s.text.split()) for s in rollout.segments).most_common(1)
        warnings.warn(
            f"update {self.update_idx + 1}: only {share:.0%} of the batch's utterances are "
            f"distinct (most common: {common[0][0]!r}); the {self.role.name} is collapsing. "
            + (
                "Consider novelty reward terms (--reward implicit) or a larger KL coefficient."
                if self.role.name == "adversary"
                else "Consider a larger KL coefficient or a larger relevance weight."
            ),
            CollapseWarning,
            stacklevel=3,
        )

    # ----- acting --------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, observations) -> list[str]:
        """The trained policy: one sampled utterance (or reply) per observation, read as the
        side it plays reads a conversation."""
        prompts = [
            self.policy.encode(self.role.view(parse_observation(o), self.system_prompt))
            for o in observations
        ]
        samples = sample(
            self.policy.actor,
            prompts,
            self.sampling,
            eos_token_ids=self.policy.eos_token_ids,
            pad_token_id=self.policy.tokenizer.pad_token_id,
            generator=self._act_generator,
            stop=self.policy.stop_rule(),
        )
        return [t or EMPTY_UTTERANCE for t in self.policy.decode(samples.tokens)]

    def reseed(self, seed: int) -> None:
        self._act_generator.manual_seed(seed)

    # ----- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "update_idx": self.update_idx,
            "total_updates": self.total_updates,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "kl_ctl": self.kl_ctl.state_dict(),
            "score_stats": self.score_stats.state_dict(),
            "history": self.history,
            # the novelty terms' buffer of recent utterances: a resume continues it
            "reward_state": (
                _reward_terms(self._env).state_dict()
                if self._env is not None and _reward_terms(self._env) is not None
                else getattr(self, "_pending_reward_state", None)
            ),
            "act_generator": self._act_generator.get_state(),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            **self._extra_state(),
        }

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint directory atomically (`agents.common.checkpoint`): an
        interrupted save leaves the previous checkpoint intact."""
        return write_checkpoint(
            path,
            self._write_checkpoint_files,
            {"learner": type(self).__name__, "update": self.update_idx},
        )

    def _write_checkpoint_files(self, directory: Path) -> None:
        self.config.save(directory / "config.json")
        with quiet_progress():
            self.policy.save_actor(directory / "actor")
        torch.save(self.policy.critic.state_dict(), directory / "critic.pt")
        torch.save(self.state_dict(), directory / "state.pt")

    @classmethod
    def load(cls, path: str | os.PathLike[str], env: Any = None, **overrides: Any):
        """Rebuild a learner from `save(path)`: weights, optimizers, KL controller, schedule
        position, RNG states and config. `overrides` replace config fields (e.g. `device`)."""
        config = cls.load_config(path, **overrides)
        ckpt = checkpoint_dir(path)
        check_actor(ckpt / "actor", adapters=config.lora.enabled)
        # the trained actor replaces the initial one; the reference stays the initial model
        learner = cls.__new__(cls)
        learner._init_from_checkpoint(config, env, ckpt)
        return learner

    @classmethod
    def load_config(cls, path: str | os.PathLike[str], **overrides: Any) -> LearnerConfig:
        """The config saved with the checkpoint at `path` (no weights loaded); `cls(config)`
        is then the run's initial, untrained policy."""
        return read_config(path, cls.config_class, **overrides)

    def _init_from_checkpoint(self, config: LearnerConfig, env: Any, ckpt: Path) -> None:
        critic, state = read_state(ckpt)
        OnPolicyLearner.__init__(self, config, env, _actor_path=str(ckpt / "actor"))
        try:
            self.policy.critic.load_state_dict(critic)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{ckpt / 'critic.pt'} does not fit the critic: {exc}") from exc
        self.update_idx = state["update_idx"]
        self.total_updates = state["total_updates"]
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        if "score_stats" in state:  # checkpoints from before score normalisation lack it
            self.score_stats.load_state_dict(state["score_stats"])
        self.history = state["history"]
        self._pending_reward_state = state.get("reward_state")
        if self._env is not None:
            self.env = self._env  # applies the pending reward state
        self._act_generator.set_state(state["act_generator"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self._load_extra_state(state)


def _format_name(thread: ThreadFormat | None) -> str:
    return "a chat" if thread is None else f"a text thread ({thread})"


def _env_config(env: Any) -> EnvConfig | None:
    """The `EnvConfig` behind a `RedTeamDialogue-v0` or `SafeDialogue-v0` vector env (None
    for other envs)."""
    engine = getattr(getattr(env, "unwrapped", env), "engine", None)
    config = getattr(engine, "config", None)
    return config if isinstance(config, EnvConfig) else None


def _reward_terms(env: Any) -> Any:
    """The reward terms behind a `RedTeamDialogue-v0` vector env (None for other envs)."""
    engine = getattr(getattr(env, "unwrapped", env), "engine", None)
    return getattr(engine, "reward", None)


def adamw(params, lr: float) -> torch.optim.AdamW:
    """AdamW over the trainable `params`, remembering its initial lr for the linear decay."""
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr)
    for group in opt.param_groups:
        group["initial_lr"] = lr
    return opt
