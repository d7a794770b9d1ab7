# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.nn.local_attention against brute-force references.

The references are written here in float64 numpy: dense attention under the
band mask of docs/paper.md §2 (causal: keys in [⌊t/q⌋·q − m, t]; bidirectional:
keys in [⌊t/q⌋·q − m, ⌊t/q⌋·q + q + m)), Shaw relative positions
(clip(k − q, ±R)) and RoPE. Only inputs and parameters come from the
library.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import routing_jax as rj
from routing_jax.nn import local_attention as la

from helpers import references as ref

B, H, D, F = 2, 2, 8, 12  # batch, heads, head_dim, features

# One compiled program per shape is cheaper than op-by-op dispatch here.
_core = jax.jit(
    la.local_attention,
    static_argnames=(
        "query_block",
        "memory_flange",
        "causal",
        "max_relative_position",
    ),
)


def _band(n, qb, m, causal):
  """allowed[t, s]: may query t see key s (before padding)."""
  t = np.arange(n)[:, None]
  s = np.arange(n)[None, :]
  start = (t // qb) * qb - m
  end = t + 1 if causal else (t // qb) * qb + qb + m
  return (s >= start) & (s < end)


def _dense(q, k, v, allowed, valid, rel_k=None, rel_v=None, max_rel=0):
  """Brute-force attention: q, k, v [b, n, h, d]; allowed [n, n].

  Padding keys are never seen; padding queries get 0. Shaw tables
  [2R+1, d] are indexed by clip(s − t, ±R) + R.
  """
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  b, n, h, d = q.shape
  out = np.zeros((b, n, h, d))
  for bi in range(b):
    for t in range(n):
      if not valid[bi, t]:
        continue
      keys = [s for s in range(n) if allowed[t, s] and valid[bi, s]]
      for hi in range(h):
        logits = np.array([q[bi, t, hi] @ k[bi, s, hi] for s in keys])
        vals = v[bi, keys, hi]
        if rel_k is not None:
          idx = np.clip(np.array(keys) - t, -max_rel, max_rel) + max_rel
          logits = logits + rel_k[idx] @ q[bi, t, hi]
          vals = vals + rel_v[idx]
        p = np.exp(logits - logits.max())
        out[bi, t, hi] = (p / p.sum()) @ vals
  return out


def _rope(x, base=10000.0):
  """Rotates pairs (2i, 2i+1) by angle t·base^(−2i/d): x [b, n, h, d]."""
  x = np.asarray(x, np.float64)
  n, d = x.shape[1], x.shape[-1]
  ang = np.arange(n)[:, None] * base ** (-np.arange(0, d, 2) / d)  # [n, d/2]
  cos, sin = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
  x1, x2 = x[..., 0::2], x[..., 1::2]
  out = np.empty_like(x)
  out[..., 0::2] = x1 * cos - x2 * sin
  out[..., 1::2] = x1 * sin + x2 * cos
  return out


def _normal(seed, shape):
  """Float32 normal draws (numpy: eager jax.random compiles per shape)."""
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _masks(kind, n, seed=0):
  return ref.masks(kind, B, n, seed)


def _qkv(n, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(B, n, H, D)).astype(np.float32) for _ in range(3)]


def _check(mask, n):
  return np.ones((B, n), bool) if mask is None else mask


CASES = [  # (n, query_block, memory_flange, causal, mask kind)
    (16, 4, 4, True, "none"),
    (16, 4, 4, False, "right"),
    (19, 4, 8, True, "holes"),  # n not a multiple of q
    (19, 4, 8, False, "holes"),
    (16, 4, 0, True, "right"),  # m = 0: independent blocks
    (16, 4, 0, False, "none"),
    (13, 16, 0, True, "holes"),  # one block longer than the sequence
    (13, 16, 0, False, "holes"),
    (24, 8, 16, True, "right"),
    (24, 8, 16, False, "holes"),
    (9, 1, 2, True, "holes"),  # q = 1: a sliding window of 3
    (9, 1, 2, False, "none"),
]


@pytest.mark.parametrize("n, qb, m, causal, mask_kind", CASES)
def test_core_matches_band_mask(n, qb, m, causal, mask_kind):
  q, k, v = _qkv(n)
  mask = _masks(mask_kind, n)
  got = _core(
      jnp.asarray(q),
      jnp.asarray(k),
      jnp.asarray(v),
      None if mask is None else jnp.asarray(mask),
      query_block=qb,
      memory_flange=m,
      causal=causal,
  )
  want = _dense(q, k, v, _band(n, qb, m, causal), _check(mask, n))
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_window_covering_sequence_is_dense_attention(causal):
  n = 12
  q, k, v = _qkv(n, seed=1)
  # Causal: q >= n, m = 0. Bidirectional: m >= n covers everything.
  qb, m = (16, 0) if causal else (4, 12)
  got = _core(
      *(jnp.asarray(a) for a in (q, k, v)),
      query_block=qb,
      memory_flange=m,
      causal=causal,
  )
  full = np.tril(np.ones((n, n), bool)) if causal else np.ones((n, n), bool)
  np.testing.assert_allclose(
      got, _dense(q, k, v, full, _check(None, n)), atol=2e-5, rtol=1e-5
  )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    "n, qb, m, max_rel",
    [
        (16, 4, 4, 3),  # R smaller than the span: clipping matters
        (19, 4, 8, 20),  # R larger than any offset
    ],
)
def test_core_relative_matches_shaw(n, qb, m, max_rel, causal):
  q, k, v = _qkv(n, seed=2)
  rng = np.random.default_rng(3)
  rel_k, rel_v = (
      rng.normal(size=(2 * max_rel + 1, D)).astype(np.float32) for _ in range(2)
  )
  mask = _masks("holes", n)
  got = _core(
      *(jnp.asarray(a) for a in (q, k, v)),
      jnp.asarray(mask),
      query_block=qb,
      memory_flange=m,
      causal=causal,
      rel=(jnp.asarray(rel_k), jnp.asarray(rel_v)),
      max_relative_position=max_rel,
  )
  want = _dense(q, k, v, _band(n, qb, m, causal), mask, rel_k, rel_v, max_rel)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def _module_reference(module, params, x, mask):
  """Projections, (RoPE / Shaw), band attention and out projection."""
  x = np.asarray(x, np.float64)
  b, n, _ = x.shape
  w = lambda name: np.asarray(params[name]["kernel"], np.float64)
  heads = lambda a: a.reshape(b, n, module.num_heads, module.head_dim)
  q = heads(x @ w("query")) * module.head_dim**-0.5
  k, v = heads(x @ w("key")), heads(x @ w("value"))
  rel = {}
  if module.position == "rope":
    q, k = _rope(q, module.rope_base), _rope(k, module.rope_base)
  if module.position == "relative":
    rel = dict(
        rel_k=np.asarray(params["rel_key"], np.float64),
        rel_v=np.asarray(params["rel_value"], np.float64),
        max_rel=module.max_relative_position,
    )
  o = _dense(
      q,
      k,
      v,
      _band(n, module.query_block, module.memory_flange, module.causal),
      _check(mask, n),
      **rel,
  )
  return o.reshape(b, n, -1) @ w("out")


