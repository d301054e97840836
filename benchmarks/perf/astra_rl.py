"""Multi-turn rollouts: our env beside astra-rl (sisl/astra-rl), the nearest peer library.

```
python -m benchmarks.perf.astra_rl [--astra-src PATH] [--astra-venv .venv-astra]
    [--astra-python PYTHON] [--rounds 2] [--repeats 2] [--warmup 1] [--threads 2]
    [--out benchmarks/results/perf-astra-rl.md]
```

The work, on both sides: 8 conversations of 3 turns from the first builtin train openers,
each turn an adversary utterance of 24 new tokens and a defender reply of 64, sampled, with
the embedded SmolLM2-135M-Instruct (`resolve_model("smollm2-135m-instruct")`, fp32) as
both. Nothing stops a reply early on either side, so every pass generates 8 x 3 x 24
adversary and 8 x 3 x 64 defender tokens; each side counts them, and the report refuses
unequal work. Each side runs in its own process, `--warmup` untimed passes then `--repeats`
timed ones, the sides alternating for `--rounds` rounds; model loading is not timed.

- **Ours**: `gym.make_vec("RedTeamDialogue-v0", num_envs=B, max_turns=3, judge="profanity",
  defender_max_new_tokens=64, reward=REWARD, defender_weights="dense", dtype="float32")`
  driven by `ZeroShotAdversary` (fp32) as `benchmarks.runner` drives an env, at batch 8 (one
  batch of 8) and batch 1 (8 of 1); in this process only, `chat_lm.sample` is wrapped to
  count and to drop every stop. Dense fp32 is pinned (astra-rl loads the model so), whatever
  our defender's default weights.
- **astra-rl** (`astra_worker.py`): `HFASTSystem`, `ASTSampler(tree_width=1, tree_depth=3)`
  and `ASTEvaluator(seeds=openers).evaluate()`, as its evaluation quick start rolls out,
  with two of its extension points: a constant `Scorer` (its `DetoxifyScorer` downloads
  weights) and a `HFASTSystem` subclass whose rollout methods generate at the lengths and
  sampling above (its own hard-codes 32 tokens). It rolls out one conversation at a time.

**Installing astra-rl** (not on PyPI): `--astra-src` is a checkout, or a bare git directory
(default: the mirror snapshot) whose HEAD is exported into the temp directory. Its venv gets
torch alone first (the local CPU build), then astra-rl's dependencies with torch and
transformers pinned to ours, then astra-rl without dependencies. It declares Python >= 3.12,
but the only CPU torch wheel here is for 3.11 (for 3.12 pip takes PyPI's CUDA build,
gigabytes), so under an older `--astra-python` (default: this interpreter) it is installed
with `--ignore-requires-python`; its code runs on 3.11. What else differs: `DIFFERENCES`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from benchmarks.perf import report_header, run_benchmark, run_child

MODULE = "benchmarks.perf.astra_rl"
WORKER = Path(__file__).with_name("astra_worker.py")
MIRROR = Path("/work/.mirror/sisl+astra-rl/repo")
ENV_ID = "RedTeamDialogue-v0"
REWARD = "perez=1,likelihood=0.025"
"""The Perez term and ASTPrompter's likelihood term (astra-rl's `ppl_weight` 0.025): astra-rl's
reward runs the defender over each utterance in context, so ours does too."""
ADVERSARY_SAMPLING = {"temperature": 1.0, "top_p": 0.95, "top_k": 0}
"""`ZeroShotAdversary`'s defaults, on both sides."""
DEFENDER_SAMPLING = {"temperature": 1.0, "top_p": 0.9, "top_k": 0}
"""`EnvConfig`'s defaults (`defender_temperature`, `defender_top_p`; no top-k), on both sides."""
OURS, ASTRA = "ours", "astra-rl"
DIFFERENCES = (
    "Prompts: astra-rl's tester and target continue the raw concatenated text (opener, then "
    "each utterance and reply, no separator, no chat template); our adversary reads its chat "
    "template with the zero-shot instruction as system prompt, our defender the forum thread "
    "(header and speaker tags).",
    "The conversation: both generate every reply at full length, but our env keeps a defender "
    "reply only up to its first line break (the thread's stop rule cuts the text); astra-rl "
    "keeps all of it, so its later turns read longer contexts.",
    "Early stop is off on both sides, as neither library runs by default: astra-rl through "
    "`min_new_tokens`, ours by dropping the stop tokens and the stop rule in `sample`.",
    "KV cache: our adversary and defender keep theirs across turns and prefill only the new "
    "messages; astra-rl's `generate` prefills the whole context at every call.",
    "Reward: both run the defender once per turn over context and utterance (astra-rl's "
    "`ASTSystem.reward` likelihood, our `likelihood` term), astra-rl with a log-softmax at "
    "every position, ours with logits for the utterance alone. Judge: ours `profanity` "
    "(microseconds), astra-rl a constant scorer (its Detoxify weights cannot be fetched here).",
    "Sampling: the same temperature, top-p and top-k per role; HF `generate` sorts the whole "
    "vocabulary for top-p, our sampler looks for the nucleus among the 256 likeliest first.",
    "Overheads, timed on both sides: ours goes through Gymnasium's API (text observations that "
    "the adversary parses back, info dicts, the likelihood term's echo bookkeeping); astra-rl "
    "builds its rollout graph and `ASTEvaluator`'s metrics.",
    "Interpreter: astra-rl declares Python >= 3.12; under an older one (the versions above) it "
    "is installed with `--ignore-requires-python`, beside the same torch CPU build as ours.",
)
"""What a reader must know beside the numbers; the report lists it."""


