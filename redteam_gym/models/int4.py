"""A frozen LM's 4-bit weights run as 4-bit weights, as llama.cpp runs a Q4 GGUF, on a CPU.

The embedded defender ships as a Q4_1 GGUF: in every linear layer of its body, each group of
32 weights is `scale * q + min` with `q` in 0..15. Dequantised to dense fp32 (517 MiB), every
decode step reads 4x the bytes the file holds, and decoding on a CPU is bound by memory reads
(`benchmarks/results/perf-frozen-inference.md`). `quantize_int4` packs back exactly those
layers whose weights already lie on such a grid, so the 4-bit weights are the file's own, not a
new lossy quantisation.

Only the linear layers' products run in bf16 (the 4-bit kernel's input dtype): a layer rounds
its input to bf16 and hands back fp32. The layers off the grid (the tied output layer, a Q8_0
tensor in the file) multiply by a dense bf16 copy the same way. Everything else stays fp32: the
norms, the residual stream, the KV cache, the attention and the logits. Casting the whole model
to bf16 instead runs the eval's defender turns at the same speed (15.1 ms a reply token either
way), but its sampled replies part sooner from the fp32 model's: with one seed, 53 of 128 first
replies matched the dense defender's, against 75 of 128 with fp32 around the products
(`benchmarks/results/defender-weights.md`). The price is memory: fp32 activations, KV cache and
logits.

A decode step's few rows go through the 4-bit kernel; a prefill's many go through a dense bf16
copy of the same weights, where the kernel, compute-bound, is slower (`DENSE_FROM_ROWS`). The
packed layers so hold 2.5 bytes per weight, against fp32's 4.

Known limitation: the int4 defender's greedy replies depend on how they were batched, where
dense weights' do not (`python -m benchmarks.studies.batch_invariance`,
`benchmarks/results/batch-invariance.md`). Asked 32 openers through the chat template, as one
batch of 32 and one by one, the int4 defender gave 14 identical replies of up to 48 tokens,
dense weights 32; a second turn continued from the KV cache against prefilled afresh (as after
a restart), 25 against 32. In the completion format, whose replies end at a line break: 25
and 29 of 32, against 32 and 32. Two causes, measured:
- the two paths differ in the last bf16 bit. The kernel sums in its own order and rounds its
  output to bf16: even a copy holding the kernel's own effective weights, read back through it,
  matches only about 57% of its outputs bit for bit. Which path a token takes depends on the
  rows of its call.
- bf16 products turn the fp32 model's tiny batch-dependent differences (padding, kernels chosen
  by shape) into bf16-sized ones. With one path per call's shape instead of its row count,
  batch 32 against one by one still gave only 16 of 32 identical, and 32 copies of one
  unpadded prompt against the prompt alone 5 of 8.
A run's replies are reproducible at a fixed batching (the same 32 replies twice). Where they
must not change with the number of envs or with caching, use `weights="dense"`.

The matmul is PyTorch's own CPU kernel for 4-bit weights in groups
(`aten._weight_int4pack_mm_for_cpu`, the kernel behind torchao's CPU int4 layout), whose
dequantisation is `(q - 8) * scale + zero`; so `zero = min + 8 * scale`. It takes fp32 input
too, but 30x slower than bf16 on this CPU.
"""

from __future__ import annotations

import torch
from torch import nn

GROUP_SIZE = 32
"""Weights per group sharing one scale and one minimum (a Q4_0/Q4_1 GGUF block)."""

_INNER_K_TILES = 2  # the packing's K tiling; the kernel needs in_features % (16 * this) == 0

DENSE_FROM_ROWS = 32
"""From this many rows a call multiplies by the layer's dense bf16 copy instead: the 4-bit
kernel is compute-bound, about 2.4x slower than a dense bf16 matmul from 256 rows on up on this
project's 2-core CPU, while a decode step's few rows are bound by reading the weights, which
4 bits make 4x cheaper than fp32 (`benchmarks/results/perf-frozen-inference.md`)."""


class Bf16Linear(nn.Module):
    """A frozen bias-free linear layer multiplied in bf16: it takes inputs of any float dtype
    and returns that dtype."""

    dense: torch.Tensor

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("dense", weight.detach().to(torch.bfloat16), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x.to(torch.bfloat16), self.dense).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype=bf16"


