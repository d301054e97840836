"""The astra-rl benchmark's arguments, source, venv, accounting, report and worker protocol
(no timing is asserted, and nothing needs the astra-rl venv or a model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.perf.astra_rl import (
    ASTRA,
    DIFFERENCES,
    OURS,
    Measurement,
    Pass,
    Side,
    astra_source,
    check_equal_work,
    ensure_astra_venv,
    parse_args,
    render_report,
)

JOB: dict[str, Any] = {
    "openers": ["a", "b"],
    "turns": 3,
    "adversary": {"max_new_tokens": 4, "temperature": 1.0, "top_p": 0.95, "top_k": 0},
    "defender": {"max_new_tokens": 6, "temperature": 1.0, "top_p": 0.9, "top_k": 0},
    "reward": "perez=1,likelihood=0.025",
    "threads": 2,
    "warmup": 1,
    "repeats": 2,
}


def _pass(seconds: float, **changes: int) -> dict[str, Any]:
    """One pass of JOB's work (2 conversations x 3 turns x 4 and x 6 tokens)."""
    counts = {name: 10 for name in Pass.count_names()}
    counts.update(adversary_tokens=24, defender_tokens=36)
    return {"seconds": seconds, "dialogues": 2, **counts, **changes}


def _side(name: str, passes: dict[str, list[dict[str, Any]]]) -> Side:
    side = Side(name)
    side.add(
        {
            "passes": passes,
            "versions": {"python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.24.0"},
            "batching": f"{name}'s batching",
            "example": [{"adversary": "hi\nthere", "defender": "no"}],
        }
    )
    return side


def test_defaults_are_the_briefs_work() -> None:
    args = parse_args([])
    assert (args.conversations, args.turns, args.adversary_tokens, args.defender_tokens) == (
        8,
        3,
        24,
        64,
    )
    assert (args.rounds, args.repeats, args.warmup, args.torch_threads) == (2, 2, 1, 2)
    assert args.astra_venv == Path(".venv-astra")
    assert args.out == Path("benchmarks/results/perf-astra-rl.md")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "0"], "every other count >= 1"),
        (["--warmup", "-1"], "--warmup must be >= 0"),
        (["--defender-tokens", "0"], "every other count >= 1"),
        (["--turns", "6"], "--turns must be in 1..5"),
    ],
)
def test_bad_arguments_are_named(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_equal_work_passes_and_names_the_pass_that_differs() -> None:
    ours = _side(OURS, {"8": [_pass(1.0)], "1": [_pass(2.0)]})
    astra = _side(ASTRA, {"1": [_pass(4.0), _pass(5.0)]})
    assert check_equal_work([ours, astra], JOB) == (24, 36)
    short = _side(ASTRA, {"1": [_pass(4.0), _pass(5.0, defender_tokens=35)]})
    with pytest.raises(ValueError, match="astra-rl at batch 1, pass 1: defender_tokens 35, not 36"):
        check_equal_work([ours, short], JOB)
    fewer = _side(OURS, {"8": [_pass(1.0, dialogues=1)]})
    with pytest.raises(ValueError, match="ours at batch 8, pass 0: dialogues 1, not 2"):
        check_equal_work([fewer, astra], JOB)
    with pytest.raises(ValueError, match="astra-rl has no passes"):
        check_equal_work([ours, Side(ASTRA)], JOB)


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({}, "needs 'passes'"),
        ({"passes": {"x": [_pass(1.0)]}}, "expected a batch size and a list of passes"),
        ({"passes": {"1": []}}, "expected a batch size and a list of passes"),
        (
            {"passes": {"1": [{"seconds": 1.0, "dialogues": 2}]}},
            r"ours batch 1 pass 0: missing \['adversary_tokens'",
        ),
    ],
)
def test_a_malformed_result_is_named(result: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Side(OURS).add(result)


def test_the_report_gives_both_sides_their_counts_and_the_ratio() -> None:
    ours = _side(OURS, {"8": [_pass(1.0), _pass(3.0)], "1": [_pass(4.0)]})
    ours.versions["redteam-gym"] = "0.1.0"
    astra = _side(ASTRA, {"1": [_pass(8.0), _pass(8.0)]})
    astra.versions["astra-rl"] = "0.0.1"
    m = Measurement({ASTRA: astra, OURS: ours}, JOB, "abc123", "exported from /mirror")
    report = render_report("python -m benchmarks.perf.astra_rl", {"nproc": "2"}, m)
    assert report.startswith("# Rollouts: our env beside astra-rl\n")
    assert "- nproc: 2" in report
    assert "**24 adversary and 36 defender tokens**" in report
    assert "astra-rl 0.0.1 at `abc123` (exported from /mirror)" in report
    assert "ours: redteam-gym 0.1.0, reward `perez=1,likelihood=0.025`" in report
    # astra-rl: 2 dialogues in 8 s; ours at batch 8: median 2 s, at batch 1: 4 s
    assert (
        "| astra-rl | 1 | 0.250 | 8.00 | 2 | 24 / 36 | 20 | 10 / 10 | 10 / 10 | 10 |  |" in report
    )
    assert "| ours | 8 | 1.000 | 2.00 | 2 | 24 / 36 | 20 |" in report and "**4.00x**" in report
    assert "| ours | 1 | 0.500 | 4.00 | 1 |" in report and "**2.00x**" in report
    assert "- ours, batch 8: 1.00, 3.00" in report
    assert all(f"- {d}" in report for d in DIFFERENCES)
    assert "1. adversary: hi there" in report  # one line per text
    unequal = _side(OURS, {"8": [_pass(1.0, adversary_tokens=23)]})
    with pytest.raises(ValueError, match="unequal work"):
        render_report("cmd", {}, Measurement({ASTRA: astra, OURS: unequal}, JOB, "abc", ""))


def test_the_worker_checks_its_job(tmp_path: Path) -> None:
    from benchmarks.perf.astra_worker import COUNTS, read_job

    assert list(COUNTS) == Pass.count_names()  # the worker reports what the parent reads
    good = {"model_dir": "/m", **{k: v for k, v in JOB.items() if k != "reward"}}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(good))
    assert read_job(str(path)) == {**good, "seed": 0}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"model_dir": None}, r"missing \['model_dir'\]"),
        ({"openers": ["a", " "]}, "'openers' must be a non-empty list"),
        ({"turns": 0}, "'turns' must be an int >= 1"),
        ({"warmup": -1}, "'warmup' must be an int >= 0"),
        ({"defender": {"max_new_tokens": 6}}, "'defender' must hold exactly"),
        (
            {"adversary": {**JOB["adversary"], "max_new_tokens": 0}},
            "'adversary' max_new_tokens must be an int >= 1",
        ),
    ]
    for change, message in bad:
        job = {k: v for k, v in {**good, **change}.items() if v is not None}
        path.write_text(json.dumps(job))
        with pytest.raises(ValueError, match=message):
            read_job(str(path))


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def test_the_source_is_a_checkout_or_exported_from_a_bare_repo(tmp_path: Path) -> None:
    checkout = tmp_path / "astra-rl"
    checkout.mkdir()
    (checkout / "pyproject.toml").write_text('[project]\nname = "astra-rl"\n')
    assert astra_source(checkout) == (checkout, "unknown")  # a plain directory
    _git(checkout, "init", "-q")
    _git(checkout, "add", "pyproject.toml")
    _git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert astra_source(checkout) == (checkout, commit)
    bare = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", "--bare", str(checkout), str(bare)], check=True)
    src, got = astra_source(bare, export_root=tmp_path / "exports")
    assert got == commit and src == tmp_path / "exports" / f"astra-rl-{commit[:12]}"
    assert (src / "pyproject.toml").read_text() == (checkout / "pyproject.toml").read_text()
    assert astra_source(bare, export_root=tmp_path / "exports") == (src, commit)  # reused
    with pytest.raises(FileNotFoundError, match=r"holds no pyproject\.toml"):
        astra_source(tmp_path / "exports")


