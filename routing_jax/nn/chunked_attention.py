# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Dense causal attention in O(n·d) memory: key chunks, online softmax.

The dense warm-up of causal routing (`RoutingAttention.warmup_steps`) lets
every routing head see every earlier token. Written as ordinary softmax
attention it stores [n, n] logits and probabilities per head, and Shaw
relative positions as an [n, n, head_dim] gather; at 8k tokens that is
gigabytes per layer. Here queries are cut into blocks of `block_size`; each
block walks over the key blocks at or before it with a running maximum and
normaliser (flash attention), and the backward pass recomputes each block's
probabilities from the saved log-normaliser instead of storing them. Memory
is O(n·d) plus one [block, block] tile.

Semantics equal `routing_core.causal_routing_attention` with one cluster:
query t sees the valid keys among the last `window` valid tokens up to and
including t (with `exclude_self`, the `window` before t); distances (window
and Shaw tables) count valid tokens, so padding anywhere is skipped exactly
as the routing core skips it; a query with no visible key, and every
padding query, gets 0. Shaw terms are read from [block, 2R+1] products of
the queries with the small tables through a one-hot of the clipped distance,
never as [n, n, d] gathers.
"""

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from routing_jax.common_types import Array

DEFAULT_BLOCK_SIZE = 128


class _Static(NamedTuple):
  """Hashable settings (custom_vjp non-differentiable arguments)."""

  block: int
  window: int  # 0: unbounded
  exclude_self: bool
  max_relative_position: int  # 0: no Shaw tables
  logit_scale: float
  dropout_rate: float
  bounded_by_position: bool  # no padding mask: windows bound key blocks
  dtype: Any


def dense_causal_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Optional[Array],
    *,
    window: Optional[int] = None,
    exclude_self: bool = False,
    rel: Optional[tuple[Array, Array]] = None,
    max_relative_position: int = 0,
    logit_scale: float = 1.0,
    dropout_rate: float = 0.0,
    dropout_rng: Optional[Array] = None,
    dtype: Any = jnp.float32,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Array:
  """Causal softmax attention over the last `window` tokens, chunked.

  Args:
    q, k, v: [batch, length, heads, head_dim].
    mask: optional [batch, length] bool, False at padding.
    window: keys a query looks back over (None: all earlier tokens).
    exclude_self: a query never sees its own key.
    rel: optional Shaw tables (key, value) [2R+1, head_dim] indexed by the
      key − query distance clipped to ±R = max_relative_position.
    logit_scale: multiplies the logits (Shaw term included).
    dropout_rate, dropout_rng: attention dropout on the weights; the bits
      depend only on positions (a query's noise ignores the future).
    dtype: matmul dtype; logits, softmax and accumulators are float32.
    block_size: queries and keys per tile.

  Returns:
    [batch, length, heads, head_dim] in `dtype`; zero at padding.
  """
  b, n, h, d = q.shape
  bs = min(block_size, n)
  npad = -(-n // bs) * bs
  valid = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
  valid = jnp.pad(valid, ((0, 0), (0, npad - n)))
  rank = jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1
  heads_first = lambda a: jnp.pad(
      jnp.swapaxes(a, 1, 2).astype(dtype),
      ((0, 0), (0, 0), (0, npad - n), (0, 0)),
  )
  use_dropout = dropout_rate > 0.0 and dropout_rng is not None
  static = _Static(
      block=bs,
      window=int(window or 0) if (window or 0) < n else 0,
      exclude_self=bool(exclude_self),
      max_relative_position=int(max_relative_position) if rel else 0,
      logit_scale=float(logit_scale),
      dropout_rate=float(dropout_rate) if use_dropout else 0.0,
      bounded_by_position=mask is None,
      dtype=jnp.dtype(dtype),
  )
  tables = tuple(jnp.asarray(t, jnp.float32) for t in rel) if rel else None
  seed = None
  if use_dropout:
    # Raw key data: custom_vjp residuals must be plain arrays.
    typed = jnp.issubdtype(dropout_rng.dtype, jax.dtypes.prng_key)
    seed = jax.random.key_data(dropout_rng) if typed else dropout_rng
  o = _attention(
      static,
      heads_first(q),
      heads_first(k),
      heads_first(v),
      tables,
      valid,
      rank,
      seed,
  )
  return jnp.swapaxes(o[:, :, :n], 1, 2).astype(dtype)


# ----------------------------------------------------------------- tiles


def _tile(static: _Static, i, j, valid, rank):
  """Mask and one-hot distances of tile (query block i, key block j).

  Returns allowed [b, 1, bs, bs] and the distances `back` [b, bs, bs] (valid
  tokens from key to query; None without Shaw tables).
  """
  bs = static.block
  qpos = i * bs + jnp.arange(bs)
  kpos = j * bs + jnp.arange(bs)
  sl = lambda a, start: jax.lax.dynamic_slice_in_dim(a, start * bs, bs, 1)
  vq, vk = sl(valid, i), sl(valid, j)
  rq, rk = sl(rank, i), sl(rank, j)
  back = rq[:, :, None] - rk[:, None, :]  # valid tokens back, [b, bs, bs]
  allowed = vq[:, :, None] & vk[:, None, :] & (kpos[None, :] <= qpos[:, None])
  if static.exclude_self:
    allowed &= back >= 1
    if static.window:
      allowed &= back <= static.window
  elif static.window:
    allowed &= back < static.window
  return allowed[:, None], back if static.max_relative_position else None


def _row_index(static: _Static, back):
  """Table row of each pair's clipped key − query distance."""
  r = static.max_relative_position
  return jnp.clip(-back, -r, r) + r


# A tile whose pairs are all more than R apart reads only the clipped row 0
# of a Shaw table, so it needs no per-pair gather. With blocks wider than R
# that is every tile but the diagonal one and its neighbour.


def _far(static: _Static, back):
  return jnp.min(back) > static.max_relative_position


def _rel_logits(static: _Static, x, table, back):
  """x [b, h, bs, d], table [2R+1, d] -> [b, h, bs, bs]: x_i · table[idx_ij]."""
  x = x.astype(jnp.float32)
  clipped = lambda: jnp.broadcast_to(
      jnp.einsum("bhid,d->bhi", x, table[0])[..., None],
      x.shape[:3] + back.shape[-1:],
  )
  exact = lambda: jnp.einsum(
      "bhid,bijd->bhij", x, table[_row_index(static, back)]
  )
  return jax.lax.cond(_far(static, back), clipped, exact)


def _rel_values(static: _Static, w, table, back):
  """w [b, h, bs, bs], table [2R+1, d] -> [b, h, bs, d]: Σ_j w_ij table[idx_ij]."""
  clipped = lambda: jnp.sum(w, -1)[..., None] * table[0]
  exact = lambda: jnp.einsum(
      "bhij,bijd->bhid", w, table[_row_index(static, back)]
  )
  return jax.lax.cond(_far(static, back), clipped, exact)


def _rel_table_grad(static: _Static, w, x, back):
  """w [b, h, bs, bs], x [b, h, bs, d] -> [2R+1, d]: Σ_ij w_ij x_i into
  row idx_ij."""
  x = x.astype(jnp.float32)
  rows = 2 * static.max_relative_position + 1

  def clipped():
    first = jnp.einsum("bhij,bhid->d", w, x)
    return jnp.zeros((rows, x.shape[-1]), jnp.float32).at[0].set(first)

  def exact():
    onehot = _row_index(static, back)[..., None] == jnp.arange(rows)
    bins = jnp.einsum("bhij,bijr->bhir", w, onehot.astype(jnp.float32))
    return jnp.einsum("bhir,bhid->rd", bins, x)

  return jax.lax.cond(_far(static, back), clipped, exact)


def _keep(static: _Static, seed, i, j, shape):
  """Dropout keep-bits of tile (i, j): a function of positions only, so the
  backward pass redraws exactly the forward's bits."""
  if not static.dropout_rate:
    return None
  key = jax.random.fold_in(jax.random.fold_in(seed, i), j)
  return jax.random.bernoulli(key, 1.0 - static.dropout_rate, shape)


def _logits(static: _Static, qb, kb, tables, allowed, back):
  """Scaled logits [b, h, bs, bs] float32, -inf where not allowed."""
  s = jnp.einsum("bhid,bhjd->bhij", qb, kb, preferred_element_type=jnp.float32)
  if back is not None:
    s += _rel_logits(static, qb, tables[0], back)
  return jnp.where(allowed, s * static.logit_scale, -jnp.inf)


def _key_range(static: _Static, i, nb):
  """Key blocks [lo, i] that queries of block i may see."""
  if static.bounded_by_position and static.window:
    reach = static.window + int(static.exclude_self)
    return jnp.maximum(0, (i * static.block - reach) // static.block), i + 1
  return 0, i + 1


def _query_range(static: _Static, j, nb):
  """Query blocks [j, hi) that may see key block j."""
  if static.bounded_by_position and static.window:
    reach = static.window + int(static.exclude_self)
    last = ((j + 1) * static.block - 1 + reach) // static.block
    return j, jnp.minimum(nb, last + 1)
  return j, nb


def _blocks(a, bs):
  """[b, h, N, ...] -> [N/bs, b, h, bs, ...]."""
  b, h, n = a.shape[:3]
  return jnp.moveaxis(a.reshape((b, h, n // bs, bs) + a.shape[3:]), 2, 0)


def _unblocks(a):
  """Inverse of `_blocks`."""
  nb, b, h, bs = a.shape[:4]
  return jnp.moveaxis(a, 0, 2).reshape((b, h, nb * bs) + a.shape[4:])


def _slice(a, j, bs):
  return jax.lax.dynamic_slice_in_dim(a, j * bs, bs, 2)


# --------------------------------------------------------------- forward


def _forward(static, q, k, v, tables, valid, rank, seed):
  """(out [b, h, N, d] f32, lse [b, h, N] f32)."""
  bs, dt = static.block, static.dtype
  b, h, npad, d = q.shape
  nb = npad // bs

  def query_block(args):
    qb, i = args

    def step(j, carry):
      m, l, acc = carry
      allowed, back = _tile(static, i, j, valid, rank)
      s = _logits(static, qb, _slice(k, j, bs), tables, allowed, back)
      m_new = jnp.maximum(m, jnp.max(s, -1))
      m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
      p = jnp.exp(s - m_safe[..., None])  # 0 where not allowed
      alpha = jnp.exp(m - m_safe)
      l = l * alpha + jnp.sum(p, -1)
      keep = _keep(static, seed, i, j, p.shape)
      if keep is not None:
        p = jnp.where(keep, p / (1.0 - static.dropout_rate), 0.0)
      pv = jnp.einsum(
          "bhij,bhjd->bhid",
          p.astype(dt),
          _slice(v, j, bs),
          preferred_element_type=jnp.float32,
      )
      if back is not None:
        pv += _rel_values(static, p, tables[1], back)
      return m_new, l, acc * alpha[..., None] + pv

    lo, hi = _key_range(static, i, nb)
    init = (
        jnp.full((b, h, bs), -jnp.inf, jnp.float32),
        jnp.zeros((b, h, bs), jnp.float32),
        jnp.zeros((b, h, bs, d), jnp.float32),
    )
    m, l, acc = jax.lax.fori_loop(lo, hi, step, init)
    seen = l > 0
    out = jnp.where(
        seen[..., None], acc / jnp.where(seen, l, 1.0)[..., None], 0
    )
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), jnp.inf)
    return out, lse

  out, lse = jax.lax.map(query_block, (_blocks(q, bs), jnp.arange(nb)))
  return _unblocks(out), _unblocks(lse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(static, q, k, v, tables, valid, rank, seed):
  return _forward(static, q, k, v, tables, valid, rank, seed)[0].astype(
      static.dtype
  )


def _attention_fwd(static, q, k, v, tables, valid, rank, seed):
  out, lse = _forward(static, q, k, v, tables, valid, rank, seed)
  out = out.astype(static.dtype)
  return out, (q, k, v, tables, valid, rank, seed, out, lse)


# -------------------------------------------------------------- backward


def _tile_grads(static, qb, kb, vb, dob, lse_b, delta_b, tables, tile):
  """Per-tile pieces of the gradient.

  Returns (p_dropped [b,h,bs,bs] f32, ds [b,h,bs,bs] f32: the gradient of
  the unscaled logits, back).
  """
  allowed, back, keep = tile
  s = _logits(static, qb, kb, tables, allowed, back)
  p = jnp.where(allowed, jnp.exp(s - lse_b[..., None]), 0.0)
  dp = jnp.einsum(
      "bhid,bhjd->bhij", dob, vb, preferred_element_type=jnp.float32
  )
  if back is not None:
    dp += _rel_logits(static, dob, tables[1], back)
  pd = p
  if keep is not None:
    scale = 1.0 / (1.0 - static.dropout_rate)
    pd = jnp.where(keep, p * scale, 0.0)
    dp = jnp.where(keep, dp * scale, 0.0)
  ds = p * (dp - delta_b[..., None]) * static.logit_scale
  return pd, ds, back


def _attention_bwd(static, res, g):
  q, k, v, tables, valid, rank, seed, out, lse = res
  bs, dt = static.block, static.dtype
  b, h, npad, d = q.shape
  nb = npad // bs
  do = g.astype(dt)
  delta = jnp.sum(g.astype(jnp.float32) * out.astype(jnp.float32), -1)
  rows = tables[0].shape[0] if tables is not None else 0

  def grads(i, j, qb, kb, vb, dob):
    """_tile_grads of tile (i, j), the query block's saved rows sliced."""
    allowed, back = _tile(static, i, j, valid, rank)
    keep = _keep(static, seed, i, j, (b, h, bs, bs))
    rows_of = lambda a: jax.lax.dynamic_slice_in_dim(a, i * bs, bs, 2)
    return _tile_grads(
        static,
        qb,
        kb,
        vb,
        dob,
        rows_of(lse),
        rows_of(delta),
        tables,
        (allowed, back, keep),
    )

  mm = lambda spec, a, c: jnp.einsum(
      spec, a.astype(dt), c, preferred_element_type=jnp.float32
  )

  def dq_block(args):
    qb, dob, i = args

    def step(j, carry):
      dq, drk, drv = carry
      kb, vb = _slice(k, j, bs), _slice(v, j, bs)
      pd, ds, back = grads(i, j, qb, kb, vb, dob)
      dq += mm("bhij,bhjd->bhid", ds, kb)
      if back is not None:
        dq += _rel_values(static, ds, tables[0], back)
        drk += _rel_table_grad(static, ds, qb, back)
        drv += _rel_table_grad(static, pd, dob, back)
      return dq, drk, drv

    lo, hi = _key_range(static, i, nb)
    init = (
        jnp.zeros((b, h, bs, d), jnp.float32),
        jnp.zeros((rows, d), jnp.float32),
        jnp.zeros((rows, d), jnp.float32),
    )
    return jax.lax.fori_loop(lo, hi, step, init)

  dq, drk, drv = jax.lax.map(
      dq_block, (_blocks(q, bs), _blocks(do, bs), jnp.arange(nb))
  )

  def dkv_block(args):
    kb, vb, j = args

    def step(i, carry):
      dk, dv = carry
      qb, dob = _slice(q, i, bs), _slice(do, i, bs)
      pd, ds, _ = grads(i, j, qb, kb, vb, dob)
      dv += mm("bhij,bhid->bhjd", pd, dob)
      dk += mm("bhij,bhid->bhjd", ds, qb)
      return dk, dv

    lo, hi = _query_range(static, j, nb)
    zeros = jnp.zeros((b, h, bs, d), jnp.float32)
    return jax.lax.fori_loop(lo, hi, step, (zeros, zeros))

  dk, dv = jax.lax.map(
      dkv_block, (_blocks(k, bs), _blocks(v, bs), jnp.arange(nb))
  )
  dtables = None
  if tables is not None:
    dtables = (jnp.sum(drk, 0), jnp.sum(drv, 0))
  cast = lambda a, like: _unblocks(a).astype(like.dtype)
  return (
      cast(dq, q),
      cast(dk, k),
      cast(dv, v),
      dtables,
      None,
      None,
      None,
  )


_attention.defvjp(_attention_fwd, _attention_bwd)
