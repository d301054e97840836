"""Failures of the env's components (defender, judge), reported by name, and the
smaller-batch retry on running out of memory.

`call_component` runs one batched call of a component. A raise becomes a `ComponentError`
that names the component and the batch it was given; out of memory (`torch.OutOfMemoryError`
or `MemoryError`) is retried on halves of the batch, then quarters, down to one item, when
`retry_smaller_batch` is on. The eval runner and the learners add which batch or update
of theirs was running.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["OUT_OF_MEMORY", "ComponentError", "call_component", "is_out_of_memory"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _out_of_memory_types() -> tuple[type[BaseException], ...]:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return (MemoryError, oom)


OUT_OF_MEMORY: tuple[type[BaseException], ...] = _out_of_memory_types()
"""The exceptions that mean "out of memory" (host or accelerator)."""


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, OUT_OF_MEMORY)


class ComponentError(RuntimeError):
    """A defender or judge call failed; the message names the component and what went wrong.

    Attributes:
        component: ``"defender"`` or ``"judge"``.
        out_of_memory: the failure was running out of memory (at every size tried).
    """

    def __init__(self, component: str, message: str, *, out_of_memory: bool = False) -> None:
        super().__init__(f"the {component} {message}")
        self.component = component
        self.out_of_memory = out_of_memory


def call_component(
    component: str,
    fn: Callable[[Sequence[Any]], T],
    items: Sequence[Any],
    combine: Callable[[list[T]], T],
    *,
    what: str = "conversations",
    retry_smaller_batch: bool = False,
) -> T:
    """``fn(items)``, with failures raised as `ComponentError` naming ``component``.

    With ``retry_smaller_batch``, running out of memory retries ``fn`` on chunks of half the
    size (then a quarter, ... down to 1) and joins their results with ``combine``. A retried
    call draws its samples chunk by chunk, so its results differ from one whole call's.
    """
    size = len(items)
    tried: list[int] = []
    while True:
        try:
            parts = [fn(items[start : start + size]) for start in range(0, len(items), size)]
            if tried:
                logger.warning(
                    "the %s ran out of memory on %d %s at size(s) %s; it ran in chunks of %d",
                    component,
                    len(items),
                    what,
                    tried,
                    size,
                )
            return parts[0] if len(parts) == 1 else combine(parts)
        except ComponentError:
            raise
        except OUT_OF_MEMORY as exc:
            tried.append(size)
            if not retry_smaller_batch or size <= 1:
                hint = (
                    ""
                    if retry_smaller_batch
                    else " (retry_smaller_batch / --retry-smaller-batch retries it at halved sizes)"
                )
                raise ComponentError(
                    component,
                    f"ran out of memory ({type(exc).__name__}: {exc}) on {len(items)} {what} "
                    f"at chunk size(s) {tried}{hint}",
                    out_of_memory=True,
                ) from exc
            size = (size + 1) // 2
            _free_accelerator_cache()
        except Exception as exc:
            raise ComponentError(
                component, f"raised {type(exc).__name__} on {len(items)} {what}: {exc}"
            ) from exc


def _free_accelerator_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
