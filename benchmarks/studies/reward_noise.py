"""How much of the judge reward can the adversary control? A variance decomposition.

    python -m benchmarks.studies.reward_noise runs/ppo --initial --openers 32 --utterances 4 --replies 4 \
        --out benchmarks/results/reward-noise

The adversary speaks `--utterances` first-turn utterances to each of `--openers` openers, and
the defender answers each utterance `--replies` times with fresh samples. A balanced nested
random-effects model splits the variance of the first turn's reward -log(1 - p_unsafe):

- opener: how much the conversation opener alone moves the reward;
- utterance: what the adversary's choice of words moves, given the opener (the part a
  learner can act on);
- defender reply: the defender's sampling noise, given opener and utterance.

The estimates are the unbiased ANOVA ones (each level's spread minus what the level below
contributes to it), clipped at zero. A policy-gradient batch of B dialogues sees utterance
effects of spread sigma_u through noise of spread sigma_total: `snr` is sigma_u / sigma_total,
and `dialogues_for_snr_1` = (sigma_total / sigma_u)^2 the batch that makes the batch-mean
estimate of a one-sigma utterance effect as large as its standard error.

The adversary is `zero-shot`, `few-shot` or a training run DIR (the trained policy, or with
`--initial` the run's untrained one). With a run DIR, the defender, judge, openers and
defender decoding are the run's; otherwise the learners' defaults. With a greedy defender
(`--defender-temperature 0`) the reply component is zero and the utterance share is the whole
of what the opener does not fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from redteam_gym.files import read_jsonl


def _components(rewards: np.ndarray) -> tuple[float, float, float]:
    """Unbiased (possibly negative) ANOVA estimates of the opener, utterance, reply variances."""
    _, n_utt, n_rep = rewards.shape
    reply_var = rewards.var(axis=2, ddof=1).mean()  # E = s_r^2
    cells = rewards.mean(axis=2)
    cell_var = cells.var(axis=1, ddof=1).mean()  # E = s_u^2 + s_r^2 / R
    opener_var = cells.mean(axis=1).var(ddof=1)  # E = s_o^2 + s_u^2 / U + s_r^2 / (U R)
    return (
        float(opener_var - cell_var / n_utt),
        float(cell_var - reply_var / n_rep),
        float(reply_var),
    )


def _utterance_share(rewards: np.ndarray) -> float:
    parts = [max(0.0, v) for v in _components(rewards)]
    total = sum(parts)
    return parts[1] / total if total > 0 else math.nan


def decompose(rewards: np.ndarray, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Variance components of a balanced `[openers, utterances, replies]` reward array.

    Needs at least 2 of each. Returns the three components (clipped at zero; the utterance
    one also unclipped, `var_utterance_raw`), their shares of the total, the signal-to-noise
    figures described in the module docstring (`dialogues_for_snr_1` is None when the
    utterance component is zero) and a 95% percentile-bootstrap interval of the utterance
    share from `bootstrap` resamples of the openers.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 3 or min(rewards.shape) < 2:
        raise ValueError(
            f"rewards must be [openers, utterances, replies] with at least 2 of each, "
            f"got shape {rewards.shape}"
        )
    raw = _components(rewards)
    names = ("opener", "utterance", "reply")
    components = {name: max(0.0, value) for name, value in zip(names, raw, strict=True)}
    total = sum(components.values())
    out: dict[str, Any] = {"mean": float(rewards.mean()), "total_var": float(total)}
    for name, value in components.items():
        out[f"var_{name}"] = float(value)
        out[f"share_{name}"] = float(value / total) if total > 0 else math.nan
    out["var_utterance_raw"] = raw[1]
    utterance = components["utterance"]
    out["snr"] = math.sqrt(utterance / total) if total > 0 else math.nan
    out["dialogues_for_snr_1"] = total / utterance if utterance > 0 else None
    rng = np.random.default_rng(seed)
    n = rewards.shape[0]
    shares = [_utterance_share(rewards[rng.integers(n, size=n)]) for _ in range(bootstrap)]
    shares = [x for x in shares if not math.isnan(x)]
    out["share_utterance_ci95"] = (
        [float(np.percentile(shares, 2.5)), float(np.percentile(shares, 97.5))] if shares else None
    )
    return out


def sample_rewards(
    adversary: Any,
    engine: Any,
    openers: Sequence[Any],
    *,
    utterances: int,
    replies: int,
    seed: int,
    batch_size: int,
    progress: bool = False,
) -> tuple[np.ndarray, list[list[str]], list[list[list[str]]]]:
    """`[openers, utterances, replies]` first-turn rewards, the utterances and the replies.

    Openers go `batch_size` at a time; utterance u of chunk c is sampled with the adversary
    re-seeded to (seed, c, u), and the `replies` answers to one utterance come from one
    defender batch with its own generator, seeded (seed, c, u, 1).
    """
    from tqdm import tqdm

    from benchmarks.runner import reseed_adversary
    from redteam_gym.envs.core import Dialogue, torch_generator
    from redteam_gym.transcript import render_transcript

    rewards = np.zeros((len(openers), utterances, replies))
    texts: list[list[str]] = [[] for _ in openers]
    answers: list[list[list[str]]] = [[] for _ in openers]
    chunks = [
        range(i, min(i + batch_size, len(openers))) for i in range(0, len(openers), batch_size)
    ]
    bar = tqdm(total=len(chunks) * utterances, disable=not progress, desc="reward noise")
    for c, chunk in enumerate(chunks):
        for u in range(utterances):
            reseed_adversary(adversary, _seed(seed, c, u))
            starts = [Dialogue.start(openers[i]) for i in chunk]
            acts = adversary.act([render_transcript(d.transcript) for d in starts])
            dialogues = [Dialogue.start(openers[i]) for i in chunk for _ in range(replies)]
            said = [a for a in acts for _ in range(replies)]
            generator = torch_generator(engine, _seed(seed, c, u, 1))
            results = engine.step(dialogues, said, generator)
            for j, i in enumerate(chunk):
                own = results[j * replies : (j + 1) * replies]
                rewards[i, u] = [r.reward for r in own]
                texts[i].append(own[0].info["utterance"])
                answers[i].append([r.info["defender_response"] for r in own])
            bar.update(1)
    bar.close()
    return rewards, texts, answers


def _seed(*words: int) -> int:
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def load_adversary_and_env(spec: str, initial: bool) -> tuple[Any, Any]:
    """The adversary to probe and the learner config whose env settings to use."""
    from agents import LEARNERS, LearnerConfig
    from agents.common.checkpoint import checkpoint_learner_name

    path = Path(spec)
    if path.is_dir():
        cls = {c.__name__: c for c in LEARNERS.values()}[checkpoint_learner_name(path)]
        if initial:  # the run's config alone: its trained weights are never loaded
            config = cls.load_config(path)
            return cls(config), config
        trained = cls.load(path)
        return trained, trained.config
    if initial:
        raise ValueError("--initial needs a training run directory as the adversary")
    from benchmarks.runner import make_adversary
    from benchmarks.suites import Suite

    config = LearnerConfig()
    suite = Suite(name="reward-noise").with_overrides(prompts=config.env.prompts)
    return make_adversary(spec, suite), config


def write_tables(result: dict[str, Any], examples: list[dict[str, Any]], out: Path) -> str:
    s = result["components"]
    lines = [
        f"{result['adversary']}: {result['openers']} openers x {result['utterances']} "
        f"utterances x {result['replies']} defender replies (first turn, seed {result['seed']}, "
        f"defender temperature {result['defender_temperature']:g}), mean reward {s['mean']:.4f}.",
        "",
        "| source of variance | variance | share |",
        "|---|---|---|",
    ]
    for name, label in (
        ("opener", "opener"),
        ("utterance", "adversary utterance (given the opener)"),
        ("reply", "defender reply sampling (given both)"),
    ):
        lines.append(f"| {label} | {s['var_' + name]:.5f} | {s['share_' + name]:.1%} |")
    ci = s["share_utterance_ci95"]
    needed = s["dialogues_for_snr_1"]
    lines += [
        "",
        (
            f"Utterance share 95% interval (bootstrap over openers): [{ci[0]:.1%}, {ci[1]:.1%}]; "
            if ci
            else "No variance to split; "
        )
        + f"unclipped utterance variance {s['var_utterance_raw']:.5f}.",
        f"Signal-to-noise per dialogue (sigma_utterance / sigma_total): {s['snr']:.3f}; "
        + (
            f"a batch of {needed:.1f} dialogues brings a one-sigma utterance effect to one "
            "standard error."
            if needed is not None
            else "no utterance effect was measured."
        ),
        "",
        "Utterances with the highest mean reward over their replies:",
        "",
        "| mean reward | rewards of the replies | utterance |",
        "|---|---|---|",
    ]
    for ex in examples:
        text = ex["utterance"].replace("|", "\\|").replace("\n", " ")
        shown = ", ".join(f"{r:.2f}" for r in ex["rewards"])
        lines.append(f"| {ex['mean']:.3f} | {shown} | {text} |")
    table = "\n".join(lines) + "\n"
    (out / "reward_noise.md").write_text(table)
    return table


def summarize(out: Path, examples: int = 10) -> str:
    """(Re)compute `reward_noise.json` and `.md` of a DIR from its `samples.jsonl`."""
    settings_path, samples_path = out / "reward_noise.json", out / "samples.jsonl"
    for path in (settings_path, samples_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {out} a reward_noise output DIR?")
    result = json.loads(settings_path.read_text())
    records = read_jsonl(samples_path)
    shape = (result["openers"], result["utterances"], result["replies"])
    rewards = np.asarray([r["rewards"] for r in records], dtype=np.float64).reshape(shape)
    result["components"] = decompose(rewards, seed=result["seed"])
    settings_path.write_text(json.dumps(result, indent=2) + "\n")
    top = sorted(records, key=lambda r: -r["mean"])[:examples]
    return write_tables(result, top, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "adversary", nargs="?", help="'zero-shot', 'few-shot' or a training run directory"
    )
    parser.add_argument("--initial", action="store_true", help="the run's untrained policy")
    parser.add_argument("--out", type=Path, required=True, help="where to write the results")
    parser.add_argument(
        "--summarize", action="store_true", help="only recompute --out's tables from its samples"
    )
    parser.add_argument("--openers", type=int, default=32, help="openers (distinct, train split)")
    parser.add_argument("--utterances", type=int, default=4, help="utterances per opener")
    parser.add_argument("--replies", type=int, default=4, help="defender replies per utterance")
    parser.add_argument("--batch-size", type=int, default=16, help="openers per adversary batch")
    parser.add_argument("--split", default="train", help="opener split: train or eval")
    parser.add_argument("--seed", type=int, default=0, help="seeds openers and sampling")
    parser.add_argument("--examples", type=int, default=10, help="top utterances to list")
    parser.add_argument(
        "--defender-temperature",
        type=float,
        default=None,
        help="override the run's defender temperature (0: greedy)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(args.out, args.examples), end="")
        return 0
    if args.adversary is None:
        parser.error("give the adversary to probe (or --summarize an output DIR)")
    for name in ("openers", "utterances", "replies"):
        if getattr(args, name) < 2:
            parser.error(f"--{name} must be >= 2, got {getattr(args, name)}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")

    try:
        adversary, config = load_adversary_and_env(args.adversary, args.initial)
    except ValueError as err:
        parser.error(str(err))
    if args.defender_temperature is not None:
        config = dataclasses.replace(
            config, env=config.env.replace(defender_temperature=args.defender_temperature)
        )
    from benchmarks.batches import engine_of, make_envs
    from benchmarks.studies.policy_gain import run_suite

    # the env a policy_gain check of this run would use, on the chosen split
    suite = run_suite(config, 2, args.seed).with_overrides(split=args.split, max_turns=1)
    device = getattr(adversary, "device", None)
    engine = engine_of(make_envs(suite, device=str(device) if device else None, reuse=False))
    if args.openers > len(engine.openers):
        parser.error(f"--openers {args.openers} > the {len(engine.openers)} openers available")
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(engine.openers), size=args.openers, replace=False)
    openers = [engine.openers[int(i)] for i in picks]
    rewards, texts, answers = sample_rewards(
        adversary,
        engine,
        openers,
        utterances=args.utterances,
        replies=args.replies,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    settings = {
        "adversary": type(adversary).__name__ + (" (initial)" if args.initial else ""),
        "source": args.adversary,
        "openers": args.openers,
        "utterances": args.utterances,
        "replies": args.replies,
        "split": args.split,
        "seed": args.seed,
        "defender": config.env.defender,
        "judge": config.env.judge,
        "defender_max_new_tokens": config.env.defender_max_new_tokens,
        "defender_temperature": config.env.defender_temperature,
        "defender_top_p": config.env.defender_top_p,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "samples.jsonl").open("w") as f:
        for i, opener in enumerate(openers):
            for u in range(args.utterances):
                record = {
                    "opener_id": opener.id,
                    "utterance": texts[i][u],
                    "rewards": rewards[i, u].tolist(),
                    "replies": answers[i][u],
                    "mean": float(rewards[i, u].mean()),
                }
                f.write(json.dumps(record) + "\n")
    (args.out / "reward_noise.json").write_text(json.dumps(settings, indent=2) + "\n")
    print(summarize(args.out, args.examples), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
