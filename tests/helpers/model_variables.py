# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Model variables for tests, without compiling `init`.

`init` is the most expensive program of the tests' tiny models; these
helpers build the real variable structure from `jax.eval_shape` and fill it
with numpy draws, and train the k-means state a few steps inside a jitted
caller.
"""

import math
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from routing_jax.nn import model as M

# Small text model: 3 layers, local-only layer 0, layers 1 and 2 with 2 local
# and 2 causal routing heads. Tiny blocks, windows and relative range, so
# that 32 tokens span several local blocks and routing windows and decoding
# wraps every ring; k-means decay 0.9 makes a few training steps move the
# centroids visibly; dropout 0 keeps train=True deterministic.
SMALL_TEXT = dict(
    vocab_size=32,
    num_layers=3,
    d_model=32,
    num_heads=4,
    num_routing_heads=2,
    routing_layers="1,2",
    d_ff=64,
    query_block=8,
    memory_flange=8,
    max_len=32,
    max_relative_position=10,
    residual_dropout=0.0,
    routing=dict(num_clusters=3, window=6, kmeans=dict(decay=0.9)),
)


def merged(base: dict, **kw) -> dict:
  """`base` updated by `kw`, dict values merged key by key (so
  `routing=dict(window=8)` keeps base's other routing fields)."""
  out = dict(base)
  for key, value in kw.items():
    if isinstance(value, dict) and isinstance(out.get(key), dict):
      value = merged(out[key], **value)
    out[key] = value
  return out


def random_variables(model, seed=0):
  """Variables of the model's structure, filled with numpy draws.

  Kernels ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1²), biases and other
  1-D leaves ~ N(0, 0.1²); k-means states are normalised random centroids
  with one pseudo-observation each (ema_count 1, ema_sums = centroids, one
  update taken).
  """
  abstract = jax.eval_shape(
      lambda: nn.unbox(M.init_variables(model, jax.random.key(0), 1, 16))
  )
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    names = [getattr(p, "key", None) for p in path]
    if names[0] == "kmeans":
      if names[-1] in ("ema_count", "num_updates"):
        return jnp.ones(leaf.shape, leaf.dtype)
      # centroids and ema_sums are equal: the same seed per module.
      mod = np.random.default_rng(zlib.crc32("/".join(names[:-1]).encode()))
      c = mod.standard_normal(leaf.shape)
      c = (c - c.mean(-1, keepdims=True)) / c.std(-1, keepdims=True)
      return jnp.asarray(c, leaf.dtype)
    x = rng.standard_normal(leaf.shape)
    if names[-1] == "scale":
      x = 1.0 + 0.1 * x
    elif names[-1] == "bias":
      x = 0.1 * x
    else:
      fan_in = leaf.shape[-2] if names[-1] == "kernel" else leaf.shape[-1]
      x = x / math.sqrt(fan_in)
    return jnp.asarray(x, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def train_kmeans(model, variables, length=32, steps=3, batch=4, seed=7):
  """`steps` k-means EMA updates from random tokens (traceable)."""
  if "kmeans" not in variables:
    return variables

  def body(i, km):
    key = jax.random.fold_in(jax.random.key(seed), i)
    x = jax.random.randint(key, (batch, length), 0, model.config.vocab_size)
    _, new = model.apply(
        dict(variables, kmeans=km),
        x,
        train=True,
        mutable=["kmeans"],
        rngs={"dropout": key},
    )
    return new["kmeans"]

  km = jax.lax.fori_loop(0, steps, body, variables["kmeans"])
  return dict(variables, kmeans=km)
