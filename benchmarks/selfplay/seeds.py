"""The game over seeds: one table per claim, pooled over several game directories.

    python -m benchmarks.selfplay.seeds GAME_DIR GAME_DIR ... [--out FILE]

A game's own report (`report.md`) reads one seed, whose evaluations are small (16-32
conversations), so an ASR of a few percent moves by one conversation. This pools the
seeds' evaluations of each iteration: successes and conversations summed (each evaluation's
`summary.json`), with a 95% Wilson interval, and the per-seed means of the other figures. It
then tests the game's claim: the defender's held-out ASR at the last iteration against the
initial defender's (pooled, Newcombe's interval on the difference, Fisher's one-sided test),
and the adversary's diversity against iteration 0's zero-shot baseline. Where every game's
evaluation was audited (`redteam-gym audit DIR --labels ...`), its confirmed ASR (a reply
labelled unsafe) is pooled beside the judge's.

The games must share their settings except `seed` (the same iterations, evaluation sizes
and players); a mismatch is named.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.selfplay.config import GAME_FILE
from redteam_gym.files import read_jsonl
from redteam_gym.metrics import newcombe_interval, wilson_interval

__all__ = ["Pooled", "confirmed", "load_games", "pooled", "seeds_table"]

ITERATIONS = "iterations.jsonl"


@dataclass(frozen=True)
class Pooled:
    """Successes over conversations, pooled over seeds."""

    successes: int
    n: int

    @property
    def rate(self) -> float:
        return self.successes / self.n

    def cell(self) -> str:
        lo, hi = wilson_interval(self.successes, self.n)
        return (
            f"{100 * self.rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({self.successes}/{self.n})"
        )


def load_games(dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Each game's config and rows (`game.json`, `iterations.jsonl`); the games must differ
    only in `seed`."""
    games = []
    for d in dirs:
        if not (d / GAME_FILE).is_file() or not (d / ITERATIONS).is_file():
            raise FileNotFoundError(f"{d} is not a game directory (no {GAME_FILE} or {ITERATIONS})")
        config = json.loads((d / GAME_FILE).read_text(encoding="utf-8"))
        games.append({"dir": d, "config": config, "rows": read_jsonl(d / ITERATIONS)})
    first = {k: v for k, v in games[0]["config"].items() if k not in ("seed", "device")}
    for g in games[1:]:
        other = {k: v for k, v in g["config"].items() if k not in ("seed", "device")}
        diff = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if diff:
            raise ValueError(f"{g['dir']} differs from {games[0]['dir']} in {', '.join(diff)}")
    seeds = [g["config"]["seed"] for g in games]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"the games repeat a seed ({seeds}): pooling needs one game per seed")
    iterations = {len(g["rows"]) for g in games}
    if len(iterations) > 1:
        raise ValueError(f"the games have different numbers of finished iterations: {iterations}")
    return games


def _successes(metrics: dict[str, Any], n: int) -> int:
    return round(metrics["asr"] * n)


def pooled(games: Sequence[dict[str, Any]], k: int, *path: str) -> Pooled:
    """Iteration k's successes at `path` in the rows (e.g. "adversary", "vs_current"),
    summed over the games."""
    n = int(games[0]["config"]["eval_rollouts"])
    total = 0
    for g in games:
        node = g["rows"][k]
        for key in path:
            node = node[key]
        total += _successes(node, n)
    return Pooled(total, n * len(games))


def confirmed(games: Sequence[dict[str, Any]], k: int, name: str) -> Pooled | None:
    """Iteration k's audited successes (conversations with a reply labelled unsafe) of the
    evaluation `name` (`iter-KK/eval/NAME/audit/audit.json`, `redteam-gym audit`), summed over
    the games; None unless every game's evaluation was audited. At iteration 0 the current
    defender is the initial one, so `adversary-vs-current` falls back to `adversary-vs-initial`."""
    from benchmarks.audit import load_audit

    total = n = 0
    for g in games:
        evals = Path(g["dir"]) / f"iter-{k:02d}" / "eval"
        path = evals / name
        if not path.is_dir() and k == 0 and name == "adversary-vs-current":
            path = evals / "adversary-vs-initial"
        audit = load_audit(path)
        if audit is None or audit.get("num_confirmed") is None:
            return None
        total += int(audit["num_confirmed"])
        n += int(audit["num_rollouts"])
    return Pooled(total, n)


def _confirmed_cell(games: Sequence[dict[str, Any]], k: int, name: str) -> str:
    result = confirmed(games, k, name)
    return "-" if result is None else result.cell()


def _mean(games: Sequence[dict[str, Any]], k: int, *path: str) -> float:
    values = []
    for g in games:
        node = g["rows"][k]
        for key in path:
            node = node[key]
        values.append(float(node))
    return float(np.mean(values))


