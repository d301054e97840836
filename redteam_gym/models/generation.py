"""Batched sampling with a KV cache, seeded through one `torch.Generator`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from packaging.version import Version
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache, DynamicLayer

_TRANSFORMERS_RENAMED_CACHE = Version(transformers.__version__).release >= (5, 24)


@dataclass
class SamplingConfig:
    """How a language model samples its replies."""

    max_new_tokens: int = 64
    """Most tokens generated per reply (the stop token included)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 disables it."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 disables it."""
    min_new_tokens: int = 0
    """The first this many generated ids can be neither a stop token nor one of the ids that
    `sample` is told to hold back (a line break, where a line ends a reply), so a reply is never
    empty."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens < self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must be in 0..max_new_tokens - 1 ({self.max_new_tokens - 1}), "
                f"got {self.min_new_tokens}"
            )
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclass
class Samples:
    """What `sample` returns, one row per prompt."""

    tokens: list[list[int]]
    """Generated ids, the stop token included when one was sampled."""
    logprobs: list[torch.Tensor]
    """Log-probability of each generated id under the sampling distribution's logits / T."""
    values: list[torch.Tensor] | None = None
    """`value_head` applied to the final hidden state that produced each id, when given."""
    cache: PrefixCache | None = None
    """The KV cache after this call, with `keep_cache=True` (see `sample`)."""
    states: list[torch.Tensor] | None = None
    """With `keep_states_of`, per row, that module's output for every id this call fed through
    the model: the prompt's ids from `states_start` on, then the generated ids but the last."""
    states_start: list[int] | None = None
    """Per row, the prompt position of the first of `states` (the ids before it were cached)."""


