"""A model served on this machine's loopback by `transformers serve` (one-machine set-ups, the
tests and the scale-out benchmark).

    with LocalServer("smollm2-135m-instruct") as server:
        env = gym.make("RedTeamDialogue-v0", defender=server.spec())

The server is its own process group, started with `start` and ended with `stop` (or the
`with` block); `kill` ends it at once, as a crash would, and `start` brings it back on the
same port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from redteam_gym.models.loading import resolve_model
from redteam_gym.served.endpoint import OPENAI_PREFIX

__all__ = ["LocalServer", "free_port", "transformers_cli"]


def transformers_cli() -> str | None:
    """The `transformers` command (the `transformers[serving]` extra), or None."""
    beside = Path(sys.executable).parent / "transformers"
    return str(beside) if beside.is_file() else shutil.which("transformers")


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """`transformers serve MODEL` on `127.0.0.1:port`, pinned to that one model.

    Args:
        model: a model name (`"smollm2-135m-instruct"`), HF id or local path.
        port: the port (default: a free one).
        threads: torch threads of the server process (`OMP_NUM_THREADS`).
        start_timeout_s: how long `start` waits for `/health`.
        log: where the server's output goes (default: discarded).
    """

    def __init__(
        self,
        model: str,
        *,
        port: int | None = None,
        threads: int = 1,
        start_timeout_s: float = 180.0,
        log: IO[str] | None = None,
    ) -> None:
        cli = transformers_cli()
        if cli is None:
            raise RuntimeError(
                "`transformers serve` is not installed: pip install 'transformers[serving]' "
                "(make install does)"
            )
        self.cli = cli
        self.model = resolve_model(model)
        self.port = port or free_port()
        self.threads = threads
        self.start_timeout_s = start_timeout_s
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The API base."""
        return f"http://127.0.0.1:{self.port}/v1"

    def spec(self, options: str = "") -> str:
        """`openai:URL#MODEL`, with `options` (`;name=value...`) appended."""
        return f"{OPENAI_PREFIX}{self.url}#{self.model}{options}"

    def healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/health", timeout=timeout_s
            ) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> LocalServer:
        """Start the server and wait until it answers `/health` (or raise, naming the URL)."""
        if self.process is not None and self.process.poll() is None:
            return self
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "HF_HUB_OFFLINE": "1"}
        command = [self.cli, "serve", self.model, "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--device", "cpu", "--dtype", "float32"]
        self.process = subprocess.Popen(
            command,
            stdout=self.log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self.log else subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: `kill` ends all of it
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"`transformers serve` for {self.url} exited with {self.process.returncode}"
                )
            if self.healthy():
                return self
            time.sleep(0.25)
        self.kill()
        raise RuntimeError(
            f"`transformers serve` at {self.url} did not start in {self.start_timeout_s} s"
        )

    def kill(self) -> None:
        """End the server at once (SIGKILL to its process group), as a crash would."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL after 10 s)."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