MAX_REL = 4


@functools.cache
def _variables():
  """One set of parameters (incl. Shaw tables) shared by every module test.

  The parameters do not depend on length, masking or causality, and apply
  ignores the tables when position != "relative".
  """
  module = _module(position="relative")
  return nn.unbox(jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 4, F))))


def _module(**kw):
  settings = dict(
      num_heads=H,
      head_dim=D,
      query_block=4,
      memory_flange=4,
      max_relative_position=MAX_REL,
  )
  settings.update(kw)
  return rj.LocalAttention(**settings)


@pytest.mark.parametrize(
    "position, causal",
    [("none", False), ("relative", True), ("relative", False), ("rope", True)],
)
def test_module_matches_reference(position, causal):
  n = 14
  module = _module(causal=causal, position=position)
  x = _normal(1, (B, n, F))
  mask = _masks("right", n)
  got = jax.jit(module.apply)(_variables(), x, jnp.asarray(mask))
  want = _module_reference(module, _variables()["params"], x, mask)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


CAUSAL_CASES = [  # (n, query_block, memory_flange, position, mask_kind)
    (21, 4, 8, "relative", "none"),
    (20, 8, 8, "rope", "holes"),
    (11, 1, 3, "none", "right"),
]


@pytest.mark.parametrize("n, qb, m, position, mask_kind", CAUSAL_CASES)
def test_causal_future_perturbation_is_bit_exact(n, qb, m, position, mask_kind):
  """Replacing inputs (and padding) after i leaves outputs <= i bit-exact."""
  module = _module(query_block=qb, memory_flange=m, position=position)
  rng = np.random.default_rng(4)
  x = rng.normal(size=(B, n, F)).astype(np.float32)
  mask = _masks(mask_kind, n)
  apply = jax.jit(functools.partial(module.apply, _variables()))
  base = np.asarray(apply(x, mask))
  for i in sorted({0, n // 3, n // 2, n - 2}):
    x2 = x.copy()
    x2[:, i + 1 :] = rng.normal(size=x2[:, i + 1 :].shape)
    mask2 = None
    if mask is not None:  # the future's padding changes too
      mask2 = mask.copy()
      mask2[:, i + 1 :] = rng.random(mask2[:, i + 1 :].shape) < 0.5
    out = np.asarray(apply(x2, mask2))
    np.testing.assert_array_equal(out[:, : i + 1], base[:, : i + 1])
    assert np.abs(out[:, i + 1 :] - base[:, i + 1 :]).max() > 1e-3


@pytest.mark.parametrize(
    "qb, m, position", [(4, 4, "none"), (3, 3, "relative")]
)
def test_gradient_receptive_field(qb, m, position):
  """d out[i] / d x[j] is 0 outside [⌊i/q⌋·q − m, i], nonzero inside."""
  n = 13
  module = _module(query_block=qb, memory_flange=m, position=position)
  x = _normal(5, (1, n, F))
  # A random readout of each output row: [n]; exact zeros cannot cancel.
  readout = _normal(6, (F,))
  f = lambda x: module.apply(_variables(), x)[0] @ readout
  jac = np.asarray(jax.jit(jax.jacrev(f))(x))[:, 0]  # [i, j, features]
  size = np.abs(jac).sum(axis=-1)  # [i, j]
  band = _band(n, qb, m, causal=True)
  np.testing.assert_array_equal(size[~band], 0.0)
  assert (size[band] > 0).all()
  assert np.all(size[np.triu_indices(n, 1)] == 0.0)


def test_decode_matches_full_forward():
  n = 11
  module = _module(position="relative")
  x = _normal(6, (B, n, F))
  full = jax.jit(module.apply)(_variables(), x)
  cache = module.init(
      jax.random.key(0),
      x[:, :1],
      decode=True,
      positions=jnp.zeros((B,), jnp.int32),
  )["cache"]

  @jax.jit
  def step(cache, xt, t):
    return module.apply(
        {**_variables(), "cache": cache},
        xt,
        decode=True,
        positions=jnp.full((B,), t, jnp.int32),
        mutable=["cache"],
    )

  outs = []
  for t in range(n):
    y, new = step(cache, x[:, t : t + 1], t)
    cache = new["cache"]
    outs.append(y)
  np.testing.assert_allclose(
      jnp.concatenate(outs, 1), full, atol=1e-5, rtol=1e-5
  )


def test_jit_grad_vmap_match_eager():
  """jit(vmap) equals the eager forward; jax.grad equals its derivative.

  The gradient check is a central difference of the eager forward along a
  random unit direction in parameter space (an op-by-op eager jax.grad
  costs several seconds of compiles for a weaker guarantee).
  """
  n = 12
  module = _module(position="relative")
  x = _normal(7, (3, B, n, F))
  mask = jnp.asarray(_masks("holes", n))
  readout = _normal(8, (F,))
  params = _variables()["params"]
  apply = lambda p, x: module.apply({"params": p}, x, mask)
  batched = jax.jit(jax.vmap(apply, in_axes=(None, 0)))(params, x)
  for a in range(3):
    np.testing.assert_allclose(
        batched[a], apply(params, x[a]), atol=1e-6, rtol=1e-6
    )
  grad = jax.jit(
      jax.grad(lambda p: jnp.sum(jnp.sin(apply(p, x[0]) @ readout)))
  )(params)
  assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(grad))
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(9)
  direction = [rng.normal(size=l.shape) for l in leaves]
  norm = np.sqrt(sum(np.sum(d**2) for d in direction))
  direction = jax.tree.unflatten(
      tree, [(d / norm).astype(np.float32) for d in direction]
  )
  eps = 1e-2
  loss = lambda s: np.sum(
      np.sin(
          np.asarray(
              apply(
                  jax.tree.map(lambda a, d: a + s * d, params, direction), x[0]
              ),
              np.float64,
          )
          @ readout
      )
  )
  numeric = (loss(eps) - loss(-eps)) / (2 * eps)
  analytic = sum(
      float(np.vdot(g, d))
      for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction))
  )
  assert abs(analytic) > 1e-2
  np.testing.assert_allclose(analytic, numeric, rtol=2e-2)


