"""Benchmarks: standard evaluation suites, the eval runner, reports and comparisons.

```python
from benchmarks import evaluate, compare
summary = evaluate(adversary, suite="quick", out_dir="runs/eval/quick-zero-shot")
print(compare(["runs/eval/quick-zero-shot", "runs/eval/quick-few-shot"]))
```
Heavy dependencies (torch, the env, matplotlib) load only when a function needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Suite", "compare", "evaluate", "list_suites", "load_suite", "write_report"]

if TYPE_CHECKING:
    from benchmarks.compare import compare
    from benchmarks.report import write_report
    from benchmarks.runner import evaluate
    from benchmarks.suites import Suite, list_suites, load_suite

_LAZY = {
    "Suite": "benchmarks.suites",
    "list_suites": "benchmarks.suites",
    "load_suite": "benchmarks.suites",
    "evaluate": "benchmarks.runner",
    "write_report": "benchmarks.report",
    "compare": "benchmarks.compare",
}


def __getattr__(name: str) -> Any:
    # Lazy: `import benchmarks` (e.g. by the CLI to add its parsers) must not load torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'benchmarks' has no attribute {name!r}")
