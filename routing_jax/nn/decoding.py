# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Autoregressive sampling with a cache: temperature, top-k, top-p, EOS.

The sampler knows nothing about the model. The caller wires its model into a
`step_fn` (and optionally a `prefill_fn`), e.g. for `TransformerLM`:

  def step_fn(cache, tokens, index):
    logits, mutated = model.apply(
        {"params": params, "kmeans": kmeans, "cache": cache},
        tokens[:, None], decode=True, mutable=["cache"])
    return logits[:, 0], mutated["cache"]

  out = generate(step_fn, cache, prompts, prompt_lengths, max_length=256,
                 rng=jax.random.key(0), temperature=0.8, top_p=0.9)
  out.tokens   # [batch, 256] int32: prompt, then samples, pad_id after EOS

`generate` jits itself: `step_fn`, `prefill_fn`, `max_length`, `top_k`,
`eos_id`, `pad_id` and `prefill_length` are static (hashed), everything else is
traced, so a second call with the same shapes, functions and static values
reuses the compiled loop even if `temperature`, `top_p`, the seed or the
prompts change. Pass the same function objects each time (a fresh lambda per
call retraces). `generate` may also be called inside an outer `jax.jit`.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from routing_jax.common_types import Array, PyTree

StepFn = Callable[[PyTree, Array, Array], tuple[Array, PyTree]]
PrefillFn = Callable[[PyTree, Array], tuple[Array, PyTree]]


class GenerateOutput(NamedTuple):
  """Result of `generate` (a pytree).

  Attributes:
    tokens: [batch, max_length] int32; the prompt, then sampled tokens; pad_id
      after a row's EOS.
    lengths: [batch] int32; number of valid tokens per row (up to and including
      EOS, or max_length when the row never emitted EOS).
  """

  tokens: Array
  lengths: Array


def top_k_filter(logits: Array, k: int) -> Array:
  """Keeps the `k` largest logits per row and sets the others to -inf.

  Exactly `k` tokens survive; ties at the boundary go to the lower token id
  (the order of `jax.lax.top_k`).

  Args:
    logits: [..., vocab] float.
    k: static int; 0 (or k >= vocab) disables the filter.

  Returns:
    [..., vocab] logits with all but the top `k` set to -inf.
  """
  if k < 0:
    raise ValueError(f"top_k must be >= 0, got {k}")
  vocab = logits.shape[-1]
  if k == 0 or k >= vocab:
    return logits
  _, idx = jax.lax.top_k(logits, k)  # [..., k]
  keep = jnp.put_along_axis(
      jnp.zeros(logits.shape, bool), idx, True, axis=-1, inplace=False
  )
  return jnp.where(keep, logits, -jnp.inf)


def _nucleus_mask(sorted_logits: Array, p: Array) -> Array:
  """[..., n] bool: which of the descending-sorted logits the nucleus keeps."""
  probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs  # [..., n]
  return (mass_before < p).at[..., 0].set(True)


def top_p_filter(logits: Array, p: float | Array) -> Array:
  """Nucleus filter: keeps the smallest top set holding probability >= p.

  Tokens are ranked by logit (ties to the lower token id); a token is kept
  when the probability mass strictly above it in that ranking is < p, so the
  top token is always kept and p >= 1 keeps everything. -inf logits (e.g.
  from `top_k_filter`) have zero mass and are never kept unless needed.

  Args:
    logits: [..., vocab] float.
    p: scalar in (0, 1], may be traced.

  Returns:
    [..., vocab] logits with the tokens outside the nucleus set to -inf.
  """
  p = jnp.asarray(p, jnp.float32)

  def nucleus(logits):
    order = jnp.argsort(logits, axis=-1, descending=True, stable=True)
    keep_sorted = _nucleus_mask(jnp.take_along_axis(logits, order, axis=-1), p)
    keep = jnp.put_along_axis(
        jnp.zeros(logits.shape, bool),
        order,
        keep_sorted,
        axis=-1,
        inplace=False,
    )
    return jnp.where(keep, logits, -jnp.inf)

  # p >= 1 keeps every token exactly (the cumsum's rounding could drop tokens
  # of tiny mass) and skips the sort, the costly part on accelerators.
  return jax.lax.cond(p < 1.0, nucleus, lambda logits: logits, logits)