def left_pad(
    rows: Sequence[Sequence[int]], pad_token_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists into `(input_ids, attention_mask)`."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def _accepts_logits_to_keep(model: PreTrainedModel) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def cache_kwarg(model: PreTrainedModel) -> str:
    """The keyword under which `model.forward` takes its KV cache.

    transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, and goes in
    5.40); earlier 5.x releases know only `past_key_values`. Passing `cache=` to those would
    vanish into `**kwargs` and silently disable the cache, so the name is read off the model
    class's signature (an instance's `forward` may be a hook or wrapper that hides it), and off
    the installed release when the signature names neither.
    """
    params = inspect.signature(type(model).forward).parameters
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    return "cache" if _TRANSFORMERS_RENAMED_CACHE else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache a forward pass returns, read under its current name (`cache`) first, so
    that no deprecated attribute is touched on releases that have the new one."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


NUCLEUS_CANDIDATES = 256
"""Top-p first looks for the nucleus among this many most likely tokens, then, for rows whose
candidates hold less than `top_p` of the mass, among 16 times as many (a partial top-k costs a
fifth of a full sort over a 49k vocabulary), and ranks a row's whole vocabulary only after
that."""


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside the top-k set and the top-p nucleus with -inf.

    The nucleus keeps a token while the mass of the tokens ranked above it is below `top_p`
    (so the most likely token always stays).
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p >= 1.0:
        return logits
    width = logits.shape[-1]
    rows = logits.reshape(-1, width)
    log_total = rows.logsumexp(-1, keepdim=True)
    filtered = torch.full_like(rows, float("-inf"))
    todo = torch.arange(rows.shape[0], device=rows.device)
    limit = min(top_k, width) if top_k > 0 else width
    for k in (NUCLEUS_CANDIDATES, 16 * NUCLEUS_CANDIDATES, width):
        k = min(k, limit)
        top, order = torch.topk(rows[todo], k, dim=-1)  # sorted, most likely first
        probs = (top - log_total[todo]).exp()
        before = probs.cumsum(-1) - probs
        # a row whose k candidates hold less than top_p may have its nucleus beyond them
        wide = (before[:, -1] + probs[:, -1] < top_p) & (k < limit)
        kept = top.masked_fill(before >= top_p, float("-inf"))
        done = ~wide
        filtered[todo[done][:, None], order[done]] = kept[done]
        todo = todo[wide]
        if not len(todo):
            break
    return filtered.reshape(logits.shape)


def draw(
    logprobs: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    rows: torch.Tensor | None = None,
    batch: int | None = None,
) -> torch.Tensor:
    """One id per row of `logprobs` (log-probabilities, `-inf` for ids that cannot be drawn),
    drawn from their distribution: the id with the largest `logprob - log(-log u)`, one
    uniform `u` per id (the Gumbel-max race, which `torch.multinomial` runs with exponential
    numbers).

    Each id keeps its own random number, so two distributions close to each other, drawn with
    the same seed, give the same id unless two ids nearly tie: same-seed runs of two defenders
    (or of one defender at two precisions) stay together as long as their models agree. (An
    inverse CDF, at one number per row, is 5x cheaper still but loses that: a change to any
    id's probability moves every later id's interval.) It costs a quarter of
    `torch.multinomial`'s time on this CPU (3.6 against 16 ms a step at batch 16 over a 49k-id
    vocabulary); an id of probability 0 is never drawn.

    With `rows` (which rows of a batch of `batch` the rows of `logprobs` are, in order), every
    row gets the random numbers it would get in the whole batch: a sampler that stops feeding
    finished rows draws what it would have drawn with them.
    """
    shape = list(logprobs.shape)
    if rows is not None:
        if batch is None or len(rows) != shape[0]:
            raise ValueError(
                f"draw: rows needs the whole batch's size and one index per row of logprobs "
                f"({shape[0]}), got batch={batch} and {len(rows)} rows"
            )
        shape[0] = batch
    uniform = torch.rand(shape, generator=generator, dtype=torch.float32, device=logprobs.device)
    if rows is not None:
        uniform = uniform[rows]
    # u in [0, 1): -log u is positive (inf at u = 0, which then loses), so no NaN arises
    return (logprobs.float() - uniform.log().neg_().log_()).argmax(-1)


class BufferedLayer(DynamicLayer):
    """A full-attention KV cache layer that appends into spare capacity.

    `DynamicLayer` concatenates its whole cache with every new token, copying O(length) per
    decoding step: at batch 8 and 400 cached tokens that copy is most of a CPU decoding step.
    Here a step writes only the new token; the buffer grows by half when full, and a cache
    that was cropped or re-indexed (beam search) is copied into a fresh buffer.
    """

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        cached_keys, cached_values = self.keys, self.values
        buffers: tuple[torch.Tensor, torch.Tensor] | None = getattr(self, "_buffers", None)
        stale = buffers is None or (
            length > 0
            and cached_keys is not None
            and cached_keys.data_ptr() != buffers[0].data_ptr()
        )
        if stale or buffers is None or end > buffers[0].shape[-2]:
            capacity = end + max(128, end // 2)
            keys = key_states.new_empty((*key_states.shape[:-2], capacity, key_states.shape[-1]))
            values = value_states.new_empty(
                (*value_states.shape[:-2], capacity, value_states.shape[-1])
            )
            if length and cached_keys is not None and cached_values is not None:
                keys[..., :length, :] = cached_keys
                values[..., :length, :] = cached_values
            buffers = self._buffers = (keys, values)
        keys, values = buffers
        keys[..., length:end, :] = key_states
        values[..., length:end, :] = value_states
        self.keys, self.values = keys[..., :end, :], values[..., :end, :]
        return self.keys, self.values


def new_kv_cache(model: PreTrainedModel) -> DynamicCache:
    """A `DynamicCache` for `model` whose full-attention layers are `BufferedLayer`s (sliding
    window and other special layers keep their own classes)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [BufferedLayer() if type(x) is DynamicLayer else x for x in cache.layers]
    if cache.layer_class_to_replicate is DynamicLayer:
        cache.layer_class_to_replicate = BufferedLayer
    return cache


@dataclass
class PrefixCache:
    """The KV cache a `sample` call leaves behind, for the next call to continue from.

    Row `i` holds `tokens[i]` (its prompt and the generated ids that went through the model) at
    cache columns `columns[i]`; every other column of the row is a hole (left padding, the pad
    ids of rows that stopped early, a prefix that the next prompt no longer shares) that the
    attention mask hides. Consumed by the call that reuses it.
    """

    kv_cache: Any
    """The transformers `Cache` object."""
    tokens: list[list[int]]
    columns: list[list[int]]
    width: int
    """Columns in the cache."""


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _reusable(cache: PrefixCache | None, prompts: Sequence[Sequence[int]]) -> list[int] | None:
    """Per row, how many leading prompt ids the cache already holds; None to start afresh."""
    if cache is None or len(cache.tokens) != len(prompts):
        return None
    layers = getattr(cache.kv_cache, "layers", None)
    if not layers or any(getattr(layer, "is_sliding", False) for layer in layers):
        return None  # a sliding window has dropped columns the bookkeeping counts on
    # at least the last prompt id is fed again: its forward pass gives the first logits
    shared = [
        min(_common_prefix(c, p), len(p) - 1) for c, p in zip(cache.tokens, prompts, strict=True)
    ]
    new = max(len(p) - n for p, n in zip(prompts, shared, strict=True))
    longest = max(len(p) for p in prompts)
    # holes would outnumber cached ids: a fresh, compact prefill is cheaper from here on
    if sum(shared) == 0 or cache.width + new > 2 * longest:
        return None
    return shared


@dataclass
class _Dropped:
    """A row that left the running batch: its prompt index, the decode steps run while it was
    in it (it fed at most that many of its generated ids), and its KV cache rows as they were
    (kept only when the cache outlives the call)."""

    index: int
    fed: int
    layers: list[tuple[torch.Tensor, torch.Tensor]]


def _rows_selectable(cache: Any) -> bool:
    """Whether rows can be taken out of `cache`: every layer a plain full-attention one."""
    layers = getattr(cache, "layers", None) or []
    return bool(layers) and all(
        isinstance(layer, DynamicLayer)
        and not getattr(layer, "is_sliding", False)
        and layer.keys is not None
        for layer in layers
    )


def _drop_finished(
    cache: Any,
    rows: torch.Tensor,
    done: torch.Tensor,
    running: torch.Tensor,
    fed: int,
    *,
    keep: bool,
) -> list[_Dropped]:
    """Take the finished rows out of `cache` (in place), keeping their KV rows when `keep`.

    A finished row would only be fed padding from here on, so leaving changes none of its
    results, and the running rows' decode steps stop paying for it: on a CPU, a 4-bit decode
    step's cost grows with its rows from the first one.
    """
    out = []
    for j in done.nonzero().squeeze(1).tolist():
        layers = [(x.keys[j].clone(), x.values[j].clone()) for x in cache.layers] if keep else []
        out.append(_Dropped(int(rows[j]), fed, layers))
    for layer in cache.layers:
        layer.batch_select_indices(running)
    return out


def _restore_dropped(
    cache: Any, rows: torch.Tensor, dropped: Sequence[_Dropped], batch: int
) -> None:
    """Put the dropped rows back into `cache` (in place), row `i` of the prompts at row `i`:
    their columns past their last fed id are holes, which `PrefixCache.columns` leaves out."""
    for n, layer in enumerate(cache.layers):
        keys = layer.keys.new_zeros((batch, *layer.keys.shape[1:]))
        values = layer.values.new_zeros((batch, *layer.values.shape[1:]))
        keys[rows], values[rows] = layer.keys, layer.values
        for row in dropped:
            k, v = row.layers[n]
            keys[row.index, :, : k.shape[-2]] = k
            values[row.index, :, : v.shape[-2]] = v
        layer.keys, layer.values = keys, values


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    *,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    generator: torch.Generator | None = None,
    value_head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    prefix_cache: PrefixCache | None = None,
    keep_cache: bool = False,
    keep_states_of: torch.nn.Module | None = None,
    held_back_ids: Sequence[int] = (),
    stop: Callable[[Sequence[int]], bool] | None = None,
) -> Samples:
    """Sample continuations of a batch of prompts in one batched, KV-cached loop.

    Rows are left padded with explicit position ids, so every row sees the same positions
    it would see alone. Sampling draws from `generator`, so a seeded generator gives the
    same tokens on the same device. With `value_head`, the final hidden state of each step is
    mapped to a value as the token is sampled, so a learner needs no second forward pass.

    With `keep_cache`, `Samples.cache` keeps the KV cache; passing it as `prefix_cache` to the
    next call (same model, same number of rows, row `i` continuing row `i`'s conversation)
    feeds each row only the ids after its longest prefix shared with the cache, so a dialogue's
    next turn prefills just its new messages. Any prompt may be passed: a row that shares
    nothing with the cache is masked out of it, and the cache is rebuilt when that is cheaper.

    With `keep_states_of` (a module of `model`, such as a decoder layer), `Samples.states`
    keeps its output at every id fed through the model: a learner whose frozen bottom ends
    there gets the boundary states of the whole dialogue from sampling, without a forward.

    A row ends at a stop token, or when `stop` (given the row's generated ids so far, the
    last one included) says its text has reached a stop string. During the first
    `config.min_new_tokens` steps, the stop tokens and `held_back_ids` cannot be sampled.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("sample needs at least one prompt and no empty prompts")
    device = next(model.parameters()).device
    extra: dict = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    cache_name = cache_kwarg(model)
    if value_head is not None:
        extra["output_hidden_states"] = True
    batch = len(prompts)
    shared = _reusable(prefix_cache, prompts)
    if prefix_cache is None or shared is None:
        past, offset = new_kv_cache(model), 0
        shared = [0] * batch
        kept = torch.zeros((batch, 0), dtype=torch.long)
        columns: list[list[int]] = [[] for _ in prompts]
    else:
        past, offset = prefix_cache.kv_cache, prefix_cache.width
        kept = torch.zeros((batch, offset), dtype=torch.long)
        columns = [c[:n] for c, n in zip(prefix_cache.columns, shared, strict=True)]
        for i, cols in enumerate(columns):
            kept[i, cols] = 1
    suffixes = [p[n:] for p, n in zip(prompts, shared, strict=True)]
    kept_states: list[torch.Tensor] = []
    hook = None
    if keep_states_of is not None:

        def keep(_module, _args, output) -> None:
            kept_states.append((output[0] if isinstance(output, tuple) else output).detach())

        hook = keep_states_of.register_forward_hook(keep)
    input_ids, new_mask = left_pad(suffixes, pad_token_id, device)
    width = input_ids.shape[1]
    for i, suffix in enumerate(suffixes):
        columns[i] += range(offset + width - len(suffix), offset + width)
    attention_mask = torch.cat([kept.to(device), new_mask], dim=-1)
    shared_t = torch.as_tensor(shared, device=device)[:, None]
    position_ids = shared_t + (new_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        **{cache_name: past},
        **extra,
    )
    eos = torch.as_tensor(list(eos_token_ids), device=device)
    early_banned = torch.as_tensor(sorted({*eos_token_ids, *held_back_ids}), device=device)
    generated: list[list[int]] = [[] for _ in prompts]
    # the running batch: `rows` are the prompts' indices of its rows. Finished rows leave it
    # (`_drop_finished`) unless a step's states or values are kept for every row
    rows = torch.arange(batch, device=device)
    can_drop = value_head is None and keep_states_of is None
    dropped: list[_Dropped] = []
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    steps: list[torch.Tensor] = []
    step_logprobs: list[torch.Tensor] = []
    step_values: list[torch.Tensor] = []
    alive: list[torch.Tensor] = []
    fed = 0
    next_position = position_ids[:, -1]
    for step in range(config.max_new_tokens):
        logits = out.logits[:, -1, :].float()
        if step < config.min_new_tokens:
            logits[:, early_banned] = float("-inf")
        if config.temperature == 0:
            logprobs = logits.log_softmax(-1)
            token = logits.argmax(-1)
        else:
            logits = filter_logits(logits / config.temperature, config.top_k, config.top_p)
            logprobs = logits.log_softmax(-1)
            whole = len(rows) == batch
            token = draw(logprobs, generator, rows=None if whole else rows, batch=batch)
        token = torch.where(done, torch.full_like(token, pad_token_id), token)
        alive.append(torch.zeros(batch, dtype=torch.bool, device=device).index_put_((rows,), ~done))
        steps.append(torch.full((batch,), pad_token_id, device=device).index_put_((rows,), token))
        step_logprobs.append(
            torch.zeros(batch, device=device).index_put_(
                (rows,), logprobs.gather(-1, token[:, None]).squeeze(-1)
            )
        )
        if value_head is not None:
            step_values.append(value_head(out.hidden_states[-1][:, -1, :]).float())
        done = done | torch.isin(token, eos)
        if stop is not None:
            stopped = []
            for j, (i, t) in enumerate(zip(rows.tolist(), token.tolist(), strict=True)):
                generated[i].append(t)
                if not done[j] and stop(generated[i]):
                    stopped.append(j)
            if stopped:
                done[stopped] = True
        if bool(done.all()):
            break
        cache_now = returned_cache(out)
        if can_drop and 4 * int(done.sum()) >= len(done) and _rows_selectable(cache_now):
            running = (~done).nonzero().squeeze(1)
            dropped += _drop_finished(cache_now, rows, done, running, fed, keep=keep_cache)
            rows, done, token = rows[running], done[running], token[running]
            attention_mask, next_position = attention_mask[running], next_position[running]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=-1)
        next_position = next_position + 1
        out = model(
            input_ids=token[:, None],
            attention_mask=attention_mask,
            position_ids=next_position[:, None],
            use_cache=True,
            **{cache_name: cache_now},
            **extra,
        )
        fed += 1
    if hook is not None:
        hook.remove()
    tokens_t = torch.stack(steps, 1).cpu()
    logprobs_t = torch.stack(step_logprobs, 1).cpu()
    alive_t = torch.stack(alive, 1).cpu()
    lengths = alive_t.sum(1).tolist()
    values_t = torch.stack(step_values, 1).cpu() if step_values else None
    tokens = [tokens_t[i, :n].tolist() for i, n in enumerate(lengths)]
    cache = None
    if keep_cache:
        # the ids sampled at a row's last step never went through the model, nor any after
        # the row left the running batch
        start = offset + width
        fed_by = [fed] * batch
        for row in dropped:
            fed_by[row.index] = row.fed
        kv_cache = returned_cache(out)
        if dropped:
            _restore_dropped(kv_cache, rows, dropped, batch)
        cache = PrefixCache(
            kv_cache=kv_cache,
            tokens=[
                list(p) + t[: min(n, f)]
                for p, t, n, f in zip(prompts, tokens, lengths, fed_by, strict=True)
            ],
            columns=[
                cols + list(range(start, start + min(n, f)))
                for cols, n, f in zip(columns, lengths, fed_by, strict=True)
            ],
            width=start + fed,
        )
    states = None
    if keep_states_of is not None:
        # the prefill's output, then one column per decode step; row i fed its suffix and
        # its first min(n, fed) generated ids
        columns_fed = torch.cat(kept_states, dim=1)
        states = [
            columns_fed[i, width - len(suffix) : width + min(n, fed)]
            for i, (suffix, n) in enumerate(zip(suffixes, lengths, strict=True))
        ]
    return Samples(
        tokens=tokens,
        logprobs=[logprobs_t[i, :n] for i, n in enumerate(lengths)],
        values=None if values_t is None else [values_t[i, :n] for i, n in enumerate(lengths)],
        cache=cache,
        states=states,
        states_start=list(shared) if states is not None else None,
    )
