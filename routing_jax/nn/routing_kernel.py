# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Fused exactly-causal routing attention: Pallas (Triton) kernels.

The same attention as `routing_core.causal_routing_attention` (shared or
separate query routing, exclude_self, padding masks, logit_scale), without
the XLA path's permuted copies of q/k/v and its per-block logits.

Algorithm. `routing_core.sort_events` sorts the membership events by cluster
(both paths share it). Sorted slot p attends to sorted slot j iff both hold
the same cluster, j holds a key membership and 0 <= p - j < w (1 <= p - j <=
w with exclude_self): the XLA path's band, written in global slots. The
forward kernel takes a tile of `block_q` sorted slots per program, gathers
their queries from the token-order q by index (event // events-per-token),
and walks the key tiles of `block_k` slots that can hold keys of the tile
([start - w, end]), gathering k and v rows the same way, with an online
(flash) softmax in float32 and base 2. It scatters each output row to its
event's row of an event-order output [b, events, h, d] (a permutation, so
no two programs write one row) and stores the log-sum-exp per slot. A token
owns one event's output: the other event of a separately routed token is
given query cluster -2, so it matches no key and outputs 0, and summing the
two events of a token gives its output. Rows with no visible key give 0.

Backward (flash-attention-2): probabilities are recomputed from the saved
log-sum-exp. One kernel per query tile accumulates dq over its key tiles;
one kernel per key tile accumulates dk and dv over the query tiles that can
see it ([start, end + w]); D = rowsum(dO·O) is taken in token order by XLA
and gathered per slot. Gradients are scattered to event order and summed per
token, as the outputs.

Memory traffic per layer and head (N sorted slots, d head_dim): q, k, v are
read in place by index (a key tile once per query tile that sees it,
(w + block_q)/block_k + 1 tiles per query tile, mostly from L2); outputs and
gradients are written once in event order and summed per token by XLA;
nothing of size N·w reaches memory. The XLA path writes permuted copies of
q, k, v (3·N·d), keys and values repeated for the previous blocks (3·N·d
each) and float32 logits and probabilities (N·1.5w, again in the backward
pass), and un-permutes the output. docs/kernels.md has the details.

Constraints: head_dim and the block sizes powers of 2 (Triton tensors);
on a GPU, blocks and head_dim >= 16 (tensor-core dots). Interpret mode runs
the same kernels on CPU (the default there). No relative-position tables and
no attention dropout: `RoutingAttention` refuses those with
implementation="pallas" at construction.