def sample_logits(
    rng: Array,
    logits: Array,
    temperature: float | Array = 1.0,
    top_k: int = 0,
    top_p: float | Array = 1.0,
) -> Array:
  """Samples one token per row from filtered, temperature-scaled logits.

  The distribution is softmax(top_p_filter(top_k_filter(logits)) / T). With
  top_k > 0 it samples among the k candidates directly, so the nucleus sorts
  k values instead of the vocabulary (same distribution, other draws).

  Args:
    rng: PRNG key.
    logits: [..., vocab] float.
    temperature: scalar >= 0, may be traced; 0 means greedy (argmax).
    top_k: static int, 0 disables top-k filtering.
    top_p: scalar in (0, 1], may be traced; 1 disables nucleus filtering.

  Returns:
    [...] int32 token ids.
  """
  logits = logits.astype(jnp.float32)
  temperature = jnp.asarray(temperature, jnp.float32)
  top_p = jnp.asarray(top_p, jnp.float32)
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if top_k < 0:
    raise ValueError(f"top_k must be >= 0, got {top_k}")

  def sample():
    # Clamped so that the unused branch stays finite if cond becomes select
    # (under vmap over temperatures).
    inv_t = 1.0 / jnp.maximum(temperature, 1e-30)
    if 0 < top_k < logits.shape[-1]:
      values, idx = jax.lax.top_k(logits, top_k)  # [..., k], descending
      keep = _nucleus_mask(values, top_p) | (top_p >= 1.0)
      values = jnp.where(keep, values, -jnp.inf)
      choice = jax.random.categorical(rng, values * inv_t, axis=-1)
      token = jnp.take_along_axis(idx, choice[..., None], axis=-1)[..., 0]
    else:
      token = jax.random.categorical(
          rng, top_p_filter(logits, top_p) * inv_t, axis=-1
      )
    return token.astype(jnp.int32)

  # A traced temperature still skips the filters and the sampling when 0.
  return jax.lax.cond(temperature > 0, sample, lambda: greedy)


class _LoopState(NamedTuple):
  """Carry of the decoding while_loop."""

  index: Array  # int32 scalar: position whose token is fed next.
  tokens: Array  # [batch, max_length] int32.
  done: Array  # [batch] bool: row has emitted EOS.
  lengths: Array  # [batch] int32.
  cache: PyTree


def _concrete(x: Any) -> Optional[np.ndarray]:
  """Returns `x` as numpy when its value is known at trace time, else None."""
  try:
    return np.asarray(x)
  except jax.errors.JAXTypeError:  # A tracer inside an outer jit.
    return None


