"""Language models: loading (embedded SmolLM2, any HF id or path), chat encoding, sampling."""

from redteam_gym.models.chat import (
    DEFAULT_CHAT_TEMPLATE,
    Message,
    encode_chat,
    encode_chat_continuation,
    encode_text,
)
from redteam_gym.models.chat_lm import ChatLM
from redteam_gym.models.generation import (
    PrefixCache,
    Samples,
    SamplingConfig,
    left_pad,
    sample,
)
from redteam_gym.models.loading import (
    SMOLLM2,
    ModelNotFoundError,
    cache_dir,
    default_device,
    default_dtype,
    embedded_gguf_path,
    load_causal_lm,
    load_tokenizer,
    resolve_model,
)
from redteam_gym.models.thread import ThreadFormat

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "SMOLLM2",
    "ChatLM",
    "Message",
    "ModelNotFoundError",
    "PrefixCache",
    "Samples",
    "SamplingConfig",
    "ThreadFormat",
    "cache_dir",
    "default_device",
    "default_dtype",
    "embedded_gguf_path",
    "encode_chat",
    "encode_chat_continuation",
    "encode_text",
    "left_pad",
    "load_causal_lm",
    "load_tokenizer",
    "resolve_model",
    "sample",
]
