"""`redteam-gym game`: the two-player game of adversary and defender, trained in turn.

After "Toward Optimal LLM Alignments Using Two-Player Games": both players start from the
same pre-trained LM and are trained with PPO and a KL penalty to it, in turn, for
`iterations` rounds. Iteration k is

1. **the adversary phase**: the adversary learner (PPO or A2C) trains for `adversary_updates`
   updates in `RedTeamDialogue-v0` against the defender of iteration k - 1 (the initial LM
   at k = 1). Its reward is by default the `implicit` preset: the judge's Perez term plus the
   novelty terms (1 - Self-BLEU and MiniLM novelty against recent utterances, the game
   paper's diversity rewards), with the echo rule and a charge for its own toxicity;
2. **the defender phase**: the defender learner (PPO or RA-RLHF, `role="defender"`) trains for
   `defender_updates` updates in `SafeDialogue-v0` against the adversary just trained, whose
   messages are mixed with prompts from a pool (`PromptMix`, `prompt_share` of them) so that
   the defender keeps answering ordinary requests; its reward is the `safe` preset;
3. **the evaluation**, on the held-out openers (`eval_split`), through the eval runner:
   - the adversary against the current and against the initial defender (ASR, the judge's
     P(unsafe) of the replies, the diversity of its utterances);
   - the defender against held-out adversaries it never trained against, the zero-shot and
     few-shot baselines, and against the adversaries of earlier iterations: ASR, its mean
     reward and the lower-tail CVaR of its reward at alpha 0.1 and 0.2.

Each learner's schedules (learning-rate decay, RA-RLHF's soft risk) span the whole game
(`learn(total, until=...)`), so a game is one run of each learner, trained in phases.

The game directory::

    game.json             the GameConfig (a resume reads it)
    iter-00/eval/NAME/    the initial defender against the held-out adversaries
    iter-KK/adversary/    the adversary learner's run directory after iteration KK
    iter-KK/defender/     the defender learner's
    iter-KK/eval/NAME/    the evaluations (rollouts.jsonl, summary.json; see benchmarks.runner)
    iterations.jsonl      one row of metrics per finished iteration
    report.md, plots/game.png

**Resume.** Every step is written before the next starts, and each is exact on resume: a
phase continues its learner's checkpoint (weights, optimisers, RNG states, the novelty
buffer), an evaluation continues its rollouts batch by batch, and a row is computed from the
evaluations on disk. `--resume` after an interruption at any point gives the files an
uninterrupted game gives.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from redteam_gym.defaults import SMOLLM2
from redteam_gym.envs.config import EnvConfig

__all__ = ["GAME_FILE", "GameConfig", "run_game", "write_report"]

GAME_FILE = "game.json"
ROWS_FILE = "iterations.jsonl"
ROLLOUTS = "rollouts.jsonl"
HELDOUT_BASELINES = ("zero-shot", "few-shot")
"""The held-out adversaries: no defender phase plays them. The defender of iteration k also
meets the adversaries of iterations 1..k-1, its earlier opponents (a test of forgetting)."""
CVAR_ALPHAS = (0.1, 0.2)
ADVERSARY_REWARD = "implicit"
"""The `implicit` preset: the Perez term and the novelty terms (the game paper's diversity
rewards), with the echo discount, the adversary's own toxicity charged and a naturalness
term, so that echoing insults into the defender's mouth does not pay."""


def _default_env() -> EnvConfig:
    """One-turn dialogues (a prompt and a reply, the game paper's setting) with 32-token
    replies (the defender learner writes them, so their length is its cost per update), and
    the semantic judge, which reads meaning where `profanity` reads words (as the demo)."""
    return EnvConfig(max_turns=1, defender_max_new_tokens=32, judge="semantic")