class Int4Linear(Bf16Linear):
    """A frozen linear layer whose weight is 4-bit codes with a scale and a zero per group.

    `forward` takes inputs of any float dtype and returns that dtype; the product runs in bf16:
    by the 4-bit kernel for a decode step's few rows, by a dense bf16 copy of the same weights
    for a prefill's many (`DENSE_FROM_ROWS`).
    """

    packed: torch.Tensor
    scale_and_zero: torch.Tensor

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> None:
        out_features, in_features = codes.shape
        groups = codes.reshape(out_features, in_features // GROUP_SIZE, GROUP_SIZE).float()
        dense = groups * scale[..., None] + minimum[..., None]
        super().__init__(dense.reshape(out_features, in_features))
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            codes.to(torch.int32).contiguous(), _INNER_K_TILES
        )
        zero = minimum + 8 * scale
        # [in_features / GROUP_SIZE, out_features, 2]: the layout the kernel reads
        scale_and_zero = torch.stack([scale.t(), zero.t()], dim=-1).to(torch.bfloat16)
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("scale_and_zero", scale_and_zero.contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] >= DENSE_FROM_ROWS:
            return super().forward(x)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows.to(torch.bfloat16), self.packed, GROUP_SIZE, self.scale_and_zero
        )
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits=4"


def int4_grid(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """`(codes, scale, minimum)` with `weight == codes * scale + minimum` per group of
    `GROUP_SIZE` along the input dimension, exactly (to fp32 rounding); None when the weight
    does not lie on such a grid (re-quantising it would change the model)."""
    out_features, in_features = weight.shape
    if in_features % (16 * _INNER_K_TILES) or in_features % GROUP_SIZE or out_features % 8:
        return None
    w = weight.detach().float().reshape(out_features, in_features // GROUP_SIZE, GROUP_SIZE)
    low, high = w.amin(-1), w.amax(-1)
    scale = (high - low) / 15
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    steps = (w - low[..., None]) / safe[..., None]
    codes = steps.round().clamp(0, 15)
    rebuilt = codes * scale[..., None] + low[..., None]
    # a weight on the grid comes back to within fp32 rounding of its own size
    tolerance = 4 * torch.finfo(torch.float32).eps * w.abs().amax(-1, keepdim=True)
    if not bool(((rebuilt - w).abs() <= tolerance).all()):
        return None
    return codes.reshape(out_features, in_features).to(torch.uint8), scale, low


def int4_kernel_available() -> bool:
    ops = torch.ops.aten
    return hasattr(ops, "_weight_int4pack_mm_for_cpu") and hasattr(
        ops, "_convert_weight_to_int4pack_for_cpu"
    )


def first_layer_on_grid(model: nn.Module) -> bool:
    """Whether the first bias-free `nn.Linear` of `model` lies on a 4-bit grid: a cheap test
    of a whole model converted from a Q4 GGUF (a dense checkpoint fails at once)."""
    for module in model.modules():
        if type(module) is nn.Linear and module.bias is None:
            return int4_grid(module.weight) is not None
    return False


def quantize_int4(model: nn.Module) -> list[str]:
    """Replace, in place, every bias-free `nn.Linear` of `model` whose weight lies exactly on
    a 4-bit grid of `GROUP_SIZE` groups with an `Int4Linear`, and every other bias-free
    `nn.Linear` with a `Bf16Linear`; the names of the layers packed as 4-bit. The rest of
    `model` stays fp32.

    `model` must be frozen, on the CPU, in fp32: a weight already rounded to bf16 is off its
    grid. With no layer on a grid, `model` is left as it was.
    """
    if not int4_kernel_available():
        raise RuntimeError(
            f"4-bit weights need PyTorch's CPU int4 kernel, which torch {torch.__version__} "
            "lacks; load the defender with dense weights instead"
        )
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise ValueError(
            "4-bit weights are packed from an fp32 model on the CPU; the model is on "
            f"{parameter.device.type} in {parameter.dtype}"
        )
    if any(p.requires_grad for p in model.parameters()):
        raise ValueError("4-bit weights are for frozen models; this model has trainable weights")
    layers = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear and module.bias is None
    ]
    grids = {name: int4_grid(module.weight) for name, module in layers}
    if all(grid is None for grid in grids.values()):
        return []
    for name, module in layers:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        grid = grids[name]
        setattr(parent, child, Bf16Linear(module.weight) if grid is None else Int4Linear(*grid))
    return [name for name, grid in grids.items() if grid is not None]
