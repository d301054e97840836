"""Building blocks shared by the learners: advantages, KL control, risk-averse selection."""