@pytest.mark.parametrize(
    "position",
    [
        "rope",
        "relative",
    ],
)
def test_bfloat16_close_to_float32(position):
  n = 16
  x = _normal(8, (B, n, F))
  module = _module(position=position, dtype=jnp.bfloat16)
  got = jax.jit(module.apply)(_variables(), x)
  assert got.dtype == jnp.bfloat16
  # The float32 result is the float64 reference (checked to 2e-5 above).
  want = _module_reference(module, _variables()["params"], x, None)
  err = np.abs(np.asarray(got, np.float32) - want).max()
  # bf16 keeps 8 mantissa bits (rel. 4e-3 per rounding): a few roundings
  # through projections and softmax stay below 5% of the output scale.
  assert err < 5e-2 * np.abs(want).max(), err


@pytest.mark.parametrize(
    "kwargs, shape, mask_shape, pattern",
    [
        (
            dict(query_block=4, memory_flange=6),
            (2, 8, F),
            None,
            "memory_flange must be a non-negative multiple of query_block",
        ),
        (
            dict(query_block=0, memory_flange=0),
            (2, 8, F),
            None,
            "query_block must be >= 1",
        ),
        (dict(position="alibi"), (2, 8, F), None, "position must be one of"),
        (
            dict(),
            (2, 8),
            None,
            r"x must have rank 3 \[batch, length, features\]",
        ),
        (dict(), (2, 8, 2, F), None, "x must have rank 3"),
        (dict(), (2, 8, F), (2, 7), r"mask must have shape \[batch, length\]"),
        (dict(), (2, 8, F), (8,), r"mask must have shape \[batch, length\]"),
    ],
)
def test_bad_input_raises(kwargs, shape, mask_shape, pattern):
  settings = dict(num_heads=H, head_dim=D, query_block=4, memory_flange=4)
  settings.update(kwargs)
  module = rj.LocalAttention(**settings)
  x = jnp.ones(shape)
  mask = None if mask_shape is None else jnp.ones(mask_shape, bool)
  with pytest.raises(ValueError, match=pattern):
    module.init(jax.random.key(0), x, mask)