def test_the_venv_waives_only_astras_own_python_requirement(tmp_path, monkeypatch) -> None:
    import benchmarks.perf.astra_rl as bench

    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(
        '[project]\nname = "astra-rl"\nrequires-python = ">=3.99"\ndependencies = ["typer>=0.16"]\n'
    )
    run = subprocess.run
    calls: list[list[str]] = []

    def fake(cmd: list[str], **kwargs: Any) -> Any:
        if "-c" in cmd and cmd[0] == sys.executable:  # reading the pyproject: really run it
            return run(cmd, **kwargs)
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(bench.subprocess, "run", fake)
    venv = tmp_path / "venv"
    venv.mkdir()
    python = ensure_astra_venv(venv, src, "c0ffee", sys.executable)
    assert python == venv / "bin" / "python"
    assert calls[0][1:3] == ["-m", "venv"]
    assert calls[1][-1].startswith("torch==")  # torch alone first
    assert "typer>=0.16" in calls[2] and "--ignore-requires-python" not in calls[2]
    assert calls[3][-3:] == ["--no-deps", "--ignore-requires-python", str(src)]
    assert (venv / "constraints.txt").read_text().startswith("torch==")
    (venv / "bin").mkdir()
    python.write_text("")
    calls.clear()
    assert ensure_astra_venv(venv, src, "c0ffee", sys.executable) == python and calls == []
    ensure_astra_venv(venv, src, "other", sys.executable)  # another commit: rebuilt
    assert calls and calls[-1][-1] == str(src)


def test_the_worker_imports_the_astra_rl_package_not_the_benchmark(tmp_path: Path) -> None:
    """Run as a script, the worker's folder comes first on the path, where the benchmark's
    `astra_rl.py` would shadow the package: a stand-in package must be what it imports."""
    from benchmarks.perf.astra_rl import WORKER

    fake = tmp_path / "site" / "astra_rl"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit('the astra_rl package was imported')\n")
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model_dir": "/m", **JOB}))
    done = subprocess.run(
        [sys.executable, str(WORKER), str(job)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert "the astra_rl package was imported" in done.stderr, done.stderr[-2000:]