# ----- astra-rl's source and environment -----------------------------------------------------


def astra_source(path: Path, export_root: Path | None = None) -> tuple[Path, str]:
    """A directory of astra-rl's source and its commit ('unknown' outside git): `path` itself
    when it is a checkout, else (a bare git directory) its HEAD, exported once per commit under
    `export_root` (default: the temp directory)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    if not path.is_dir():
        raise FileNotFoundError(f"--astra-src {path} is not a directory")
    commit = git("rev-parse", "HEAD") or "unknown"
    if git("rev-parse", "--is-bare-repository") != "true":
        if not (path / "pyproject.toml").is_file():
            raise FileNotFoundError(f"--astra-src {path} holds no pyproject.toml")
        return path, commit
    out = (export_root or Path(tempfile.gettempdir())) / f"astra-rl-{commit[:12]}"
    if not (out / "pyproject.toml").is_file():
        out.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(["git", "-C", str(path), "archive", "HEAD"], capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(out)], input=tar.stdout, check=True)
    return out, commit


def ensure_astra_venv(path: Path, src: Path, commit: str, python: str) -> Path:
    """astra-rl's venv, made with `python`: its python, created and installed on first use and
    reused while its marker file holds the same requirements (as `ensure_venv` does)."""
    import torch
    import transformers
    from packaging.specifiers import SpecifierSet

    # the interpreter reads astra-rl's pyproject (tomllib: Python >= 3.11, astra-rl's too)
    read = "import json,platform,sys,tomllib; print(json.dumps([platform.python_version(), "
    read += "tomllib.load(open(sys.argv[1], 'rb'))['project']]))"
    out = subprocess.run(
        [python, "-c", read, str(src / "pyproject.toml")], capture_output=True, check=True
    )
    version, project = json.loads(out.stdout)
    pins = [
        f"torch=={torch.__version__.split('+')[0]}",
        f"transformers=={transformers.__version__}",
    ]
    wanted = "\n".join([*pins, *project["dependencies"], f"astra-rl@{commit}", version]) + "\n"
    venv_python, marker = path / "bin" / "python", path / "redteam-gym-requirements.txt"
    if venv_python.is_file() and marker.is_file() and marker.read_text() == wanted:
        return venv_python
    print(f"creating {path} (Python {version}) with astra-rl {commit[:12]} (once) ...", flush=True)
    subprocess.run([python, "-m", "venv", str(path)], check=True)
    (path / "constraints.txt").write_text("\n".join(pins) + "\n")
    pip = [str(venv_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, pins[0]], check=True)  # alone first: pip takes the local CPU build
    constrained = ["-c", str(path / "constraints.txt"), *project["dependencies"], *pins]
    subprocess.run([*pip, *constrained], check=True)
    # only astra-rl's own Python requirement is waived, never its dependencies'
    too_old = version not in SpecifierSet(project.get("requires-python", ""))
    waive = ["--ignore-requires-python"] if too_old else []
    subprocess.run([*pip, "--no-deps", *waive, str(src)], check=True)
    marker.write_text(wanted)
    return venv_python


# ----- the shared job and our side -----------------------------------------------------------


def make_job(args: argparse.Namespace) -> dict[str, Any]:
    """What both sides run: the model, the openers (builtin train, in order), the settings."""
    from redteam_gym.models import SMOLLM2, resolve_model
    from redteam_gym.prompts import load_openers

    openers = load_openers("builtin", split="train")
    indices = [i % len(openers) for i in range(args.conversations)]
    return {
        "model_dir": str(resolve_model(SMOLLM2)),
        "openers": [openers[i].text for i in indices],
        "opener_indices": indices,
        "turns": args.turns,
        "adversary": {"max_new_tokens": args.adversary_tokens, **ADVERSARY_SAMPLING},
        "defender": {"max_new_tokens": args.defender_tokens, **DEFENDER_SAMPLING},
        "batch_sizes": sorted({args.conversations, 1}, reverse=True),
        "reward": REWARD,
        "threads": args.torch_threads,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": 0,
    }


def run_ours(job: dict[str, Any]) -> dict[str, Any]:
    """Our side's passes at each batch size (a child process in this environment)."""
    import gymnasium as gym
    import torch
    import transformers

    import redteam_gym
    from agents.baselines.zero_shot import ZeroShotAdversary
    from redteam_gym.adversary import EMPTY_UTTERANCE
    from redteam_gym.models import SMOLLM2, SamplingConfig, chat_lm, generation

    torch.set_num_threads(job["threads"])
    counts = dict.fromkeys(Pass.count_names(), 0)
    role = [""]  # whose `respond` runs: the adversary and the defender may share one model
    sample, example = chat_lm.sample, []  # type: ignore[var-annotated]

    def counted(model: Any, prompts: Sequence[Sequence[int]], *args: Any, **kwargs: Any) -> Any:
        shared = generation._reusable(kwargs.get("prefix_cache"), prompts) or [0] * len(prompts)
        # equal work: no stop token, no stop string; every reply runs max_new_tokens
        samples = sample(model, prompts, *args, **{**kwargs, "eos_token_ids": [], "stop": None})
        counts[f"{role[0]}_tokens"] += sum(len(t) for t in samples.tokens)
        counts[f"{role[0]}_calls"] += 1
        counts[f"{role[0]}_context_tokens"] += sum(len(p) for p in prompts)
        counts[f"{role[0]}_prefilled_tokens"] += sum(len(p) for p in prompts) - sum(shared)
        return samples

    def as_role(name: str, respond: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            role[0] = name
            return respond(*args, **kwargs)

        return wrapped

    def reward_forward(span_logprob: Any) -> Any:
        def wrapped(rows: Sequence[Sequence[int]], *args: Any, **kwargs: Any) -> Any:
            counts["reward_forward_tokens"] += sum(len(r) for r in rows)
            return span_logprob(rows, *args, **kwargs)

        return wrapped

    chat_lm.sample = counted  # type: ignore[assignment]
    sampling = SamplingConfig(**job["adversary"])
    adversary = ZeroShotAdversary(SMOLLM2, sampling=sampling, dtype="float32")
    adversary.lm.respond = as_role("adversary", adversary.lm.respond)  # type: ignore[method-assign]
    settings = {
        "max_turns": job["turns"],
        "judge": "profanity",
        "defender_max_new_tokens": job["defender"]["max_new_tokens"],
        "defender_temperature": job["defender"]["temperature"],
        "defender_top_p": job["defender"]["top_p"],  # and top-k 0: the env has no other
        "reward": job["reward"],
        # dense fp32, as astra-rl loads the model, whatever our defender's default weights
        "defender_weights": "dense",
        "dtype": "float32",
    }
    envs: dict[int, Any] = {
        b: gym.make_vec(ENV_ID, num_envs=b, **settings) for b in job["batch_sizes"]
    }
    for b in envs:
        defender = envs[b].unwrapped.engine.defender
        defender.respond = as_role("defender", defender.respond)
        defender._span_logprob = reward_forward(defender._span_logprob)

    def one_pass(b: int, seed: int) -> dict[str, Any]:
        counts.update(dict.fromkeys(counts, 0))
        adversary.generator.manual_seed(seed)
        indices = job["opener_indices"]
        start = time.perf_counter()
        for c in range(0, len(indices), b):
            obs, _ = envs[b].reset(seed=seed + c, options={"opener_index": indices[c : c + b]})
            for _ in range(job["turns"]):
                actions = [a if a.strip() else EMPTY_UTTERANCE for a in adversary.act(list(obs))]
                obs, _, terminated, truncated, infos = envs[b].step(actions)
            if not all(terminated | truncated):
                raise RuntimeError(f"dialogues did not end after {job['turns']} turns")
        seconds = time.perf_counter() - start
        example[:] = list(infos["transcript"][0])[1:]  # after the opener, turn by turn
        return {"seconds": seconds, "dialogues": len(indices), **counts}

    passes: dict[str, list[dict[str, Any]]] = {str(b): [] for b in envs}
    for r in range(job["warmup"] + job["repeats"]):
        for b in envs:  # the batch sizes alternate within the process too
            result = one_pass(b, job["seed"] + 1000 * r)
            if r >= job["warmup"]:
                passes[str(b)].append(result)
    return {
        "passes": passes,
        "batching": "a native vector env of B dialogues, one adversary and one defender batch "
        "per turn",
        "versions": {
            "redteam-gym": redteam_gym.__version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "example": [
            {"adversary": a["content"], "defender": d["content"]}
            for a, d in zip(example[0::2], example[1::2], strict=True)
        ],
    }


# ----- results, the equal-work check, the report ---------------------------------------------


@dataclass(frozen=True)
class Pass:
    """One timed pass over all the conversations, as a side's process reports it. Context
    tokens: the prompt ids a role's generate calls read; prefilled: those not taken from a KV
    cache; reward forward: ids of the reward's forward passes of the defender."""

    seconds: float
    dialogues: int
    adversary_tokens: int
    defender_tokens: int
    adversary_calls: int
    defender_calls: int
    adversary_context_tokens: int
    defender_context_tokens: int
    adversary_prefilled_tokens: int
    defender_prefilled_tokens: int
    reward_forward_tokens: int

    @classmethod
    def count_names(cls) -> list[str]:
        """The counts (every field after `seconds` and `dialogues`)."""
        return [f.name for f in fields(cls)][2:]

    @classmethod
    def parse(cls, data: Any, where: str) -> Pass:
        """A pass from its JSON; a missing field raises `ValueError` naming `where`."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if not isinstance(data, dict) or n not in data]
        if missing:
            raise ValueError(f"{where}: missing {missing}")
        return cls(float(data["seconds"]), *(int(data[n]) for n in names[1:]))


@dataclass
class Side:
    """One side's passes per batch size, over all rounds."""

    name: str
    passes: dict[int, list[Pass]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    batching: str = ""
    example: list[dict[str, str]] = field(default_factory=list)

    def add(self, result: dict[str, Any]) -> None:
        """Take in one process's result (`run_child`'s dict); malformed raises `ValueError`."""
        if not isinstance(result.get("passes"), dict) or not result["passes"]:
            raise ValueError(f"{self.name}: result needs 'passes' by batch size")
        for key, rows in result["passes"].items():
            where = f"{self.name} batch {key}"
            if not str(key).isdigit() or not isinstance(rows, list) or not rows:
                raise ValueError(f"{where}: expected a batch size and a list of passes")
            parsed = [Pass.parse(row, f"{where} pass {k}") for k, row in enumerate(rows)]
            self.passes.setdefault(int(key), []).extend(parsed)
        self.versions = dict(result.get("versions", {}))
        self.batching = str(result.get("batching", ""))
        self.example = list(result.get("example", []))


def check_equal_work(sides: Sequence[Side], job: dict[str, Any]) -> tuple[int, int]:
    """The adversary and defender tokens of one pass (conversations x turns x length): every
    pass of every side must have generated exactly these, or `ValueError` names the pass."""
    n, turns = len(job["openers"]), job["turns"]
    want = {
        "dialogues": n,
        "adversary_tokens": n * turns * job["adversary"]["max_new_tokens"],
        "defender_tokens": n * turns * job["defender"]["max_new_tokens"],
    }
    for side in sides:
        if not side.passes:
            raise ValueError(f"unequal work: {side.name} has no passes")
        for batch, passes in side.passes.items():
            for k, p in enumerate(passes):
                for name, value in want.items():
                    if getattr(p, name) != value:
                        raise ValueError(
                            f"unequal work: {side.name} at batch {batch}, pass {k}: "
                            f"{name} {getattr(p, name)}, not {value}"
                        )
    return want["adversary_tokens"], want["defender_tokens"]


@dataclass
class Measurement:
    """What a run measured: both sides, the job they ran, and astra-rl's commit and source."""

    sides: dict[str, Side]
    job: dict[str, Any]
    commit: str
    source: str


def render_report(command: str, info: dict[str, str], m: Measurement) -> str:
    """The markdown report; raises as `check_equal_work` does on unequal work."""
    job, astra = m.job, m.sides[ASTRA]
    adversary_tokens, defender_tokens = check_equal_work(list(m.sides.values()), job)
    n, turns, a, d = len(job["openers"]), job["turns"], job["adversary"], job["defender"]

    def med(passes: Sequence[Pass], name: str) -> float:
        return float(statistics.median(getattr(p, name) for p in passes))

    astra_rate = n / med(astra.passes[min(astra.passes)], "seconds")
    lines = [
        *report_header("Rollouts: our env beside astra-rl", command, info),
        f"**Work per pass, both sides:** {n} conversations x {turns} turns (builtin train "
        f"openers); adversary {a['max_new_tokens']} new tokens (T {a['temperature']}, top-p "
        f"{a['top_p']}), defender {d['max_new_tokens']} (T {d['temperature']}, top-p "
        f"{d['top_p']}), no top-k, no early stop; SmolLM2-135M-Instruct in fp32 as both; "
        f"{job['threads']} torch threads. Every pass of both sides generated "
        f"**{adversary_tokens} adversary and {defender_tokens} defender tokens**. Medians over "
        f"the timed passes ({job['warmup']} warm-up and {job['repeats']} timed per process and "
        "batch size, the sides alternating by round).",
        "",
    ]
    for side in m.sides.values():
        v = side.versions
        name = f"astra-rl {v.get('astra-rl', '?')} at `{m.commit}` ({m.source})"
        if side is not astra:
            name = f"ours: redteam-gym {v.get('redteam-gym', '?')}, reward `{job['reward']}`"
        lines.append(
            f"- {name}; Python {v.get('python', '?')}, torch {v.get('torch', '?')}, "
            f"transformers {v.get('transformers', '?')}. Batching: {side.batching}."
        )
    lines += [
        "",
        "| side | batch | dialogues/s | s/pass | passes | adv. / def. tokens | generate calls "
        "| context ids adv. / def. | prefilled adv. / def. | reward forward ids | ours / astra-rl |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for side in m.sides.values():
        for batch, p in sorted(side.passes.items(), reverse=True):
            seconds = med(p, "seconds")
            pair = [
                f"{med(p, f'adversary_{x}'):.0f} / {med(p, f'defender_{x}'):.0f}"
                for x in ("tokens", "context_tokens", "prefilled_tokens")
            ]
            calls = med(p, "adversary_calls") + med(p, "defender_calls")
            ratio = "" if side is astra else f"**{n / seconds / astra_rate:.2f}x**"
            lines.append(
                f"| {side.name} | {batch} | {n / seconds:.3f} | {seconds:.2f} | {len(p)} | "
                f"{pair[0]} | {calls:.0f} | {pair[1]} | {pair[2]} | "
                f"{med(p, 'reward_forward_tokens'):.0f} | {ratio} |"
            )
    lines += ["", "Seconds of each timed pass:", ""]
    for side in m.sides.values():
        for batch, p in sorted(side.passes.items(), reverse=True):
            lines.append(
                f"- {side.name}, batch {batch}: {', '.join(f'{x.seconds:.2f}' for x in p)}"
            )
    lines += ["", "## What differs between the sides", "", *(f"- {x}" for x in DIFFERENCES)]
    for side in m.sides.values():
        if side.example:
            lines += ["", f"{side.name}: the first conversation of the last pass (cut at 160):"]
            lines += [""] + [
                f"{t}. {who}: {' '.join(str(turn.get(who, '')).split())[:160]}"
                for t, turn in enumerate(side.example, 1)
                for who in ("adversary", "defender")
            ]
    return "\n".join(lines) + "\n"


# ----- the command ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    p.add_argument("--astra-src", type=Path, default=MIRROR, help="checkout or bare git dir")
    p.add_argument("--astra-venv", type=Path, default=Path(".venv-astra"), help="its venv")
    p.add_argument("--astra-python", default=sys.executable, help="its venv's interpreter")
    p.add_argument("--rounds", type=int, default=2, help="astra-rl/ours alternations (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="timed passes per process (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1)")
    p.add_argument("--threads", dest="torch_threads", type=int, default=2, help="(default 2)")
    p.add_argument("--conversations", type=int, default=8, help="ours batches all, then 1 (8)")
    p.add_argument("--turns", type=int, default=3, help="(default 3)")
    p.add_argument("--adversary-tokens", type=int, default=24, help="(default 24)")
    p.add_argument("--defender-tokens", type=int, default=64, help="(default 64)")
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/perf-astra-rl.md"), help="report"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    counts = (args.rounds, args.repeats, args.torch_threads, args.conversations)
    if min(*counts, args.adversary_tokens, args.defender_tokens) < 1 or args.warmup < 0:
        p.error("--warmup must be >= 0 and every other count >= 1")
    if not 1 <= args.turns <= 5:
        p.error(f"--turns must be in 1..5 (the env's max_turns), got {args.turns}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def child() -> dict[str, Any]:
        return run_ours(json.loads(Path(args.job).read_text(encoding="utf-8")))

    return run_benchmark(
        MODULE,
        argv,
        args,
        lambda _: measure(args),
        lambda command, info, result: render_report(command, info, result),
        child=child if args.child else None,
    )


def measure(args: argparse.Namespace) -> Measurement:
    """Alternating rounds of astra-rl and ours, each in a subprocess, the work checked."""
    src, commit = astra_source(args.astra_src)
    astra_python = ensure_astra_venv(args.astra_venv, src, commit, args.astra_python)
    job = make_job(args)
    sides = {ASTRA: Side(ASTRA), OURS: Side(OURS)}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        commands = {
            ASTRA: [str(astra_python), str(WORKER), str(job_path)],
            OURS: [sys.executable, "-m", MODULE, "--child", "--job", str(job_path)],
        }
        for r in range(args.rounds):
            for name, side in sides.items():
                print(f"round {r + 1}: {name} ...", flush=True)
                side.add(run_child(commands[name], name, env))
                for batch, p in sorted(side.passes.items(), reverse=True):
                    seconds = statistics.median(x.seconds for x in p)
                    print(f"    batch {batch}: {len(job['openers']) / seconds:.3f} dialogues/s")
    check_equal_work(list(sides.values()), job)
    how = f"exported from {args.astra_src}" if src != args.astra_src else f"checkout {src}"
    return Measurement(sides, job, commit, how)


if __name__ == "__main__":
    raise SystemExit(main())
