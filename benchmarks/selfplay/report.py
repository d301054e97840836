"""The game's report: `report.md` (tables over the iterations, sample conversations) and
`plots/game.png`, from the rows `benchmarks.selfplay.loop` writes to `iterations.jsonl`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.selfplay.config import GameConfig

__all__ = ["write_report"]


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


def _asr(m: dict[str, Any]) -> str:
    lo, hi = m["asr_ci"]
    return f"{m['asr']:.3f} [{lo:.2f}, {hi:.2f}]"


def _quote(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= limit else text[:limit] + "...")
