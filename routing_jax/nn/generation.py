# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Sampling from a TransformerLM: decode cache, prefill and `generate`.

`decoding.generate` knows nothing about models; this module wires a
`TransformerLM` into it. The model's variables travel inside the sampler's
state (a traced argument of the jitted loop), never in a closure: a closure
over parameters that are sharded across processes cannot be compiled, and
a closure would also recompile the loop for every new set of parameters.

  state = generation.initial_state(model, variables, batch)
  out = decoding.generate(generation.step_fn(model), state, prompts, lengths,
                          max_length=..., rng=..., prefill_fn=
                          generation.prefill_fn(model), prefill_length=P)

or simply `generation.sample(model, variables, prompts, length, ...)`.
"""

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from routing_jax.common_types import Array
from routing_jax.nn import decoding
from routing_jax.nn.model import TransformerLM
from routing_jax.nn.model_config import ModelConfig


def check_decode_length(config: ModelConfig, total_length: int) -> None:
  """Raises ValueError if the model cannot decode `total_length` positions."""
  if config.is_image and total_length > config.max_len:
    raise ValueError(
        f"cannot decode {total_length} positions: model.position="
        "'learned2d' has learned positions for model.max_len="
        f"{config.max_len} only"
    )
  if (
      config.routing.mode == "topk"
      and total_length > config.max_len
      and config.routes
  ):
    raise ValueError(
        f"cannot decode {total_length} positions: topk routing decodes over "
        f"a cache of model.max_len={config.max_len}"
    )


def check_warmed_up(config: ModelConfig, variables: Any) -> None:
  """Raises ValueError if the routing heads are still in their dense warm-up.

  During `routing.warmup_steps` the routing heads attend densely, which
  the per-cluster decode cache cannot reproduce. Skipped when the counters
  are traced (inside jit).
  """
  if not config.routing.warmup_steps or config.dense_routing_heads:
    return
  counters = [
      leaf
      for path, leaf in jax.tree_util.tree_leaves_with_path(
          variables.get("kmeans", {})
      )
      if "num_updates" in jax.tree_util.keystr(path)
  ]
  try:
    done = (
        min(_host_min(c) for c in counters)
        if counters
        else (config.routing.warmup_steps)
    )
  except jax.errors.JAXTypeError:
    return
  if done < config.routing.warmup_steps:
    raise ValueError(
        f"cannot decode: routing is still warming up ({done} of "
        f"model.routing.warmup_steps={config.routing.warmup_steps} k-means "
        "updates); its dense warm-up attention has no per-cluster cache"
    )


def _host_min(counter: Any) -> int:
  """The smallest update count this process holds. The counters are sharded
  over heads and may span processes; every head takes every update, so any
  addressable shard tells."""
  if isinstance(counter, jax.Array) and not counter.is_fully_addressable:
    return min(
        int(np.min(np.asarray(s.data))) for s in counter.addressable_shards
    )
  return int(np.min(np.asarray(counter)))


def init_cache(model: TransformerLM, batch: int) -> Any:
  """An empty decoding cache ("cache" collection) for `batch` rows.

  Jitted so that the parameter initialisation `init` also performs is dead
  code: only the cache is computed.
  """
  return jax.jit(
      lambda: model.init(
          {"params": jax.random.key(0)},
          jnp.zeros((batch, 1), jnp.int32),
          decode=True,
          positions=jnp.zeros((batch,), jnp.int32),
      )["cache"]
  )()


def initial_state(model: TransformerLM, variables: Any, batch: int) -> Any:
  """The sampler state: (variables without cache, an empty cache)."""
  check_warmed_up(model.config, variables)
  variables = {k: v for k, v in variables.items() if k in ("params", "kmeans")}
  return variables, init_cache(model, batch)


@functools.lru_cache(maxsize=None)
def decode_step(model: TransformerLM):
  """(variables, cache, tokens [b], index) -> (logits [b, vocab], cache).

  One cached decoding step, for a loop written in Python (a server that
  streams tokens):

    step = jax.jit(generation.decode_step(model), donate_argnums=1)
    variables, cache = generation.initial_state(model, variables, batch)
    logits, cache = step(variables, cache, tokens, index)

  It returns the cache but not the variables: a jitted call that returns
  its parameters makes XLA copy every one of them into new buffers on each
  call (measured: 7 of the 10 ms of a 25M-parameter step on CPU).
  """

  def step(variables, cache, tokens, index):
    b = tokens.shape[0]
    (logits, _), new = model.apply(
        dict(variables, cache=cache),
        tokens[:, None],
        decode=True,
        positions=jnp.full((b,), index, jnp.int32),
        mutable=["cache"],
    )
    return logits[:, 0], new["cache"]

  return step


@functools.lru_cache(maxsize=None)
def step_fn(model: TransformerLM):
  """(state, tokens [b], index) -> (logits [b, vocab], state), for `generate`.

  The state (variables, cache) is the carry of generate's on-device loop,
  where the unchanged variables cost nothing; to step from Python, use
  `decode_step`. One function object per model, so `generate` compiles once
  per model.
  """
  one = decode_step(model)

  def step(state, tokens, index):
    variables, cache = state
    logits, cache = one(variables, cache, tokens, index)
    return logits, (variables, cache)

  return step


@functools.lru_cache(maxsize=None)
def prefill_fn(model: TransformerLM):
  """(state, tokens [b, P]) -> (logits of position P−1, state).

  Runs the prompt in one parallel pass (model.apply(..., prefill=True)) and
  leaves the cache that P decode steps would have left.
  """

  def prefill(state, tokens):
    variables, cache = state
    (logits, _), new = model.apply(
        dict(variables, cache=cache), tokens, prefill=True, mutable=["cache"]
    )
    return logits[:, -1], (variables, new["cache"])

  return prefill


def sample(
    model: TransformerLM,
    variables: Any,
    prompts: np.ndarray,
    max_length: int,
    *,
    rng: Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: Optional[int] = None,
    use_prefill: bool = True,
) -> decoding.GenerateOutput:
  """Samples continuations of equal-length prompts [batch, P].

  The prompt (start token included) goes through one prefill pass unless
  `use_prefill` is False (then it is fed one token at a time); the rest is
  sampled with the cache.

  Returns:
    decoding.GenerateOutput with tokens [batch, max_length].
  """
  prompts = jnp.asarray(prompts, jnp.int32)
  b, p = prompts.shape
  check_decode_length(model.config, max_length)
  state = initial_state(model, variables, b)
  prefill = (
      dict(prefill_fn=prefill_fn(model), prefill_length=p)
      if (use_prefill and p < max_length)
      else {}
  )
  return decoding.generate(
      step_fn(model),
      state,
      prompts,
      jnp.full((b,), p, jnp.int32),
      max_length=max_length,
      rng=rng,
      temperature=temperature,
      top_k=top_k,
      top_p=top_p,
      eos_id=eos_id,
      **prefill,
  )