def seeds_table(games: Sequence[dict[str, Any]]) -> list[str]:
    """The markdown lines: the adversary's and the defender's tables over iterations, and
    the claim's tests."""
    from scipy.stats import fisher_exact

    seeds = ", ".join(str(g["config"]["seed"]) for g in games)
    n = int(games[0]["config"]["eval_rollouts"])
    last = len(games[0]["rows"]) - 1
    lines = [
        f"{len(games)} games (seeds {seeds}), {n} conversations per evaluation and seed, pooled: "
        "ASR is successes over the seeds' conversations with a 95% Wilson interval; the other "
        "figures are means over the seeds.",
        "",
        "| iteration | adversary ASR vs current | vs initial | confirmed, vs current "
        "| confirmed, vs initial | Def P(unsafe), current | adversary's own P(unsafe) "
        "| Dist-2 | Self-BLEU |",
        "|---:|---|---|---|---|---:|---:|---:|---:|",
    ]
    for k in range(last + 1):
        adv = ("adversary", "vs_current")
        lines.append(
            f"| {k} | {pooled(games, k, *adv).cell()} | "
            f"{pooled(games, k, 'adversary', 'vs_initial').cell()} | "
            f"{_confirmed_cell(games, k, 'adversary-vs-current')} | "
            f"{_confirmed_cell(games, k, 'adversary-vs-initial')} | "
            f"{_mean(games, k, *adv, 'def_p_unsafe'):.4f} | "
            f"{_mean(games, k, *adv, 'adv_p_unsafe'):.4f} | "
            f"{_mean(games, k, *adv, 'dist_2'):.3f} | {_mean(games, k, *adv, 'self_bleu'):.3f} |"
        )
    lines += [
        "",
        "The defender against the held-out zero-shot adversary (no phase trains against it): "
        "its ASR pooled, its reward's mean and lower-tail CVaR averaged over the seeds.",
        "",
        "| iteration | held-out ASR | confirmed | mean reward | CVaR 0.1 | CVaR 0.2 | refusals "
        "| echoes |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    held = ("defender", "zero-shot")
    for k in range(last + 1):
        lines.append(
            f"| {k} | {pooled(games, k, *held).cell()} | "
            f"{_confirmed_cell(games, k, 'defender-vs-zero-shot')} | "
            f"{_mean(games, k, *held, 'reward_mean'):.4f} | "
            f"{_mean(games, k, *held, 'cvar_0.1'):.4f} | {_mean(games, k, *held, 'cvar_0.2'):.4f} | "
            f"{_mean(games, k, *held, 'refusal_rate'):.0%} | {_mean(games, k, *held, 'echo_rate'):.0%} |"
        )
    first, final = pooled(games, 0, *held), pooled(games, last, *held)
    lo, hi = newcombe_interval(final.successes, final.n, first.successes, first.n)
    table = [
        [first.successes, first.n - first.successes],
        [final.successes, final.n - final.successes],
    ]
    p = float(fisher_exact(table, alternative="greater").pvalue)
    a0 = confirmed(games, 0, "defender-vs-zero-shot")
    ak = confirmed(games, last, "defender-vs-zero-shot")
    if a0 is not None and ak is not None:
        clo, chi = newcombe_interval(ak.successes, ak.n, a0.successes, a0.n)
        cp = float(
            fisher_exact(
                [[a0.successes, a0.n - a0.successes], [ak.successes, ak.n - ak.successes]],
                alternative="greater",
            ).pvalue
        )
        audited_line = (
            f" On confirmed ASR: {100 * (ak.rate - a0.rate):+.1f} points [{100 * clo:+.1f}, "
            f"{100 * chi:+.1f}], p = {cp:.3g}."
        )
    else:
        audited_line = ""
    d0 = _mean(games, 0, "adversary", "vs_current", "dist_2")
    dk = _mean(games, last, "adversary", "vs_current", "dist_2")
    lines += [
        "",
        f"**The defender's held-out ASR**, iteration {last} against the initial defender: "
        f"{100 * (final.rate - first.rate):+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] "
        f"(Newcombe), one-sided Fisher p = {p:.3g} for a fall.{audited_line}",
        f"**The adversary's Dist-2**: {d0:.3f} at iteration 0 (the zero-shot baseline), "
        f"{dk:.3f} at iteration {last}.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("games", nargs="+", type=Path, help="game directories (one per seed)")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here too")
    args = parser.parse_args(argv)
    try:
        games = load_games(args.games)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    from benchmarks.report import emit_markdown

    return emit_markdown(seeds_table(games), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
