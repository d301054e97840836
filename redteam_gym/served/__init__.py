"""Served models: the defender and the judge behind an OpenAI-compatible API.

| spec | what |
|---|---|
| `defender="openai:URL#MODEL"` | `ServedDefender`: `/v1/completions` in the completion format, `/v1/chat/completions` in the chat format |
| `judge="llama-guard:openai:URL#MODEL"` | `ServedLlamaGuardJudge`: P(unsafe) from the verdict token's logprobs on `/v1/completions` |

Options follow the model after `;` (`openai:URL#MODEL;max_concurrency=16;timeout_s=30`): see
`Endpoint`. The `openai` client comes with the `serve` extra (`pip install redteam-gym[serve]`).
"""

from redteam_gym.served.endpoint import (
    OPENAI_PREFIX,
    Endpoint,
    EndpointClient,
    ServerError,
    is_openai_spec,
    parse_endpoint,
)

__all__ = [
    "OPENAI_PREFIX",
    "Endpoint",
    "EndpointClient",
    "ServerError",
    "is_openai_spec",
    "parse_endpoint",
]