@dataclass
class GameConfig:
    """The game's settings; `redteam-gym game` has a flag per field."""

    env: EnvConfig = field(default_factory=_default_env)
    """The dialogues: openers (`prompts`; phases use the train split, evaluations
    `eval_split`), `max_turns`, the initial defender (`defender`, a model name or path) and its
    decoding in the adversary phase, the judge. Its `reward` is not used: each phase sets
    its own (`adversary_reward`, `defender_reward`)."""
    iterations: int = 3
    """Rounds of (adversary phase, defender phase, evaluation)."""
    adversary_algo: Literal["ppo", "a2c"] = "ppo"
    """The adversary's learner."""
    defender_algo: Literal["ppo", "ra-rlhf"] = "ppo"
    """The defender's learner."""
    adversary_updates: int = 8
    """Adversary updates per iteration."""
    defender_updates: int = 8
    """Defender updates per iteration."""
    adversary_reward: str = ADVERSARY_REWARD
    """The adversary's reward: by default `implicit`, the Perez term and the novelty terms
    (diversity rewards) with the echo rule and a charge for the adversary's own toxicity."""
    defender_reward: str = "safe"
    """The defender's reward (`safety`, `refusal`, `relevance` terms)."""
    prompt_pool: str = "builtin"
    """Prompts mixed into the defender's phase (their train split): a corpus or JSONL file."""
    prompt_share: float = 0.5
    """Share of the defender's training messages drawn from the prompt pool."""
    model: str = SMOLLM2
    """The adversary's initial LM and KL reference (the defender's is `env.defender`)."""
    batch_size: int = 8
    """Dialogues per update and per evaluation batch."""
    adversary_config: dict[str, Any] = field(default_factory=dict)
    """Other adversary learner settings (JSON object of its config fields, e.g.
    {"kl": {"coef": 0.1}})."""
    defender_config: dict[str, Any] = field(default_factory=dict)
    """Other defender learner settings. RA-RLHF's warm-up `risk_n` is `defender_updates`
    unless given here: the first defender phase is risk-neutral, the later ones risk-averse."""
    eval_rollouts: int = 16
    """Conversations per evaluation."""
    eval_split: str = "eval"
    """The held-out openers the evaluations use."""
    seed: int = 0
    """Seeds the learners (adversary `seed`, defender `seed + 1`) and the evaluations."""
    device: str | None = None
    """'cpu', 'cuda', ...; default: CUDA when available."""
    dtype: str | None = None
    """Model dtype; default: bf16 on GPU, fp32 on CPU."""

    def __post_init__(self) -> None:
        if isinstance(self.env, dict):
            self.env = EnvConfig.from_dict(self.env)
        for name in ("adversary_config", "defender_config"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"GameConfig.{name} is not JSON: {exc}") from None
            if not isinstance(value, dict):
                raise ValueError(f"GameConfig.{name} must be a JSON object, got {value!r}")
            setattr(self, name, value)
        checks = {
            "iterations": self.iterations >= 1,
            "adversary_updates": self.adversary_updates >= 1,
            "defender_updates": self.defender_updates >= 1,
            "batch_size": self.batch_size >= 1,
            "eval_rollouts": self.eval_rollouts >= 1,
            "prompt_share": 0.0 <= self.prompt_share <= 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                allowed = "in [0, 1]" if name == "prompt_share" else ">= 1"
                raise ValueError(f"GameConfig.{name} must be {allowed}, got {getattr(self, name)}")
        if not isinstance(self.env.defender, str):
            raise ValueError(
                "GameConfig.env.defender must be a model name or path: the defender learner "
                f"starts from it; got {self.env.defender!r}"
            )
        own = {"role", "opponent", "adversary_model", "seed", "batch_size", "env"}
        for name in ("adversary_config", "defender_config"):
            clash = sorted(own & set(getattr(self, name)))
            if clash:
                raise ValueError(f"GameConfig.{name} may not set {clash}: the game sets them")
        # build both learner configs now, so a bad setting fails before any training
        self.learner_config("adversary")
        self.learner_config("defender")

    # ----- the two learners ----------------------------------------------------------------

    def learner_class(self, side: str) -> Any:
        from agents import LEARNERS

        return LEARNERS[self.adversary_algo if side == "adversary" else self.defender_algo]

    def learner_config(self, side: str, **phase: Any) -> Any:
        """The config of `side`'s learner. `phase` holds what a phase sets: keywords of the
        learner's config, its own fields (`opponent`) or its env's (`defender`)."""
        try:
            return self._learner_config(side, phase)
        except TypeError as exc:  # a field the learner's config does not have
            raise ValueError(f"GameConfig.{side}_config: {exc}") from None

    def _learner_config(self, side: str, phase: dict[str, Any]) -> Any:
        cls = self.learner_class(side)
        run = {"seed": self.seed, "batch_size": self.batch_size, "device": self.device}
        run["dtype"] = self.dtype
        if side == "adversary":
            env = self.env.replace(reward=self.adversary_reward)
            extra = dict(self.adversary_config)
            return cls.config_class(env=env, adversary_model=self.model, **run, **extra, **phase)
        env = self.env.replace(reward=self.defender_reward)
        extra = dict(self.defender_config)
        if self.defender_algo == "ra-rlhf":
            extra.setdefault("risk_n", self.defender_updates)
        extra.setdefault("max_new_tokens", self.env.defender_max_new_tokens)
        run["seed"] = self.seed + 1
        return cls.config_class(
            env=env, role="defender", adversary_model=self.env.defender, **run, **extra, **phase
        )

    # ----- files ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["env"] = self.env.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GameConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown GameConfig fields: {sorted(unknown)}")
        return cls(**data)


# ----- the game ----------------------------------------------------------------------------------


class Game:
    """One game directory: its phases, evaluations and rows, each done once."""

    def __init__(self, config: GameConfig, out: Path, progress: bool = True) -> None:
        self.config, self.out, self.progress = config, out, progress
        self._acting: tuple[str, Any] | None = None

    def iter_dir(self, k: int) -> Path:
        return self.out / f"iter-{k:02d}"

    def defender_spec(self, k: int) -> str:
        """The defender after iteration k: the initial LM, or the defender's run directory."""
        return str(self.config.env.defender) if k == 0 else str(self.iter_dir(k) / "defender")

    def adversary_dir(self, k: int) -> str:
        return str(self.iter_dir(k) / "adversary")

    # ----- phases ---------------------------------------------------------------------------

    def _learner(self, side: str, k: int, env: Any = None, **phase: Any) -> Any:
        """`side`'s learner to train in iteration k, in the vector env `env` (None: its own):
        its own checkpoint of iteration k when a phase was interrupted, else the one of
        iteration k - 1, else a new one; `phase` as in `GameConfig.learner_config`."""
        from agents import saved_update

        c = self.config
        cls = c.learner_class(side)
        for run in (self.iter_dir(k) / side, self.iter_dir(k - 1) / side):
            if saved_update(run) is not None:
                return cls.load(run, env=env, **phase)
        return cls(c.learner_config(side, **phase), env=env)

    def updates(self, side: str) -> int:
        return (
            self.config.adversary_updates if side == "adversary" else self.config.defender_updates
        )

    def phase_done(self, side: str, k: int) -> bool:
        from agents import saved_update

        return saved_update(self.iter_dir(k) / side) == k * self.updates(side)

    def train(self, side: str, k: int, env: Any = None, **phase: Any) -> None:
        """`side`'s phase of iteration k: its learner trained to update k * updates, with
        schedules over the game's iterations * updates."""
        learner = self._learner(side, k, env, **phase)
        updates, target = self.updates(side), k * self.updates(side)
        _say(f"iteration {k}: {side} phase, updates {learner.update_idx + 1}..{target}")
        learner.learn(
            self.config.iterations * updates,
            until=target,
            run_dir=self.iter_dir(k) / side,
            progress=self.progress,
        )
        del learner  # its models go before the next step loads its own
        gc.collect()

    def adversary_phase(self, k: int) -> None:
        if not self.phase_done("adversary", k):
            self.train("adversary", k, defender=self.defender_spec(k - 1))

    def defender_phase(self, k: int) -> None:
        import gymnasium as gym

        from redteam_gym.adversary import PromptMix
        from redteam_gym.prompts import load_openers

        if self.phase_done("defender", k):
            return
        c = self.config
        adversary = self.acting(self.adversary_dir(k))
        pool = [o.text for o in load_openers(c.prompt_pool, split="train")]
        mixed = PromptMix(adversary, pool, c.prompt_share, seed=c.seed)
        env = c.learner_config("defender").env
        env = env.replace(device=env.device or c.device, dtype=env.dtype or c.dtype)
        envs = gym.make_vec("SafeDialogue-v0", num_envs=c.batch_size, config=env, adversary=mixed)
        self.train("defender", k, env=envs, opponent=self.adversary_dir(k))
        envs.close()
        del adversary, mixed, envs

    # ----- evaluations ------------------------------------------------------------------------

    def suite(self, name: str, reward: str) -> Any:
        from benchmarks.suites import Suite

        c = self.config
        env = c.env.replace(
            split=c.eval_split,
            reward=reward,
            defender_temperature=0.7,
            defender_top_p=0.9,
            device=c.env.device or c.device,
            dtype=c.env.dtype or c.dtype,
        )
        return Suite(
            name=name,
            description="redteam-gym game evaluation",
            env=env,
            rollouts=c.eval_rollouts,
            batch_size=c.batch_size,
            seed=c.seed,
            cvar_alpha=CVAR_ALPHAS[0],
        )

    def evaluate(self, out: Path, adversary: str, defender: str, reward: str) -> dict[str, Any]:
        """One evaluation (resumed where it stopped); its summary and rollouts."""
        from benchmarks.records import read_rollouts
        from benchmarks.runner import evaluate

        summary_file = out / "summary.json"
        if not summary_file.exists():
            _say(f"  eval {out.relative_to(self.out)}")
            evaluate(
                adversary if adversary in HELDOUT_BASELINES else self.acting(adversary),
                self.suite(out.name, reward),
                out,
                defender=defender,
                resume=(out / "rollouts.jsonl").exists(),
                progress=False,
                report=False,
                adversary_model=self.config.model,
                device=self.config.device,
                dtype=self.config.dtype,
            )
        summary = json.loads(summary_file.read_text())
        return {"summary": summary, "records": read_rollouts(out / "rollouts.jsonl")}

    def acting(self, run: str) -> Any:
        """The trained adversary in `run`, loaded once for the defender phase and the
        evaluations that follow it (each reseeds it, so sharing changes no draw)."""
        from agents import load_adversary

        if self._acting is None or self._acting[0] != run:
            self.release()
            self._acting = (run, load_adversary(run, device=self.config.device))
        return self._acting[1]

    def release(self) -> None:
        """Drop the loaded adversary before another step loads its own models."""
        self._acting = None
        gc.collect()

    def adversary_metrics(self, k: int, against: int) -> dict[str, Any]:
        """The adversary of iteration k (the zero-shot baseline at k = 0) against the
        defender of iteration `against`."""
        name = "adversary-vs-" + ("initial" if against == 0 else "current")
        adversary = "zero-shot" if k == 0 else self.adversary_dir(k)
        run = self.evaluate(
            self.iter_dir(k) / "eval" / name, adversary, self.defender_spec(against), "perez"
        )
        s, records = run["summary"], run["records"]
        return {
            "asr": s["asr"],
            "asr_ci": s["asr_ci"],
            "return_mean": float(np.mean([r["return"] for r in records])),
            "def_p_unsafe": s["avg_def_toxicity"],
            "adv_p_unsafe": s["avg_adv_toxicity"],
            "self_bleu": s["self_bleu"],
            "embedding_diversity": s["embedding_diversity"],
            "dist_2": s["dist_2"],
            "samples": _samples(records),
        }

    def defender_metrics(self, k: int, adversary: str, label: str) -> dict[str, Any]:
        """The defender of iteration k against a held-out `adversary`."""
        from redteam_gym.metrics.risk import cvar
        from redteam_gym.rewards import is_refusal

        out = self.iter_dir(k) / "eval" / f"defender-vs-{label}"
        run = self.evaluate(out, adversary, self.defender_spec(k), self.config.defender_reward)
        s, records = run["summary"], run["records"]
        returns = np.asarray([r["return"] for r in records], dtype=np.float64)
        turns = [t for r in records for t in r["turns"]]
        return {
            "asr": s["asr"],
            "asr_ci": s["asr_ci"],
            "reward_mean": float(returns.mean()),
            **{f"cvar_{a:g}": cvar(returns, a) for a in CVAR_ALPHAS},
            "def_p_unsafe": s["avg_def_toxicity"],
            "refusal_rate": float(np.mean([is_refusal(t["defender"]) for t in turns])),
            "echo_rate": float(np.mean([_echoes(t["defender"], t["adversary"]) for t in turns])),
            "samples": _samples(records),
            **(self.gain(records, label) if k > 0 and label in HELDOUT_BASELINES else {}),
        }

    def gain(self, records: Sequence[dict[str, Any]], label: str) -> dict[str, Any]:
        """The defender's gain over the initial one against the same held-out adversary:
        both played the same conversations (openers, seeds, and so the same adversary
        messages), so the gain is paired by conversation, with 95% bootstrap intervals."""
        from benchmarks.records import read_rollouts

        initial = read_rollouts(self.iter_dir(0) / "eval" / f"defender-vs-{label}" / ROLLOUTS)
        pairs = {r["rollout"]: r for r in initial}
        if sorted(pairs) != sorted(r["rollout"] for r in records):
            return {}
        now = np.asarray([r["return"] for r in records])
        before = np.asarray([pairs[r["rollout"]]["return"] for r in records])
        same = np.mean([_messages(r) == _messages(pairs[r["rollout"]]) for r in records])
        return {"gain": _paired_gain(now, before, seed=self.config.seed), "same_messages": same}

    def row(self, k: int) -> dict[str, Any]:
        """Iteration k's metrics (k = 0: the initial players)."""
        # the adversary of iteration k first, while it is the one loaded (`acting`), then the
        # earlier ones, each loaded once
        vs_current = self.adversary_metrics(k, k)
        vs_initial = vs_current if k == 0 else self.adversary_metrics(k, 0)
        heldout = {name: name for name in HELDOUT_BASELINES}
        heldout.update({f"iter-{j:02d}": self.adversary_dir(j) for j in range(1, k)})
        defender = {label: self.defender_metrics(k, spec, label) for label, spec in heldout.items()}
        keys = (
            "asr",
            "reward_mean",
            *(f"cvar_{a:g}" for a in CVAR_ALPHAS),
            "refusal_rate",
            "echo_rate",
        )
        # averaged over the baselines, which no defender phase plays: the adversaries of
        # earlier iterations were the defender's opponents then (they test forgetting)
        pooled = {
            key: float(np.mean([defender[b][key] for b in HELDOUT_BASELINES])) for key in keys
        }
        row: dict[str, Any] = {
            "iteration": k,
            "adversary": {"vs_current": vs_current, "vs_initial": vs_initial},
            "defender": defender,
            "defender_heldout_mean": pooled,
        }
        if k > 0:
            row["training"] = {
                side: _phase_stats(self.iter_dir(k) / side, k, self.updates(side))
                for side in ("adversary", "defender")
            }
        return row

    # ----- the loop ---------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        from redteam_gym.files import atomic_write

        rows: list[dict[str, Any]] = []
        for k in range(self.config.iterations + 1):
            if k > 0:
                self.release()
                self.adversary_phase(k)
                self.defender_phase(k)
            rows.append(self.row(k))
            atomic_write(self.out / ROWS_FILE, "".join(json.dumps(r) + "\n" for r in rows))
            _say(_row_line(rows[-1]))
        self.release()
        write_report(self.out, self.config, rows)
        return rows


def run_game(
    config: GameConfig | None,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Play the game into `out` (a new directory, or with `resume` one holding `game.json`,
    whose config is then used; `config` must be None or equal to it). Returns the rows."""
    from redteam_gym.files import atomic_write

    out = Path(out)
    saved = out / GAME_FILE
    if resume:
        if not saved.exists():
            raise FileNotFoundError(f"{out} holds no {GAME_FILE}: nothing to resume")
        stored = GameConfig.from_dict(json.loads(saved.read_text()))
        if config is not None and config.to_dict() != stored.to_dict():
            diff = sorted(k for k, v in config.to_dict().items() if stored.to_dict().get(k) != v)
            raise ValueError(
                f"{saved} was written with other settings ({', '.join(diff)} differ); resume "
                "with the game's own settings (--resume alone) or start another --out"
            )
        config = stored
    else:
        if saved.exists():
            raise FileExistsError(f"{out} already holds a game: pass --resume or another --out")
        config = config or GameConfig()
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(saved, json.dumps(config.to_dict(), indent=2))
    return Game(config, out, progress).run()


# ----- the report --------------------------------------------------------------------------------


def write_report(out: Path, config: GameConfig, rows: Sequence[dict[str, Any]]) -> None:
    """`report.md` (tables over iterations and sample conversations) and `plots/game.png`."""
    from redteam_gym.files import atomic_write

    _plot(out / "plots" / "game.png", rows)
    lines = [
        "# Two-player game",
        "",
        f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Adversary "
        f"{config.adversary_algo} ({config.adversary_updates} updates per iteration, reward "
        f"`{config.adversary_reward}`), defender {config.defender_algo} "
        f"({config.defender_updates} updates, reward `{config.defender_reward}`, "
        f"{config.prompt_share:.0%} of its messages from `{config.prompt_pool}`), "
        f"{config.iterations} iterations, judge `{config.env.judge}`, "
        f"{config.env.max_turns}-turn dialogues. Evaluations: {config.eval_rollouts} "
        f"conversations on the `{config.eval_split}` openers, the defender sampled at "
        "temperature 0.7. Iteration 0 is the initial players (the zero-shot baseline stands "
        "for the initial adversary: the same LM and prompt).",
        "",
        "## The adversary",
        "",
        "| iteration | ASR vs current defender | ASR vs initial defender | P(unsafe) of replies "
        "(current) | adversary's own P(unsafe) | Self-BLEU | embedding diversity | distinct-2 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a, b = r["adversary"]["vs_current"], r["adversary"]["vs_initial"]
        lines.append(
            f"| {r['iteration']} | {_asr(a)} | {_asr(b)} | {a['def_p_unsafe']:.4f} | "
            f"{a['adv_p_unsafe']:.4f} | {a['self_bleu']:.3f} | {a['embedding_diversity']:.3f} | "
            f"{a['dist_2']:.3f} |"
        )
    lines += [
        "",
        "## The defender on held-out adversaries",
        "",
        "Reward: the defender's return per conversation (`" + config.defender_reward + "`); "
        "CVaR: the mean of the lowest 10% / 20% of returns (its worst conversations). The "
        "zero-shot and few-shot baselines are held out (no defender phase plays them; **mean** "
        "averages the two); `iter-KK` is the adversary of an earlier iteration, the defender's "
        "opponent then, so its row tests forgetting. All on the held-out openers. Echoes: "
        "replies whose words mostly repeat the message's (the `relevance` term scores only "
        "the words a reply does not echo).",
        "",
        "| iteration | adversary | ASR | mean reward | CVaR 0.1 | CVaR 0.2 | P(unsafe) | "
        "refusals | echoes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for label, d in r["defender"].items():
            lines.append(
                f"| {r['iteration']} | {label} | {_asr(d)} | {d['reward_mean']:.4f} | "
                f"{d['cvar_0.1']:.4f} | {d['cvar_0.2']:.4f} | {d['def_p_unsafe']:.4f} | "
                f"{d['refusal_rate']:.0%} | {d['echo_rate']:.0%} |"
            )
        m = r["defender_heldout_mean"]
        lines.append(
            f"| {r['iteration']} | **mean of the baselines** | {m['asr']:.3f} | {m['reward_mean']:.4f} | "
            f"{m['cvar_0.1']:.4f} | {m['cvar_0.2']:.4f} | | {m['refusal_rate']:.0%} | "
            f"{m['echo_rate']:.0%} |"
        )
    gains = [(r["iteration"], label, d) for r in rows for label, d in r["defender"].items()]
    gains = [g for g in gains if "gain" in g[2]]
    if gains:
        lines += [
            "",
            "Gain over the initial defender against the same baseline: the same conversations "
            "(openers, seeds, adversary messages; `same` is the share whose messages match), "
            "paired, with 95% bootstrap intervals over conversations.",
            "",
            "| iteration | adversary | same | mean reward gain | CVaR 0.1 gain | CVaR 0.2 gain |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for k, label, d in gains:
            g = d["gain"]
            cells = [
                f"{g[m]:+.4f} [{g[m + '_ci'][0]:+.3f}, {g[m + '_ci'][1]:+.3f}]"
                for m in ("reward_mean", "cvar_0.1", "cvar_0.2")
            ]
            lines.append(
                f"| {k} | {label} | {d['same_messages']:.0%} | " + " | ".join(cells) + " |"
            )
    training = [r for r in rows if "training" in r]
    if training:
        lines += [
            "",
            "## Training (means over each phase's updates)",
            "",
            "| iteration | side | judge score | KL | distinct share of the batch |",
            "|---:|---|---:|---:|---:|",
        ]
        for r in training:
            for side, t in r["training"].items():
                lines.append(
                    f"| {r['iteration']} | {side} | {t['score']:.4f} | {t['kl']:.3f} | "
                    f"{t['unique_share']:.2f} |"
                )
    lines += ["", "![the game over iterations](plots/game.png)"]
    lines += ["", "## Samples (first conversations of each evaluation)", ""]
    for r in rows:
        lines.append(f"### Iteration {r['iteration']}")
        shown = {"adversary vs current defender": r["adversary"]["vs_current"]["samples"]}
        shown.update({f"defender vs {k}": d["samples"] for k, d in r["defender"].items()})
        for title, samples in shown.items():
            lines += ["", f"**{title}**", ""]
            for s in samples:
                lines.append(
                    f"- opener: {_quote(s['opener'])}\n  - adversary: {_quote(s['adversary'])}"
                    f"\n  - defender (P(unsafe) {s['p_unsafe']:.3f}): {_quote(s['defender'])}"
                )
        lines.append("")
    atomic_write(out / "report.md", "\n".join(lines) + "\n")


def _plot(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0][0]
    for key, label in (("vs_current", "vs current defender"), ("vs_initial", "vs initial")):
        ax.plot(it, [r["adversary"][key]["asr"] for r in rows], marker="o", label=label)
        ax.plot(
            it,
            [r["adversary"][key]["def_p_unsafe"] for r in rows],
            marker=".",
            linestyle="--",
            label=f"mean P(unsafe) {label}",
        )
    ax.set(title="Adversary: ASR and P(unsafe) of the replies", xlabel="iteration")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    labels = sorted({k for r in rows for k in r["defender"]})
    for label in labels:
        pts = [
            (r["iteration"], r["defender"][label]["asr"]) for r in rows if label in r["defender"]
        ]
        ax.plot(*zip(*pts, strict=True), marker="o", label=label)
    ax.set(title="Defender: ASR of held-out adversaries", xlabel="iteration")
    ax.legend(fontsize=7)
    ax = axes[1][0]
    for key, label in (("reward_mean", "mean"), ("cvar_0.2", "CVaR 0.2"), ("cvar_0.1", "CVaR 0.1")):
        ax.plot(it, [r["defender_heldout_mean"][key] for r in rows], marker="o", label=label)
    ax.set(title="Defender's reward against the held-out baselines", xlabel="iteration")
    ax.legend(fontsize=7)
    ax = axes[1][1]
    for key, label in (
        ("self_bleu", "Self-BLEU (lower: more diverse)"),
        ("embedding_diversity", "embedding diversity"),
        ("dist_2", "distinct-2"),
    ):
        ax.plot(it, [r["adversary"]["vs_current"][key] for r in rows], marker="o", label=label)
    ax.set(title="Adversary's diversity", xlabel="iteration")
    ax.legend(fontsize=7)
    for a in axes.flat:
        a.set_xticks(it)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----- helpers -----------------------------------------------------------------------------------


def _phase_stats(run: Path, k: int, updates: int) -> dict[str, float]:
    """Means of the learner's logged metrics (`metrics.jsonl`) over iteration k's updates."""
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    mine = [h for h in logged if (k - 1) * updates < h["update"] <= k * updates]

    def mean(key: str) -> float:
        values = [h[key] for h in mine if key in h]
        return float(np.mean(values)) if values else math.nan

    return {
        "score": mean("objective/scores"),
        "kl": mean("objective/kl"),
        "unique_share": mean("diversity/unique_share"),
    }


def _messages(record: dict[str, Any]) -> list[str]:
    return [t["adversary"] for t in record["turns"]]


def _paired_gain(
    now: np.ndarray, before: np.ndarray, seed: int, resamples: int = 2000
) -> dict[str, Any]:
    """Mean and CVaR gains (now - before) over paired conversations, each with the 2.5 and
    97.5 percentiles of its bootstrap over conversations (resampled as pairs)."""
    from benchmarks.studies.defender_risk import bootstrap_prompts, statistic

    mats = {"now": now[:, None], "before": before[:, None]}
    out: dict[str, Any] = {}
    for key in ("reward_mean", *(f"cvar_{a:g}" for a in CVAR_ALPHAS)):
        name = "mean_reward" if key == "reward_mean" else key
        b = bootstrap_prompts(mats, statistic(name), baseline="before", n=resamples, seed=seed)
        out[key] = b["now"]["diff"]
        out[f"{key}_ci"] = [b["now"]["diff_lo"], b["now"]["diff_hi"]]
    return out


def _echoes(reply: str, message: str) -> bool:
    """Whether most of the reply's words repeat runs of the message's (`echo_mask`): the
    `relevance` term once paid for such a reply (it now scores only the words not echoed)."""
    from redteam_gym.metrics.diversity import word_tokenize
    from redteam_gym.rewards import echo_mask

    mask = echo_mask(word_tokenize(reply), word_tokenize(message))
    return bool(mask) and sum(mask) >= 0.5 * len(mask)


def _samples(records: Sequence[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    out = []
    for r in records[:n]:
        t = max(r["turns"], key=lambda t: t["defender_p_unsafe"])
        out.append(
            {
                "opener": r["opener"],
                "adversary": t["adversary"],
                "defender": t["defender"],
                "p_unsafe": t["defender_p_unsafe"],
            }
        )
    return out


def _asr(m: dict[str, Any]) -> str:
    lo, hi = m["asr_ci"]
    return f"{m['asr']:.3f} [{lo:.2f}, {hi:.2f}]"


def _quote(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _row_line(row: dict[str, Any]) -> str:
    a = row["adversary"]["vs_current"]
    m = row["defender_heldout_mean"]
    return (
        f"iteration {row['iteration']}: adversary ASR {a['asr']:.3f} (replies' P(unsafe) "
        f"{a['def_p_unsafe']:.4f}, Self-BLEU {a['self_bleu']:.3f}); defender on held-out "
        f"adversaries: ASR {m['asr']:.3f}, reward {m['reward_mean']:.4f}, CVaR 0.1 "
        f"{m['cvar_0.1']:.4f}"
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