def _validate(
    prompts,
    prompt_lengths,
    max_length,
    temperature,
    top_k,
    top_p,
    eos_id,
    pad_id,
    prefill_fn,
    prefill_length,
):
  """Raises ValueError for arguments `generate` cannot honour."""
  if prompts.ndim != 2:
    raise ValueError(
        f"prompts must be rank 2 [batch, P], got shape {prompts.shape}"
    )
  batch, width = prompts.shape
  if not jnp.issubdtype(prompts.dtype, jnp.integer):
    raise ValueError(f"prompts must be integer tokens, got {prompts.dtype}")
  if width < 1:
    raise ValueError("prompts must have width P >= 1")
  if prompt_lengths.shape != (batch,):
    raise ValueError(
        f"prompt_lengths must have shape ({batch},), got {prompt_lengths.shape}"
    )
  if not isinstance(max_length, int) or max_length < max(width, 2):
    raise ValueError(
        f"max_length must be an int >= the prompt width {width} "
        f"(and >= 2), got {max_length!r}"
    )
  if not isinstance(top_k, int) or top_k < 0:
    raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
  if eos_id is not None and not isinstance(eos_id, int):
    raise ValueError(f"eos_id must be an int or None, got {eos_id!r}")
  if not isinstance(pad_id, int):
    raise ValueError(f"pad_id must be an int, got {pad_id!r}")
  t = _concrete(temperature)
  if t is not None and (t.shape != () or not t >= 0):
    raise ValueError(f"temperature must be a scalar >= 0, got {temperature}")
  p = _concrete(top_p)
  if p is not None and (p.shape != () or not 0 < p <= 1):
    raise ValueError(f"top_p must be a scalar in (0, 1], got {top_p}")
  if not isinstance(prefill_length, int):
    raise ValueError(f"prefill_length must be an int, got {prefill_length!r}")
  if prefill_fn is None and prefill_length != 0:
    raise ValueError("prefill_length > 0 requires a prefill_fn")
  if prefill_fn is not None and not 1 <= prefill_length <= min(
      width, max_length - 1
  ):
    raise ValueError(
        f"prefill_length must be in [1, {min(width, max_length - 1)}] (the "
        "prompt width, below max_length) when prefill_fn is given, got "
        f"{prefill_length}"
    )
  lengths = _concrete(prompt_lengths)
  if lengths is not None:
    if np.any(lengths < 1) or np.any(lengths > width):
      raise ValueError(
          f"prompt_lengths must be in [1, {width}], got {lengths.tolist()}"
      )
    if prefill_fn is not None and prefill_length > lengths.min():
      raise ValueError(
          f"prefill_length {prefill_length} exceeds the shortest "
          f"prompt (min(prompt_lengths) = {lengths.min()})"
      )


def generate(
    step_fn: StepFn,
    cache: PyTree,
    prompts: Array,
    prompt_lengths: Array,
    *,
    max_length: int,
    rng: Array,
    temperature: float | Array = 1.0,
    top_k: int = 0,
    top_p: float | Array = 1.0,
    eos_id: Optional[int] = None,
    pad_id: int = 0,
    prefill_fn: Optional[PrefillFn] = None,
    prefill_length: int = 0,
) -> GenerateOutput:
  """Samples continuations of `prompts` one position at a time.

  At position t every row feeds one token: its prompt token while
  t < prompt_lengths[b] (forced, so rows of different length share one loop),
  otherwise the token it sampled at t. The token at t + 1 is drawn with
  `fold_in(rng, t + 1)`, so results depend only on the seed. A row stops
  after emitting `eos_id` (kept); the loop exits once every row has stopped.

  Args:
    step_fn: `(cache, tokens [batch] int32, index int32 scalar) ->
      (logits [batch, vocab], new_cache)`; feeds position `index` and returns
      the logits predicting `index + 1`. The cache keeps its structure and
      shapes. Static (hashed).
    cache: the initial cache pytree (e.g. a model's zeroed `cache` collection).
    prompts: [batch, P] int, right-padded with `pad_id`.
    prompt_lengths: [batch] int, 1 <= prompt_lengths[b] <= P.
    max_length: static int >= P (and >= 2); length of the returned
      sequences.
    rng: PRNG key.
    temperature: scalar >= 0; 0 is greedy. Traced.
    top_k: static int >= 0; 0 disables.
    top_p: scalar in (0, 1]; 1 disables. Traced.
    eos_id: static int or None (never stop early).
    pad_id: static int written after EOS.
    prefill_fn: optional `(cache, tokens [batch, prefill_length]) ->
      (logits [batch, vocab] for the last position, new_cache)`, a fast path
      that feeds positions 0 .. prefill_length - 1 at once. Static.
    prefill_length: static int, 1 <= prefill_length <= min(prompt_lengths)
      when `prefill_fn` is given, else 0.

  Returns:
    GenerateOutput(tokens [batch, max_length] int32, lengths [batch] int32).

  Raises:
    ValueError: naming the offending argument.
  """
  prompts = jnp.asarray(prompts)
  prompt_lengths = jnp.asarray(prompt_lengths)
  # numpy integers are fine too; plain ints keep the jit cache key canonical.
  max_length, top_k, pad_id, prefill_length = (
      int(v) if isinstance(v, np.integer) else v
      for v in (max_length, top_k, pad_id, prefill_length)
  )
  if isinstance(eos_id, np.integer):
    eos_id = int(eos_id)
  _validate(
      prompts,
      prompt_lengths,
      max_length,
      temperature,
      top_k,
      top_p,
      eos_id,
      pad_id,
      prefill_fn,
      prefill_length,
  )
  return _generate(
      step_fn,
      cache,
      prompts.astype(jnp.int32),
      prompt_lengths.astype(jnp.int32),
      rng,
      jnp.asarray(temperature, jnp.float32),
      jnp.asarray(top_p, jnp.float32),
      max_length=max_length,
      top_k=top_k,
      eos_id=eos_id,
      pad_id=pad_id,
      prefill_fn=prefill_fn,
      prefill_length=prefill_length,
  )


