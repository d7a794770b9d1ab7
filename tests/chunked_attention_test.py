# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for chunked_attention: the routing warm-up's dense attention.

Outputs against the brute-force causal-routing reference with one cluster
(tests/helpers/references.py), gradients against jax's autodiff of a plain
[n, n] softmax written here, causality by perturbing the future, dropout
bits that depend on positions only, and memory that grows linearly with
the length.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import references as ref
from routing_jax.nn import chunked_attention as ca

B, N, H, D, R = 2, 29, 2, 8, 4


def _inputs(seed=0, n=N):
  q, k, v = (ref.normal(seed + i, (B, n, H, D)) for i in range(3))
  rel = (
      ref.normal(seed + 3, (2 * R + 1, D)),
      ref.normal(seed + 4, (2 * R + 1, D)),
  )
  return q, k, v, rel


def _plain(q, k, v, rel, valid, window, exclude_self):
  """Dense causal attention with [n, n] masks; distances count valid tokens."""
  n = q.shape[1]
  rank = jnp.cumsum(valid, 1) - 1
  back = rank[:, :, None] - rank[:, None, :]  # [b, t, s]
  pos = jnp.arange(n)
  ok = valid[:, :, None] & valid[:, None, :] & (pos[None, :] <= pos[:, None])
  ok &= (back >= 1) if exclude_self else (back >= 0)
  if window:
    ok &= (back <= window) if exclude_self else (back < window)
  logits = jnp.einsum("bthd,bshd->bhts", q, k)
  vals = jnp.broadcast_to(v[:, None], (B, n) + v.shape[1:])  # [b, t, s, h, d]
  if rel is not None:
    idx = jnp.clip(-back, -R, R) + R  # [b, t, s]
    logits += jnp.einsum("bthd,btsd->bhts", q, rel[0][idx])
    vals = vals + rel[1][idx][:, :, :, None]
  ok = ok[:, None]
  logits = jnp.where(ok, logits, -jnp.inf)
  safe = jnp.where(jnp.any(ok, -1, keepdims=True), logits, 0.0)
  p = jnp.where(ok, jax.nn.softmax(safe, -1), 0.0)
  return jnp.einsum("bhts,btshd->bthd", p, vals)


def _chunked(mask, window, exclude_self, block):
  """(q, k, v, rel) -> the chunked attention with these settings."""
  return lambda q, k, v, rel: ca.dense_causal_attention(
      q,
      k,
      v,
      mask,
      window=window,
      exclude_self=exclude_self,
      rel=rel,
      max_relative_position=R,
      block_size=block,
  )


CASES = [  # (window, exclude_self, relative, mask kind, block)
    (None, False, False, "none", 8),
    (None, True, True, "holes", 8),
    (7, False, True, "none", 8),
    (7, True, False, "holes", 4),
    (16, False, True, "right", 32),
    (3, True, True, "none", 5),
]


@pytest.mark.parametrize("window, exclude_self, relative, kind, block", CASES)
def test_equals_one_cluster_causal_routing_reference(
    window, exclude_self, relative, kind, block
):
  q, k, v, rel = _inputs()
  mask = ref.masks(kind, B, N)
  valid = ref.valid_of(mask, B, N)
  rel = rel if relative else None
  got = _chunked(mask, window, exclude_self, block)(q, k, v, rel)
  want = ref.causal_routing(
      q,
      k,
      v,
      np.zeros((B, H, N), int),
      valid,
      window or N,
      exclude_self=exclude_self,
      rel=rel,
      max_relative_position=R,
  )
  np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("window, exclude_self, relative, kind, block", CASES)
