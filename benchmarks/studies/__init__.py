"""Studies: scripts that ask one question of a training run and record the answer.

- `python -m benchmarks.studies.training_curves RUN [RUN ...] --out DIR`: learning curves.
- `python -m benchmarks.studies.policy_gain RUN --out DIR`: did training raise the reward on
  held-out openers?
- `python -m benchmarks.studies.reward_noise RUN --initial --out DIR`: how much of the
  reward can an adversary move at all?
- `python -m benchmarks.studies.harvest_prompts --out benchmarks/data/defender-risk`: the
  prompts that made the embedded defender least safe, as train / held-out prompt files.
- `python -m benchmarks.studies.defender_risk --out DIR`: PPO vs RA-RLHF defenders on those
  prompts, judged by the tail of their reward (CVaR, reward by prompt quantile).

They use the library (`benchmarks.runner`, `agents`, `redteam_gym`); nothing imports them (but
`harvest_prompts`, which reuses `defender_risk`'s sampling).
"""
