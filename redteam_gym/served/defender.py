"""A defender served by an OpenAI-compatible server (`defender="openai:URL#MODEL"`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from redteam_gym.models.chat import Message
from redteam_gym.models.generation import SamplingConfig
from redteam_gym.models.loading import load_tokenizer
from redteam_gym.models.thread import ThreadFormat
from redteam_gym.served.endpoint import (
    Endpoint,
    ServedModel,
    ServerError,
    local_tokenizer,
    parse_endpoint,
)

__all__ = ["MAX_STOP_STRINGS", "ServedDefender", "server_stops"]

MAX_STOP_STRINGS = 4
"""The OpenAI API takes at most this many stop strings per request."""


def server_stops(thread: ThreadFormat) -> list[str]:
    """Stop strings for the server that end a thread reply no later than `ThreadFormat.cut`
    does in the common cases: a blank line, or a line break before one of the thread's own
    speaker tags. The reply is cut with `ThreadFormat.cut` all the same, so a stop the server
    cannot express (`\\nUser3:`) costs only tokens, never a different reply."""
    if thread.stop is not None:
        return list(thread.stop[:MAX_STOP_STRINGS])
    return ["\n\n", *(f"\n{speaker}:" for speaker in thread.speakers)][:MAX_STOP_STRINGS]


class ServedDefender(ServedModel):
    """Replies from a model behind an OpenAI-compatible API, one request per conversation.

    In the completion format (`thread` given) the prompt is the text that the in-process
    `ChatLM` tokenises (`ThreadFormat.render`), sent to `/v1/completions`, and the reply is
    cut with the same `ThreadFormat.cut`; in the chat format the conversation goes to
    `/v1/chat/completions` and the server applies the model's chat template. Sampling maps
    onto the request: `temperature` (0 is greedy), `top_p`, `max_tokens` and `stop`; with a
    `generator`, each conversation's request gets a `seed` drawn from it.

    What the API cannot say: `min_new_tokens` (the in-process defender holds back line breaks
    and the end of text for a reply's first tokens) and `top_k` (refused). The server
    tokenises the prompt text itself, so special-token strings inside a message are read as
    special tokens by the server's tokenizer (the in-process defender keeps them plain text).

    The model's tokenizer, where it is on this machine (`;tokenizer=ID_OR_PATH`, or a served
    model named by a local path or the embedded alias), cuts adversary utterances to the env's
    `max_utterance_tokens` as with an in-process defender; without one they are not cut.

    Args:
        endpoint: the server, or its spec string
            `openai:URL#MODEL[;tokenizer=PATH][;option=value...]`.
        sampling: decoding settings for replies.
        system_prompt: prepended as a system message (a header line before a thread).
        thread: the completion format's `ThreadFormat`; None for the chat format.
    """

    def __init__(
        self,
        endpoint: Endpoint | str,
        *,
        sampling: SamplingConfig | None = None,
        system_prompt: str | None = None,
        thread: ThreadFormat | None = None,
    ) -> None:
        own: dict[str, str] = {}
        if isinstance(endpoint, str):
            endpoint, own = parse_endpoint(endpoint, extra=("tokenizer",))
        self.endpoint = endpoint
        named = own.get("tokenizer")
        self.tokenizer = load_tokenizer(named) if named else local_tokenizer(endpoint.model)
        self.sampling = sampling or SamplingConfig(max_new_tokens=64, temperature=0.7, top_p=0.9)
        if self.sampling.top_k:
            raise ValueError(
                f"served defender {self.endpoint.url}: top_k={self.sampling.top_k} is not part of "
                "the OpenAI API; use top_p"
            )
        self.system_prompt = system_prompt
        self.thread = thread
        self.name = self.endpoint.spec()

    @property
    def format(self) -> str:
        """`"chat"` or `"completion"` (a text thread)."""
        return "chat" if self.thread is None else "completion"

    def __repr__(self) -> str:
        return f"ServedDefender({self.name!r}, format={self.format!r})"

    def _messages(self, conversation: Sequence[Message]) -> list[Message]:
        messages = list(conversation)
        if self.system_prompt:
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return messages

    def prompt(self, conversation: Sequence[Message]) -> str:
        """The completion format's prompt text for the defender's next reply."""
        if self.thread is None:
            raise ValueError("the chat format has no prompt text: the server renders the chat")
        return self.thread.render(self._messages(conversation), prompt=True)

    def _params(self) -> dict[str, Any]:
        s = self.sampling
        params: dict[str, Any] = {
            "model": self.endpoint.model,
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
        }
        if s.temperature > 0 and s.top_p < 1:
            params["top_p"] = s.top_p
        return params

    def respond(
        self, conversations: Sequence[Sequence[Message]], generator: torch.Generator | None = None
    ) -> list[str]:
        """One reply per conversation: concurrent requests, in the conversations' order."""
        seeds: list[int | None] = [None] * len(conversations)
        if generator is not None and conversations:
            drawn = torch.randint(0, 2**31 - 1, (len(conversations),), generator=generator)
            seeds = [int(s) for s in drawn]
        params = self._params()
        jobs = list(zip(conversations, seeds, strict=True))
        if self.thread is not None:
            thread = self.thread
            params["stop"] = server_stops(thread)
            texts = self.client.map(
                lambda job: self._complete(self.prompt(job[0]), job[1], params),
                jobs,
                "completion",
            )
            return [thread.cut(t) for t in texts]
        texts = self.client.map(
            lambda job: self._chat(self._messages(job[0]), job[1], params), jobs, "chat completion"
        )
        return [t.strip() for t in texts]

    def _complete(self, prompt: str, seed: int | None, params: dict[str, Any]) -> str:
        extra = {} if seed is None else {"seed": seed}
        answer = self.client.client.completions.create(  # type: ignore[call-overload]
            prompt=prompt, **params, **extra
        )
        choices = getattr(answer, "choices", None)
        if not choices or not isinstance(getattr(choices[0], "text", None), str):
            raise ServerError(self.endpoint, f"malformed completion answer: {answer!r:.300}")
        return choices[0].text

    def _chat(self, messages: list[Message], seed: int | None, params: dict[str, Any]) -> str:
        extra = {} if seed is None else {"seed": seed}
        # the openai stubs type `messages` and `params` per key; the server checks them
        answer = self.client.client.chat.completions.create(  # type: ignore[call-overload]
            messages=messages, **params, **extra
        )
        choices = getattr(answer, "choices", None)
        content = (
            getattr(getattr(choices[0], "message", None), "content", None) if choices else None
        )
        if not isinstance(content, str):
            raise ServerError(self.endpoint, f"malformed chat completion answer: {answer!r:.300}")
        return content
