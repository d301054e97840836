"""Learners that train red-team adversaries: A2C, PPO and RA-RLHF, and their shared parts."""
