"""LoRA adapters (peft) on the policy's top layers; the KL reference is the base with them off.

The adapters go on the layers above the frozen bottom (`LearnerConfig.frozen_fraction`) and
nowhere else, so:

- the bottom is the reference's bottom, unchanged by training: the reference forward that
  scores a rollout still yields the boundary states that every epoch starts from
  (`ActorCritic.share_bottom`), and sampling keeps them as before;
- the reference's top is the same layers with the adapters off (peft's `disable_adapter`):
  one copy of the weights serves the policy and the reference, which is how a large
  adversary fits one GPU;
- B starts at zero (peft's default initialisation), so before the first update the policy's
  logprobs are the base model's, bit for bit, and its KL to the reference is 0.

A checkpoint holds only the adapters (peft `save_pretrained`: `adapter_config.json` and
`adapter_model.safetensors`); loading puts them back on the base model named in the config.
"""

from __future__ import annotations

import os
import warnings
from contextlib import AbstractContextManager
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from agents.common.config import LoRAConfig

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""What peft's `save_pretrained` writes for the adapters (a checkpoint's `actor/`)."""


class Adapters:
    """The actor's LoRA adapters: a peft `PeftModel` over the actor, whose parameters are the
    actor's own (the actor module holds them; this handle switches and saves them)."""

    def __init__(self, model: PeftModel) -> None:
        self.model = model

    def off(self) -> AbstractContextManager[None]:
        """Within the block the actor is its base model: the KL reference."""
        return self.model.disable_adapter()

    def save(self, directory: str | os.PathLike[str]) -> None:
        """The adapters alone (a few MB), in peft's format."""
        self.model.save_pretrained(str(directory))

    @property
    def lora_config(self) -> LoraConfig:
        """peft's config of the active adapters."""
        config = self.model.peft_config[self.model.active_adapter]
        assert isinstance(config, LoraConfig)
        return config

    def __repr__(self) -> str:
        config = self.lora_config
        return (
            f"Adapters(rank={config.r}, alpha={config.lora_alpha}, "
            f"layers={config.layers_to_transform}, modules={_norm(config.target_modules)})"
        )


def add_adapters(
    actor: PreTrainedModel,
    config: LoRAConfig,
    stack: nn.ModuleList,
    start: int,
    *,
    saved: str | os.PathLike[str] | None = None,
) -> Adapters:
    """Put LoRA adapters on the linear modules `config.target_modules` of the decoder layers
    `stack[start:]`, in place (every base weight of `actor` is frozen afterwards), or, with
    `saved`, the adapters that `Adapters.save` wrote there (trainable, to resume)."""
    if not 0 <= start < len(stack):
        raise ValueError(
            f"LoRA adapts the layers above the frozen bottom, but all {len(stack)} layers of "
            f"{type(actor).__name__} are frozen (frozen_fraction too high)"
        )
    peft_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=target_modules(actor, config, stack, start),
        layers_to_transform=list(range(start, len(stack))),
        layers_pattern=_stack_name(actor, stack),
        bias="none",
    )
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` (a FutureWarning
        # of transformers 5.24, not a call of ours)
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        if saved is None:
            return Adapters(get_peft_model(actor, peft_config))
        adapters = Adapters(PeftModel.from_pretrained(actor, str(saved), is_trainable=True))
    _check_saved(adapters.lora_config, peft_config, Path(saved))
    return adapters


def target_modules(
    actor: PreTrainedModel, config: LoRAConfig, stack: nn.ModuleList, start: int
) -> list[str]:
    """The names (within a decoder layer) of the linear modules that get adapters, checked
    against the layers `stack[start:]`: a name that is no linear module there is an error."""
    linear = sorted(
        {
            name
            for layer in stack[start:]
            for name, module in layer.named_modules()
            if isinstance(module, nn.Linear | Conv1D)
        }
    )
    wanted = config.target_module_names
    if wanted == ["all-linear"]:
        return linear
    unknown = [w for w in wanted if not any(n == w or n.endswith(f".{w}") for n in linear)]
    if unknown:
        raise ValueError(
            f"lora.target_modules: {', '.join(map(repr, unknown))} names no linear module of "
            f"the adapted layers {start}..{len(stack) - 1} of {type(actor).__name__} (they "
            f"have {', '.join(linear)}; or 'all-linear')"
        )
    return wanted


def _stack_name(actor: PreTrainedModel, stack: nn.ModuleList) -> str:
    """The attribute that holds the decoder layers (`layers`, `h`): peft's `layers_pattern`."""
    return next(name for name, module in actor.named_modules() if module is stack).split(".")[-1]


def _check_saved(saved: LoraConfig, expected: LoraConfig, path: Path) -> None:
    """The saved adapters are the ones the config describes (rank, scaling, layers, modules)."""
    fields = ("r", "lora_alpha", "layers_to_transform", "target_modules")
    differ = [
        f"{f}: saved {getattr(saved, f)!r}, config {getattr(expected, f)!r}"
        for f in fields
        if _norm(getattr(saved, f)) != _norm(getattr(expected, f))
    ]
    if differ:
        raise ValueError(f"the adapters in {path} do not fit the config: " + "; ".join(differ))


def _norm(value: object) -> object:
    return sorted(value) if isinstance(value, set | list | tuple) else value
