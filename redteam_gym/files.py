"""Crash-safe files: atomic writes, JSON lines read back, repair of a torn last line.

A kill (SIGKILL, power loss) in the middle of a plain `write_text` leaves a half-written
file in place of the old one. `atomic_write` writes a temporary file in the same directory,
fsyncs it, renames it over the target (atomic on POSIX) and fsyncs the directory, so a
reader sees either the old contents or the new, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "fsync_dir", "fsync_tree", "read_jsonl", "repair_jsonl_tail"]

logger = logging.getLogger(__name__)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (a rename into it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every file and directory under `root` (before the tree is renamed into place)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def atomic_write(path: str | os.PathLike[str], data: str | bytes, encoding: str = "utf-8") -> Path:
    """Replace `path` with `data` atomically: temp file, fsync, rename, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode(encoding) if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """The records of a JSON-lines file (UTF-8, one JSON value a line, blank lines skipped).
    A line that is not JSON raises `ValueError` naming the file and the line."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return records


def repair_jsonl_tail(path: str | os.PathLike[str]) -> int:
    """Cut a last line left unterminated by an interrupted append; returns the bytes cut.

    Appends write whole lines ending in a newline, so text after the last newline is the
    torn tail of a write that was killed. It is dropped, with a logged warning, so the next
    append starts on a clean line.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        # walk back to the last newline, a block at a time
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                good = start + cut + 1
                break
            end = start
        else:
            good = 0
        if good == size:
            return 0
        f.truncate(good)
        f.flush()
        os.fsync(f.fileno())
    logger.warning(
        "%s: dropped a torn last line (%d bytes, cut short by an interrupted write)",
        path,
        size - good,
    )
    return size - good
