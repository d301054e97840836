"""Studies: scripts that ask one question of a training run and record the answer.

- `python -m benchmarks.studies.training_curves RUN [RUN ...] --out DIR`: learning curves.
- `python -m benchmarks.studies.policy_gain RUN --out DIR`: did training raise the reward on
  held-out openers?
- `python -m benchmarks.studies.reward_noise RUN --initial --out DIR`: how much of the
  reward can an adversary move at all?

They use the library (`benchmarks.runner`, `agents`, `redteam_gym`); nothing imports them.
"""