def test_gradients_equal_autodiff_of_plain_attention(
    window, exclude_self, relative, kind, block
):
  q, k, v, rel = _inputs(seed=10)
  mask = ref.masks(kind, B, N)
  valid = jnp.asarray(ref.valid_of(mask, B, N))
  rel = rel if relative else None
  cot = ref.normal(20, (B, N, H, D))
  loss = lambda fn: lambda *a: jnp.sum(fn(*a) * cot)
  chunked = _chunked(mask, window, exclude_self, block)
  plain = lambda q, k, v, rel: _plain(q, k, v, rel, valid, window, exclude_self)
  args = (q, k, v, rel)
  got = jax.grad(loss(chunked), argnums=(0, 1, 2, 3))(*args)
  want = jax.grad(loss(plain), argnums=(0, 1, 2, 3))(*args)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)


def test_the_future_changes_nothing_before_it():
  """Outputs and input gradients of positions < t ignore tokens >= t."""
  q, k, v, rel = _inputs(seed=30)
  t = 17
  bump = lambda a: jnp.asarray(a).at[:, t:].add(100.0)
  run = functools.partial(
      ca.dense_causal_attention,
      mask=None,
      window=9,
      rel=rel,
      max_relative_position=R,
      block_size=8,
      dropout_rate=0.3,
      dropout_rng=jax.random.PRNGKey(0),
  )
  a = run(q, k, v)
  b = run(bump(q), bump(k), bump(v))
  np.testing.assert_allclose(a[:, :t], b[:, :t], atol=1e-6)
  assert np.abs(a[:, t:] - b[:, t:]).max() > 1e-2


def test_dropout_is_unbiased_and_replayed_by_the_backward():
  q, k, v, _ = _inputs(seed=40)
  run = lambda key, q: ca.dense_causal_attention(
      q, k, v, None, dropout_rate=0.5, dropout_rng=key, block_size=8
  )
  exact = ca.dense_causal_attention(q, k, v, None, block_size=8)
  keys = jax.random.split(jax.random.PRNGKey(1), 256)
  mean = jnp.mean(jax.vmap(run, (0, None))(keys, q), 0)
  # Without the 1/(1-rate) rescaling the mean would be half the output.
  assert np.abs(mean - exact).mean() < 0.1 * np.abs(exact).mean()
  # The backward redraws the forward's bits: the gradient of a dropped-out
  # forward matches finite differences of that same forward.
  key = jax.random.PRNGKey(2)
  f = lambda q: jnp.sum(jnp.sin(run(key, q)))
  g = jax.grad(f)(q)
  direction = ref.normal(41, q.shape)
  eps = 1e-2
  numeric = (f(q + eps * direction) - f(q - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(
      jnp.sum(g * direction), numeric, rtol=2e-2, atol=1e-2
  )


def test_memory_grows_linearly_with_length():
  """jit(grad) scratch at 4x the length is far below the 16x of [n, n]."""

  def scratch(n):
    q = jax.ShapeDtypeStruct((1, n, 2, 16), jnp.float32)
    rel = tuple(
        jax.ShapeDtypeStruct((2 * R + 1, 16), jnp.float32) for _ in range(2)
    )
    f = lambda q, k, v, rel: jnp.sum(
        ca.dense_causal_attention(
            q, k, v, None, rel=rel, max_relative_position=R, block_size=64
        )
    )
    compiled = (
        jax.jit(jax.grad(f, argnums=(0, 1, 2, 3))).lower(q, q, q, rel).compile()
    )
    return compiled.memory_analysis().temp_size_in_bytes

  small, large = scratch(1024), scratch(4096)
  assert large < 6 * small, (small, large)
  # [n, n] float32 probabilities per head alone would be 128 MiB at 4096.
  assert large < 16 << 20, large


def test_bfloat16_is_close_to_float32():
  q, k, v, rel = _inputs(seed=50)
  f32 = ca.dense_causal_attention(
      q, k, v, None, rel=rel, max_relative_position=R, block_size=8
  )
  bf16 = ca.dense_causal_attention(
      q,
      k,
      v,
      None,
      rel=rel,
      max_relative_position=R,
      block_size=8,
      dtype=jnp.bfloat16,
  )
  assert bf16.dtype == jnp.bfloat16
  np.testing.assert_allclose(bf16.astype(jnp.float32), f32, atol=0.1)