Verified on CPU (tests/routing_kernel_test.py): equality with the XLA path
(outputs and q/k/v gradients) in interpret mode, and lowering of the three
kernels to Triton IR for CUDA. Not verified here (no GPU): compilation to
PTX, results on a GPU, speed and memory; benchmarks/kernel_gpu.py measures
those on a GPU.
"""

import dataclasses
import functools
import math
from typing import Any, Optional

import jax
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
import jax.numpy as jnp

from routing_jax.common_types import Array
from routing_jax.nn import routing_core

_LOG2E = math.log2(math.e)
_NO_QUERY = -2  # query cluster of events whose output nobody reads
_NO_KEY = -1  # key cluster of slots that are not key memberships


@dataclasses.dataclass(frozen=True)
class KernelConfig:
  """Static parameters of the kernels (hashable: a custom_vjp nondiff arg).

  Attributes:
    window: w.
    exclude_self: band 1 <= p - j <= w instead of 0 <= p - j < w.
    logit_scale: multiplies q·k.
    per_token: events per token (2 with separate query routing).
    block_q, block_k: sorted slots per query tile and per key tile.
    interpret: run the kernels in the Pallas interpreter (CPU).
    num_warps, num_stages: Triton launch parameters.
  """

  window: int
  exclude_self: bool
  logit_scale: float
  per_token: int
  block_q: int = 64
  block_k: int = 64
  interpret: bool = False
  num_warps: int = 4
  num_stages: int = 2


# ---------------------------------------------------------------- helpers


def _dot_nt(a, b):
  """a [m, d] · b [n, d]^T -> [m, n] float32."""
  return lax.dot_general(
      a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
  )


def _dot_tn(a, b):
  """a [m, n]^T · b [m, d] -> [n, d] float32."""
  return lax.dot_general(
      a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
  )


def _dot(a, b):
  return lax.dot_general(
      a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32
  )


def _tokens(ev, cfg: KernelConfig, n: int):
  """Token of each event; pad events (>= events) read a real row."""
  tok = ev if cfg.per_token == 1 else lax.div(ev, cfg.per_token)
  return jnp.minimum(tok, n - 1)


def _allowed(qc, q_start, kc, k_start, cfg: KernelConfig):
  """Same cluster, key membership (kc >= 0) and the band, [bq, bk]."""
  qpos = q_start + jnp.arange(qc.shape[0], dtype=jnp.int32)
  kpos = k_start + jnp.arange(kc.shape[0], dtype=jnp.int32)
  back = qpos[:, None] - kpos[None, :]
  if cfg.exclude_self:
    band = (back >= 1) & (back <= cfg.window)
  else:
    band = (back >= 0) & (back < cfg.window)
  return (qc[:, None] == kc[None, :]) & band


def _key_tiles(q_start, cfg: KernelConfig):
  """Key tiles [lo, hi) holding the keys of query slots from q_start."""
  lo = lax.div(jnp.maximum(q_start - cfg.window, 0), cfg.block_k)
  hi = lax.div(q_start + cfg.block_q - 1, cfg.block_k) + 1
  return lo, hi


def _query_tiles(k_start, num_tiles: int, cfg: KernelConfig):
  """Query tiles [lo, hi) that see keys of slots from k_start."""
  lo = lax.div(k_start, cfg.block_q)
  hi = lax.div(k_start + cfg.block_k - 1 + cfg.window, cfg.block_q) + 1
  return lo, jnp.minimum(hi, num_tiles)


# ---------------------------------------------------------------- kernels


def _forward_kernel(
    ev_ref,
    qcl_ref,
    kcl_ref,
    q_ref,
    k_ref,
    v_ref,
    o_ref,
    lse_ref,
    *,
    cfg: KernelConfig,
):
  n = q_ref.shape[0]
  q_start = pl.program_id(0) * cfg.block_q
  q_slots = pl.ds(q_start, cfg.block_q)
  q_ev = ev_ref[q_slots]
  q = q_ref[_tokens(q_ev, cfg, n), :]
  qc = qcl_ref[q_slots]
  scale = cfg.logit_scale * _LOG2E  # base-2 logits: exp2 is cheaper

  def body(j, carry):
    acc, m, l = carry
    k_start = j * cfg.block_k
    k_slots = pl.ds(k_start, cfg.block_k)
    tok = _tokens(ev_ref[k_slots], cfg, n)
    k, v = k_ref[tok, :], v_ref[tok, :]
    ok = _allowed(qc, q_start, kcl_ref[k_slots], k_start, cfg)
    s = _dot_nt(q, k) * scale
    m_new = jnp.maximum(m, jnp.max(jnp.where(ok, s, -jnp.inf), axis=1))
    # Rows with nothing visible yet keep m = -inf; shift them by 0.
    shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    p = jnp.where(ok, jnp.exp2(s - shift[:, None]), 0.0)
    alpha = jnp.exp2(m - shift)
    l = alpha * l + jnp.sum(p, axis=1)
    acc = alpha[:, None] * acc + _dot(p.astype(v.dtype), v)
    return acc, m_new, l

  d = q_ref.shape[-1]
  init = (
      jnp.zeros((cfg.block_q, d), jnp.float32),
      jnp.full((cfg.block_q,), -jnp.inf, jnp.float32),
      jnp.zeros((cfg.block_q,), jnp.float32),
  )
  lo, hi = _key_tiles(q_start, cfg)
  acc, m, l = lax.fori_loop(lo, hi, body, init)
  seen = l > 0.0  # l >= 1 once any key was visible
  l = jnp.where(seen, l, 1.0)
  o = jnp.where(seen[:, None], acc / l[:, None], 0.0)
  o_ref[q_ev, :] = o.astype(o_ref.dtype)
  lse_ref[...] = jnp.where(seen, m + jnp.log2(l), 0.0)


def _dq_kernel(
    ev_ref,
    qcl_ref,
    kcl_ref,
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    delta_ref,
    lse_ref,
    dq_ref,
    *,
    cfg: KernelConfig,
):
  n = q_ref.shape[0]
  q_start = pl.program_id(0) * cfg.block_q
  q_slots = pl.ds(q_start, cfg.block_q)
  q_ev = ev_ref[q_slots]
  tok = _tokens(q_ev, cfg, n)
  q, do, delta = q_ref[tok, :], do_ref[tok, :], delta_ref[tok]
  qc, lse = qcl_ref[q_slots], lse_ref[...]
  scale = cfg.logit_scale * _LOG2E

  def body(j, dq):
    k_start = j * cfg.block_k
    k_slots = pl.ds(k_start, cfg.block_k)
    ktok = _tokens(ev_ref[k_slots], cfg, n)
    k, v = k_ref[ktok, :], v_ref[ktok, :]
    ok = _allowed(qc, q_start, kcl_ref[k_slots], k_start, cfg)
    p = jnp.where(ok, jnp.exp2(_dot_nt(q, k) * scale - lse[:, None]), 0.0)
    ds = p * (_dot_nt(do, v) - delta[:, None])
    return dq + _dot(ds.astype(k.dtype), k)

  lo, hi = _key_tiles(q_start, cfg)
  dq = lax.fori_loop(
      lo, hi, body, jnp.zeros((cfg.block_q, q_ref.shape[-1]), jnp.float32)
  )
  dq_ref[q_ev, :] = (dq * cfg.logit_scale).astype(dq_ref.dtype)


def _dkv_kernel(
    ev_ref,
    qcl_ref,
    kcl_ref,
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    delta_ref,
    lse_ref,
    dk_ref,
    dv_ref,
    *,
    cfg: KernelConfig,
):
  n = q_ref.shape[0]
  k_start = pl.program_id(0) * cfg.block_k
  k_slots = pl.ds(k_start, cfg.block_k)
  k_ev = ev_ref[k_slots]
  ktok = _tokens(k_ev, cfg, n)
  k, v, kc = k_ref[ktok, :], v_ref[ktok, :], kcl_ref[k_slots]
  scale = cfg.logit_scale * _LOG2E

  def body(t, carry):
    dk, dv = carry
    q_start = t * cfg.block_q
    q_slots = pl.ds(q_start, cfg.block_q)
    tok = _tokens(ev_ref[q_slots], cfg, n)
    q, do, delta = q_ref[tok, :], do_ref[tok, :], delta_ref[tok]
    ok = _allowed(qcl_ref[q_slots], q_start, kc, k_start, cfg)
    p = jnp.where(
        ok, jnp.exp2(_dot_nt(q, k) * scale - lse_ref[q_slots][:, None]), 0.0
    )
    dv = dv + _dot_tn(p.astype(do.dtype), do)
    ds = p * (_dot_nt(do, v) - delta[:, None])
    dk = dk + _dot_tn(ds.astype(q.dtype), q)
    return dk, dv

  zeros = jnp.zeros((cfg.block_k, k_ref.shape[-1]), jnp.float32)
  lo, hi = _query_tiles(k_start, ev_ref.shape[0] // cfg.block_q, cfg)
  dk, dv = lax.fori_loop(lo, hi, body, (zeros, zeros))
  dk_ref[k_ev, :] = (dk * cfg.logit_scale).astype(dk_ref.dtype)
  dv_ref[k_ev, :] = dv.astype(dv_ref.dtype)


# ------------------------------------------------------------ pallas_calls


def _specs(b, n, h, d, npad):
  """BlockSpecs for grid (tile, batch, head); refs lose batch and head."""
  rows = pl.BlockSpec((None, None, npad), lambda t, bi, hi: (bi, hi, 0))
  tokens = pl.BlockSpec((None, n, None, d), lambda t, bi, hi: (bi, 0, hi, 0))
  events = pl.BlockSpec((None, npad, None, d), lambda t, bi, hi: (bi, 0, hi, 0))
  per_token = pl.BlockSpec((None, n, None), lambda t, bi, hi: (bi, 0, hi))
  del b, h
  return rows, tokens, events, per_token


def _call(kernel, cfg, grid, in_specs, out_specs, out_shape, name):
  return pl.pallas_call(
      functools.partial(kernel, cfg=cfg),
      grid=grid,
      in_specs=in_specs,
      out_specs=out_specs,
      out_shape=out_shape,
      interpret=cfg.interpret,
      compiler_params=plgpu.CompilerParams(
          num_warps=cfg.num_warps, num_stages=cfg.num_stages
      ),
      name=name,
  )


def _forward_call(cfg, q, k, v, ev, qcl, kcl):
  b, n, h, d = q.shape
  npad = ev.shape[-1]
  rows, tokens, events, _ = _specs(b, n, h, d, npad)
  lse_tile = pl.BlockSpec(
      (None, None, cfg.block_q), lambda t, bi, hi: (bi, hi, t)
  )
  return _call(
      _forward_kernel,
      cfg,
      (npad // cfg.block_q, b, h),
      [rows] * 3 + [tokens] * 3,
      [events, lse_tile],
      [
          jax.ShapeDtypeStruct((b, npad, h, d), q.dtype),
          jax.ShapeDtypeStruct((b, h, npad), jnp.float32),
      ],
      "routing_attention_fwd",
  )(ev, qcl, kcl, q, k, v)


def _dq_call(cfg, q, k, v, ev, qcl, kcl, do, delta, lse):
  b, n, h, d = q.shape
  npad = ev.shape[-1]
  rows, tokens, events, per_token = _specs(b, n, h, d, npad)
  lse_tile = pl.BlockSpec(
      (None, None, cfg.block_q), lambda t, bi, hi: (bi, hi, t)
  )
  return _call(
      _dq_kernel,
      cfg,
      (npad // cfg.block_q, b, h),
      [rows] * 3 + [tokens] * 4 + [per_token, lse_tile],
      events,
      jax.ShapeDtypeStruct((b, npad, h, d), q.dtype),
      "routing_attention_dq",
  )(ev, qcl, kcl, q, k, v, do, delta, lse)


def _dkv_call(cfg, q, k, v, ev, qcl, kcl, do, delta, lse):
  b, n, h, d = q.shape
  npad = ev.shape[-1]
  rows, tokens, events, per_token = _specs(b, n, h, d, npad)
  return _call(
      _dkv_kernel,
      cfg,
      (npad // cfg.block_k, b, h),
      [rows] * 3 + [tokens] * 4 + [per_token, rows],
      [events, events],
      [
          jax.ShapeDtypeStruct((b, npad, h, d), k.dtype),
          jax.ShapeDtypeStruct((b, npad, h, d), v.dtype),
      ],
      "routing_attention_dkv",
  )(ev, qcl, kcl, q, k, v, do, delta, lse)


def _to_tokens(x, n: int, per_token: int) -> Array:
  """[b, npad, h, d] in event order -> [b, n, h, d]: a token's events summed.

  At most one event of a token has a nonzero output or query gradient, and
  only the key event has key gradients, so the sum is exact.
  """
  x = x[:, : n * per_token]
  if per_token == 1:
    return x
  b, _, h, d = x.shape
  return x.reshape(b, n, per_token, h, d).sum(2)


# --------------------------------------------------------------- autodiff


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(cfg, q, k, v, ev, qcl, kcl):
  o_ev, _ = _forward_call(cfg, q, k, v, ev, qcl, kcl)
  return _to_tokens(o_ev, q.shape[1], cfg.per_token)


def _attention_fwd(cfg, q, k, v, ev, qcl, kcl):
  o_ev, lse = _forward_call(cfg, q, k, v, ev, qcl, kcl)
  o = _to_tokens(o_ev, q.shape[1], cfg.per_token)
  return o, (q, k, v, ev, qcl, kcl, o, lse)


def _attention_bwd(cfg, res, do):
  q, k, v, ev, qcl, kcl, o, lse = res
  n = q.shape[1]
  do = do.astype(o.dtype)
  delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), -1)
  args = (cfg, q, k, v, ev, qcl, kcl, do, delta, lse)
  dq = _dq_call(*args)
  dk, dv = _dkv_call(*args)
  tokens = lambda x: _to_tokens(x, n, cfg.per_token)
  return tokens(dq), tokens(dk), tokens(dv), None, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


# ------------------------------------------------------------- entry point


def _power_of_two(x: int) -> bool:
  return x >= 1 and x & (x - 1) == 0


def check_shapes(
    head_dim: int, block_q: int, block_k: int, interpret: bool
) -> None:
  """Raises ValueError for sizes the Triton kernels cannot take."""
  for name, value in (
      ("head_dim", head_dim),
      ("block_q", block_q),
      ("block_k", block_k),
  ):
    if not _power_of_two(value):
      raise ValueError(
          f"the Pallas routing kernel needs a power-of-2 {name}, got {value}"
      )
    if not interpret and value < 16:
      raise ValueError(
          f"the Pallas routing kernel needs {name} >= 16 on a "
          f"GPU (tensor-core dots), got {value}"
      )


def resolve_interpret(interpret: Optional[bool]) -> bool:
  """None: interpret on CPU, compile with Triton on GPU; TPU unsupported."""
  if interpret is not None:
    return interpret
  backend = jax.default_backend()
  if backend == "cpu":
    return True
  if backend in ("gpu", "cuda", "rocm"):
    return False
  raise NotImplementedError(
      f"the Pallas routing kernel targets GPUs (Triton), not {backend!r}; "
      'use implementation="xla"'
  )


def causal_routing_attention(
    q: Array,
    k: Array,
    v: Array,
    key_clusters: Array,
    mask: Optional[Array],
    *,
    num_clusters: int,
    window: int,
    query_clusters: Optional[Array] = None,
    exclude_self: bool = False,
    logit_scale: float = 1.0,
    dtype: Any = jnp.float32,
    block_q: int = 64,
    block_k: int = 64,
    interpret: Optional[bool] = None,
    num_warps: int = 4,
    num_stages: int = 2,
) -> Array:
  """`routing_core.causal_routing_attention` with fused Pallas kernels.

  Args:
    q, k, v, key_clusters, mask, num_clusters, window, query_clusters,
      exclude_self, logit_scale, dtype: as the XLA path (no relative tables,
      no dropout).
    block_q, block_k: sorted slots per query / key tile (powers of 2).
    interpret: None picks the Pallas interpreter on CPU and Triton on GPU.
    num_warps, num_stages: Triton launch parameters.

  Returns:
    [batch, length, heads, head_dim] in dtype; zero at padding.
  """
  b, n, h, d = q.shape
  interpret = resolve_interpret(interpret)
  check_shapes(d, block_q, block_k, interpret)
  routed = routing_core.sort_events(
      key_clusters,
      mask,
      query_clusters,
      num_clusters=num_clusters,
      multiple=max(block_q, block_k),
  )
  npad = routed.perm.shape[-1]
  if routed.same is None:
    per_token, emits = 1, jnp.ones((b, h, npad), bool)
  else:
    # The key event answers when the clusters agree, else the query event.
    per_token = 2
    emits = jnp.stack([routed.same, ~routed.same], -1).reshape(b, h, 2 * n)
    emits = jnp.pad(emits, ((0, 0), (0, 0), (0, npad - 2 * n)))
    emits = jnp.take_along_axis(emits, routed.perm, axis=2)
  qcl = jnp.where(emits, routed.cluster, _NO_QUERY)
  kcl = jnp.where(routed.is_key, routed.cluster, _NO_KEY)
  cfg = KernelConfig(
      window=window,
      exclude_self=exclude_self,
      logit_scale=float(logit_scale),
      per_token=per_token,
      block_q=block_q,
      block_k=block_k,
      interpret=interpret,
      num_warps=num_warps,
      num_stages=num_stages,
  )
  cast = lambda a: a.astype(dtype)
  return _attention(cfg, cast(q), cast(k), cast(v), routed.perm, qcl, kcl)