@functools.partial(
    jax.jit,
    static_argnames=(
        "step_fn",
        "max_length",
        "top_k",
        "eos_id",
        "pad_id",
        "prefill_fn",
        "prefill_length",
    ),
)
def _generate(
    step_fn,
    cache,
    prompts,
    prompt_lengths,
    rng,
    temperature,
    top_p,
    *,
    max_length,
    top_k,
    eos_id,
    pad_id,
    prefill_fn,
    prefill_length,
):
  """The jitted body of `generate` (arguments already validated)."""
  batch, width = prompts.shape
  positions = jnp.arange(max_length, dtype=jnp.int32)[None, :]
  in_prompt = positions < prompt_lengths[:, None]  # [batch, max_length]
  padded = jnp.pad(prompts, ((0, 0), (0, max_length - width)))
  tokens = jnp.where(in_prompt, padded, pad_id)

  def write_next(state: _LoopState, logits: Array) -> _LoopState:
    """Samples position index + 1 from `logits` and writes it."""
    pos = state.index + 1
    sampled = sample_logits(
        jax.random.fold_in(rng, pos), logits, temperature, top_k, top_p
    )
    forced = pos < prompt_lengths  # [batch]
    prompt_tok = jax.lax.dynamic_index_in_dim(state.tokens, pos, 1, False)
    new = jnp.where(forced, prompt_tok, jnp.where(state.done, pad_id, sampled))
    tokens = jax.lax.dynamic_update_index_in_dim(state.tokens, new, pos, 1)
    done, lengths = state.done, state.lengths
    if eos_id is not None:
      stops = ~forced & ~done & (sampled == eos_id)
      lengths = jnp.where(stops, pos + 1, lengths)
      done = done | stops
    return _LoopState(pos, tokens, done, lengths, state.cache)

  state = _LoopState(
      index=jnp.zeros((), jnp.int32),
      tokens=tokens,
      done=jnp.zeros((batch,), bool),
      lengths=jnp.full((batch,), max_length, jnp.int32),
      cache=cache,
  )
  if prefill_fn is not None:
    logits, cache = prefill_fn(cache, tokens[:, :prefill_length])
    state = state._replace(
        index=jnp.asarray(prefill_length - 1, jnp.int32), cache=cache
    )
    state = write_next(state, logits)

  def cond(state: _LoopState) -> Array:
    return (state.index < max_length - 1) & ~jnp.all(state.done)

  def body(state: _LoopState) -> _LoopState:
    fed = jax.lax.dynamic_index_in_dim(state.tokens, state.index, 1, False)
    logits, cache = step_fn(state.cache, fed, state.index)
    return write_next(state._replace(cache=cache), logits)

  state = jax.lax.while_loop(cond, body, state)
  return GenerateOutput(tokens=state.tokens, lengths=state.lengths)
