"""One OpenAI-compatible server: where it is, how to call it, and what a failure says.

A served model is named by a spec string, so that `gym.make`, the configs and the command
line carry it as text:

    openai:http://127.0.0.1:8000/v1#meta-llama/Llama-3.1-8B-Instruct;max_concurrency=16

`URL` is the server's API base (vLLM, TGI, `transformers serve`, llama.cpp's server all serve
`/v1`), `MODEL` the name the server knows the model by, and `;key=value` options set the
fields of `Endpoint` below. The API key is never part of a spec (a spec is written into
`config.json` and `eval.json`): it comes from the environment variable `api_key_env`
(`OPENAI_API_KEY` by default) or from `Endpoint(api_key=...)`, and no repr, log line or error
message holds it.

`EndpointClient.map` runs one request per item over a bounded thread pool (`max_concurrency`
requests in flight), each with a timeout, retrying connection failures, timeouts, 408, 409,
429 and 5xx answers with exponential backoff. Results come back in the items' order, one per
item: a retried request replaces its own failed attempt, so nothing is lost or duplicated.
Whatever still fails raises `ServerError`, which names the URL, the model and what failed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

__all__ = [
    "OPENAI_PREFIX",
    "Endpoint",
    "EndpointClient",
    "ServedModel",
    "ServerError",
    "is_openai_spec",
    "local_tokenizer",
    "parse_endpoint",
]

logger = logging.getLogger(__name__)

OPENAI_PREFIX = "openai:"
"""What starts the spec of a served model."""

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")

_RETRIED_STATUS = frozenset({408, 409, 429})


class ServerError(RuntimeError):
    """A served model's call failed; the message names the URL, the model and what failed."""

    def __init__(self, endpoint: Endpoint, what: str) -> None:
        super().__init__(f"server {endpoint.url} (model {endpoint.model!r}): {what}")
        self.url = endpoint.url
        self.model = endpoint.model


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server and how to call it."""

    url: str
    """The API base, e.g. `http://127.0.0.1:8000/v1`."""
    model: str
    """The model's name on the server (what `GET /v1/models` lists)."""
    max_concurrency: int = 8
    """Requests in flight at once (one per conversation; the server batches them)."""
    timeout_s: float = 120.0
    """Seconds one request may take, connecting included."""
    max_retries: int = 4
    """Tries after the first for a request that failed in a way a retry can fix."""
    backoff_s: float = 0.5
    """Wait before the first retry; doubled before each next one."""
    max_backoff_s: float = 8.0
    """Longest wait between two tries."""
    api_key_env: str = "OPENAI_API_KEY"
    """The environment variable that holds the API key (unset: the server needs none)."""
    api_key: str | None = field(default=None, repr=False, compare=False)
    """The API key itself, in place of `api_key_env`: never written to a spec, repr or log."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(
                f"served model URL must start with http:// or https://, got {self.url!r}"
            )
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if not self.model.strip():
            raise ValueError(f"served model at {self.url}: the model name is empty")
        checks = {
            "max_concurrency": self.max_concurrency >= 1,
            "timeout_s": self.timeout_s > 0,
            "max_retries": self.max_retries >= 0,
            "backoff_s": self.backoff_s >= 0,
            "max_backoff_s": self.max_backoff_s >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"served model option {name} is out of range: {getattr(self, name)!r}"
                )

    def key(self) -> str | None:
        """The API key to send, if any."""
        return self.api_key or os.environ.get(self.api_key_env) or None

    def spec(self) -> str:
        """The spec string of this endpoint (options that differ from the defaults; no key)."""
        options = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if f.name not in ("url", "model", "api_key") and getattr(self, f.name) != f.default
        ]
        return OPENAI_PREFIX + self.url + "#" + ";".join([self.model, *options])


_OPTION_TYPES: dict[str, Callable[[str], Any]] = {
    "max_concurrency": int,
    "timeout_s": float,
    "max_retries": int,
    "backoff_s": float,
    "max_backoff_s": float,
    "api_key_env": str,
}


def is_openai_spec(spec: object) -> bool:
    """Whether `spec` names a served model (`openai:URL#MODEL`)."""
    return isinstance(spec, str) and spec.strip().lower().startswith(OPENAI_PREFIX)


def parse_endpoint(spec: str, extra: Sequence[str] = ()) -> tuple[Endpoint, dict[str, str]]:
    """`openai:URL#MODEL[;key=value...]` -> its `Endpoint`, and the options named in `extra`
    (a judge's or a defender's own, such as `tokenizer=`). Raises `ValueError` naming what is
    wrong; an `api_key=` option is refused, so a key never lands in a saved config."""
    form = f"'{OPENAI_PREFIX}URL#MODEL[;option=value...]'"
    if not is_openai_spec(spec):
        raise ValueError(f"a served model spec has the form {form}, got {spec!r}")
    rest = spec.strip()[len(OPENAI_PREFIX) :]
    url, sep, tail = rest.partition("#")
    parts = [p.strip() for p in tail.split(";")]
    if not sep or not parts[0]:
        raise ValueError(f"{spec!r} names no model: the form is {form}")
    options: dict[str, Any] = {}
    own: dict[str, str] = {}
    for part in parts[1:]:
        name, eq, value = (s.strip() for s in part.partition("="))
        if name == "api_key":
            raise ValueError(
                f"{url}: an API key is never written in a spec (it would be saved with the "
                "config); set OPENAI_API_KEY, or name another variable with api_key_env=NAME"
            )
        if not eq or not value:
            raise ValueError(f"{spec!r}: option {part!r} is not name=value")
        if name in extra:
            own[name] = value
            continue
        if name not in _OPTION_TYPES:
            known = sorted([*_OPTION_TYPES, *extra])
            raise ValueError(f"{spec!r}: unknown option {name!r}; known: {known}")
        try:
            options[name] = _OPTION_TYPES[name](value)
        except ValueError as exc:
            raise ValueError(f"{spec!r}: option {name}={value!r} is not a number") from exc
    return Endpoint(url.strip(), parts[0], **options), own


def local_tokenizer(name_or_path: str) -> Any:
    """The tokenizer of a model on this machine (a local directory or the embedded alias), or
    None: a hub id is not looked up, so a served model never triggers a download."""
    from redteam_gym.models.loading import SMOLLM2, load_tokenizer

    if name_or_path.lower() != SMOLLM2 and not os.path.isdir(name_or_path):
        return None
    return load_tokenizer(name_or_path)


def _retryable(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APIConnectionError):  # refused, reset, timed out
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRIED_STATUS or exc.status_code >= 500
    return False


def _describe(exc: BaseException) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return f"cannot connect ({cause or exc})"
    if isinstance(exc, openai.APIStatusError):
        detail = exc.body.get("detail", exc.body) if isinstance(exc.body, dict) else exc.message
        hint = " (is the model name right?)" if exc.status_code in (400, 404) else ""
        return f"HTTP {exc.status_code}: {detail}{hint}"
    return f"{type(exc).__name__}: {exc}"


class EndpointClient:
    """Requests to one `Endpoint` over the `openai` client: bounded concurrency, a timeout on
    every call, retries with exponential backoff, errors that name the server."""

    def __init__(self, endpoint: Endpoint) -> None:
        import openai

        self.endpoint = endpoint
        # the client's own retries are off: `_call` retries, with the backoff and the errors
        # that this module promises
        self.client = openai.OpenAI(
            base_url=endpoint.url,
            api_key=endpoint.key() or "none",
            timeout=endpoint.timeout_s,
            max_retries=0,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=endpoint.max_concurrency, thread_name_prefix="served"
        )
        self._closed = threading.Event()

    def __repr__(self) -> str:
        return f"EndpointClient({self.endpoint!r})"

    def close(self) -> None:
        """Stop the pool and close the HTTP connections."""
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def _call(self, request: Callable[[], _Result], what: str) -> _Result:
        e = self.endpoint
        for attempt in range(e.max_retries + 1):
            try:
                return request()
            except ServerError:
                raise
            except Exception as exc:
                if not _retryable(exc):
                    raise ServerError(e, f"{what}: {_describe(exc)}") from exc
                if attempt == e.max_retries or self._closed.is_set():
                    raise ServerError(
                        e, f"{what}: {_describe(exc)}; gave up after {attempt + 1} tries"
                    ) from exc
                wait_s = min(e.backoff_s * 2**attempt, e.max_backoff_s)
                logger.warning(
                    "server %s: %s: %s; retry %d/%d in %.1f s",
                    e.url,
                    what,
                    _describe(exc),
                    attempt + 1,
                    e.max_retries,
                    wait_s,
                )
                time.sleep(wait_s)
        raise AssertionError("unreachable")

    def map(
        self, request: Callable[[_Item], _Result], items: Sequence[_Item], what: str
    ) -> list[_Result]:
        """`request(item)` for every item, `max_concurrency` at a time, each retried as the
        endpoint says; results in the items' order. The first request that fails for good
        cancels those not yet started and raises its `ServerError`."""
        futures: list[Future[_Result]] = [
            self._pool.submit(self._call, lambda item=item: request(item), what) for item in items
        ]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            for f in futures:
                f.cancel()
            raise failed.exception()  # type: ignore[misc]
        return [f.result() for f in futures]


class ServedModel:
    """What a served defender and a served judge share: their `endpoint`, and an HTTP client
    made on first use, left out of pickles (so that Ray can ship the object) and closed by
    `close`."""

    endpoint: Endpoint
    _client: EndpointClient | None = None

    @property
    def client(self) -> EndpointClient:
        """The HTTP client, made on first use."""
        if self._client is None:
            self._client = EndpointClient(self.endpoint)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def close(self) -> None:
        """Close the HTTP client and its pool."""
        if self._client is not None:
            self._client.close()
            self._client = None
