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

The package: `config` holds `GameConfig` (light: the command line builds its flags from it),
`loop` plays the game (`Game`, `run_game`), `report` writes `report.md` and the plot.
"""

from benchmarks.selfplay.config import GAME_FILE, GameConfig
from benchmarks.selfplay.loop import Game, run_game
from benchmarks.selfplay.report import write_report

__all__ = ["GAME_FILE", "Game", "GameConfig", "run_game", "write_report"]
