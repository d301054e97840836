"""The transcript codec and the chat views.

A transcript is a list of `{"role", "content"}` messages with the roles `opener`,
`adversary` and `defender`. `render_transcript` writes it as the env's text observation and
`parse_observation` reads it back exactly; the views turn it into the chat each model reads
(the defender's, the judge's, the adversary's).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

OBS_MAX_CHARS = 32_768
"""Longest observation; longer conversations keep their most recent characters."""
REPLACEMENT = "\ufffd"


def _bmp_charset() -> frozenset[str]:
    # Every Basic Multilingual Plane character but the surrogates: a closed, finite charset
    # that gymnasium's Text space can check, wide enough for real LM output.
    return frozenset(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)


CHARSET = _bmp_charset()


def to_charset(text: str) -> str:
    """Replace characters outside `CHARSET` (emoji and other astral code points) with U+FFFD."""
    if text.isascii():
        return text
    return "".join(
        c if ord(c) < 0xD800 or 0xE000 <= ord(c) < 0x10000 else REPLACEMENT for c in text
    )


# Roles of a transcript entry, and how each maps onto the defender's chat.
OPENER, ADVERSARY, DEFENDER = "opener", "adversary", "defender"
_CHAT_ROLE = {OPENER: "user", ADVERSARY: "user", DEFENDER: "assistant"}


_HEADER = re.compile(r"^\\*\[(opener|adversary|defender)\]$", re.MULTILINE)


def render_transcript(transcript: Sequence[dict[str, str]]) -> str:
    """The observation: a `[role]` header line before each message, blank lines between.

    A content line that reads like a header gets one more leading backslash, so
    `parse_observation` recovers the transcript exactly and no utterance can forge a turn.
    """
    text = "\n\n".join(f"[{m['role']}]\n{_escape(m['content'])}" for m in transcript)
    text = to_charset(text)
    return text[-OBS_MAX_CHARS:]


def parse_observation(observation: str) -> list[dict[str, str]]:
    """The transcript behind a rendered observation (the inverse of `render_transcript`)."""
    transcript: list[dict[str, str]] = []
    lines: list[str] = []
    for line in observation.split("\n"):
        header = _HEADER.fullmatch(line)
        if header and not line.startswith("\\"):
            if transcript:
                transcript[-1]["content"] = _unescape("\n".join(lines).removesuffix("\n"))
            transcript.append({"role": header.group(1), "content": ""})
            lines = []
        else:
            lines.append(line)
    if transcript:
        transcript[-1]["content"] = _unescape("\n".join(lines))
    return transcript


def _escape(content: str) -> str:
    return _HEADER.sub(lambda h: "\\" + h.group(0), content)


def _unescape(content: str) -> str:
    return _HEADER.sub(lambda h: h.group(0)[1:], content)


def defender_view(transcript: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The transcript as the defender's chat: opener and adversary are the user, the defender
    the assistant. Consecutive user messages (the opener and the first utterance) are joined,
    since many chat templates (Mistral, Gemma) require alternating roles."""
    chat: list[dict[str, str]] = []
    for m in transcript:
        role = _CHAT_ROLE[m["role"]]
        if chat and chat[-1]["role"] == role:
            chat[-1] = {"role": role, "content": f"{chat[-1]['content']}\n\n{m['content']}"}
        else:
            chat.append({"role": role, "content": m["content"]})
    return chat


_THREAD_ROLE = {OPENER: "opener", ADVERSARY: "user", DEFENDER: "assistant"}


def thread_view(transcript: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The transcript as the defender's text thread (`defender_format="completion"`): one
    message per entry, the opener kept apart as the thread's opening post (roles `opener`,
    `user`, `assistant`; see `redteam_gym.models.thread`)."""
    return [{"role": _THREAD_ROLE[m["role"]], "content": m["content"]} for m in transcript]


def judge_view(transcript: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The transcript for the judge: one message per utterance, so the last message is
    exactly the utterance being assessed (the opener is never blamed on the adversary)."""
    return [{"role": _CHAT_ROLE[m["role"]], "content": m["content"]} for m in transcript]
