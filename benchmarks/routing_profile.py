# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Where the time of causal routing attention goes, and a faster variant.

Times, in one process (timings only; peak memory is attention.py's job;
reps interleaved round-robin so contention hits every entry alike),
forward+backward of the pieces of `RoutingAttention` (mode="causal"):
the whole module (and LocalAttention q=m=w for reference), its
projections, its k-means scoring, the attention core of routing_jax
(`causal_routing_attention`), the blocked local core with the same
[w x 2w] blocks, and the core's parts one by one. It also times
`fast_causal_routing`, an experimental rewrite of the core that keeps its
semantics (checked against the library here) but

  * sorts (cluster, position) once with lax.sort carrying the positions, so
    the sorted cluster ids come for free;
  * gets each token's rank in its cluster from a cummax over cluster starts
    of the sorted ids, instead of a one_hot [.., n, k+1] count and a cumsum;
  * permutes with a custom VJP whose backward is a gather by the inverse
    permutation, instead of XLA's scatter-add transpose of take_along_axis;
  * drops the position test from the mask (inside one cluster, rank order
    is position order);
  * optionally uses query blocks of qb < w with a flange of w keys
    (`query_block`): [qb x (qb + w)] blocks instead of [w x 2w].

A 2048² float32 matmul is timed in the same rounds (`matmul_2048`), and the
core's GFLOP/s is printed as a fraction of it. The run uses the XLA flags
the CLIs set (routing_jax/xla_flags.py).

  python benchmarks/routing_profile.py --n 8192 --reps 3
"""

import argparse
import json
import os
import statistics
import time

from routing_jax import xla_flags

# The flags the CLIs run with; XLA reads them when jax starts a backend.
xla_flags.apply_cpu_defaults()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

from routing_jax.nn import attention_core as core
from routing_jax.nn import kmeans as km
from routing_jax.nn import local_attention as la
from routing_jax.nn import routing_attention as ra
from routing_jax.nn import routing_core
from routing_jax.nn.routing_config import RoutingConfig

permute = routing_core.permute


def fast_causal_routing(
    q, k, v, clusters, *, num_clusters, window, query_block=None
):
  """causal_routing_attention without padding mask, rewritten for speed.

  In (cluster, position) order a query's visible keys are the w positions
  before it at most (same cluster, rank difference < w), so sorted query
  blocks of qb positions need only a flange of w keys: blocks of
  [qb x (qb + w)] rather than the library's [w x 2w]. qb = w is the
  library's layout; qb = w/2 cuts the attention FLOPs by a quarter.

  Args:
    q, k, v: [batch, length, heads, head_dim].
    clusters: [batch, heads, length] int32.
    num_clusters, window: k and w.
    query_block: qb, a divisor of w (default w).

  Returns:
    [batch, length, heads, head_dim].
  """
  b, n, h, d = q.shape
  w = window
  qb = query_block or w
  if w % qb:
    raise ValueError(f"query_block must divide window, got {qb} and {w}")
  r = w // qb  # flange blocks
  nb = -(-n // qb)
  npad = nb * qb
  c = jnp.pad(
      clusters.astype(jnp.int32),
      ((0, 0), (0, 0), (0, npad - n)),
      constant_values=num_clusters,
  )
  pos = jnp.broadcast_to(jnp.arange(npad, dtype=jnp.int32), c.shape)
  cs, perm = jax.lax.sort((c, pos), dimension=-1, num_keys=1, is_stable=True)
  rows = (jnp.arange(b)[:, None, None], jnp.arange(h)[None, :, None])
  inverse = jnp.zeros_like(perm).at[rows + (perm,)].set(pos)
  first = jnp.concatenate(
      [jnp.ones_like(cs[..., :1], bool), cs[..., 1:] != cs[..., :-1]], -1
  )
  rank = pos - jax.lax.cummax(jnp.where(first, pos, 0), axis=2)
  tr = lambda a: jnp.swapaxes(
      jnp.pad(a, ((0, 0), (0, npad - n), (0, 0), (0, 0))), 1, 2
  )
  blk = lambda a: a.reshape(a.shape[:2] + (nb, qb) + a.shape[3:])
  qs, ks, vs = (blk(permute(tr(a), perm, inverse)) for a in (q, k, v))

  def with_flange(a, fill):
    """[b, h, nb, qb, ...] -> [b, h, nb, (r+1)·qb, ...]."""
    a = jnp.pad(
        a,
        ((0, 0), (0, 0), (r, 0)) + ((0, 0),) * (a.ndim - 3),
        constant_values=fill,
    )
    return jnp.concatenate([a[:, :, j : j + nb] for j in range(r + 1)], 3)

  cq, rq = blk(cs), blk(rank)
  ck, rk = with_flange(cq, -1), with_flange(rq, 0)
  diff = rq[..., :, None] - rk[..., None, :]
  msk = (
      (ck[..., None, :] == cq[..., :, None])
      & (diff >= 0)
      & (diff < w)
      & (cq[..., :, None] < num_clusters)
  )
  o = core.blocked_attention(qs, with_flange(ks, 0), with_flange(vs, 0), msk)
  o = permute(o.reshape(b, h, npad, d), inverse, perm)
  return jnp.swapaxes(o[:, :, :n], 1, 2)


def time_round_robin(entries, reps):
  """{name: (first s, median s, min s)}; reps interleaved across entries.

  One rep of every entry per round, so all entries see the same share of
  the machine when other processes contend for it.
  """
  first, times = {}, {name: [] for name in entries}
  for name, (fn, args) in entries.items():
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first[name] = time.perf_counter() - t0
  for _ in range(reps):
    for name, (fn, args) in entries.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - t0)
  return {
      name: (first[name], statistics.median(t), min(t))
      for name, t in times.items()
  }


def fwd_bwd(f, argnums):
  """jit(value_and_grad(mean(f(...)^2)))."""
  loss = lambda *a: jnp.mean(jnp.square(f(*a).astype(jnp.float32)))
  return jax.jit(jax.value_and_grad(loss, argnums=argnums))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--n", type=int, default=8192)
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--head-dim", type=int, default=64)
  p.add_argument("--window", type=int, default=256)
  p.add_argument("--out", default="")
  p.add_argument("--only", default="", help="comma list of entries to run")
  args = p.parse_args()
  n, h, d, w = args.n, args.heads, args.head_dim, args.window
  k = max(1, n // w)
  keys = jax.random.split(jax.random.key(0), 6)
  x = jax.random.normal(keys[0], (1, n, h * d))
  q, kk, v = (
      km.normalize(jax.random.normal(kq, (1, n, h, d))) for kq in keys[1:4]
  )
  mu = km.init_centroids(keys[4], h, k, d)
  clusters = km.assign(q, mu)
  module = ra.RoutingAttention(
      h, d, config=RoutingConfig(num_clusters=k, window=w, mode="causal")
  )
  variables = module.init(keys[5], x[:, : 2 * w])
  params, state = variables["params"], {"kmeans": variables["kmeans"]}

  def module_out(prm, xx):
    y, aux = module.apply({"params": prm, **state}, xx, return_aux=True)
    return y + aux["loss"]

  local_module = la.LocalAttention(h, d, query_block=w, memory_flange=w)
  local_params = local_module.init(keys[5], x[:, : 2 * w])["params"]
  local_out = lambda prm, xx: local_module.apply({"params": prm}, xx)

  def projections(prm, xx):
    """The module's projections and LayerNorm alone (no routing)."""
    kern = (
        lambda name: prm[name]["kernel"].value
        if hasattr(prm[name]["kernel"], "value")
        else prm[name]["kernel"]
    )
    qn = km.normalize((xx @ kern("query")).reshape(1, n, h, d))
    vv = (xx @ kern("value")).reshape(1, n, h, d)
    return ((qn + vv).reshape(1, n, h * d)) @ kern("out")

  def kmeans_part(qq):
    out = km.KMeans(h, k, d).apply({"kmeans": state["kmeans"]["kmeans"]}, qq)
    return out.loss + out.assignments.astype(jnp.float32)

  # Every array is an argument: XLA would constant-fold a closed-over sort.
  lib = lambda a, b_, c, cl: routing_core.causal_routing_attention(
      a, b_, c, cl, None, num_clusters=k, window=w
  )
  fast = lambda a, b_, c, cl: fast_causal_routing(
      a, b_, c, cl, num_clusters=k, window=w
  )
  fast_half = lambda a, b_, c, cl: fast_causal_routing(
      a, b_, c, cl, num_clusters=k, window=w, query_block=w // 2
  )
  fast_quarter = lambda a, b_, c, cl: fast_causal_routing(
      a, b_, c, cl, num_clusters=k, window=w, query_block=w // 4
  )
  local = lambda a, b_, c: la.local_attention(
      a, b_, c, query_block=w, memory_flange=w
  )
  # Parts of the library core (forward only unless noted).
  npad = -(-n // w) * w
  pos = jnp.arange(npad, dtype=jnp.int32)
  cpad = jnp.pad(clusters, ((0, 0), (0, 0), (0, npad - n)))
  perm = jnp.argsort(cpad * npad + pos, axis=-1).astype(jnp.int32)
  rows = (jnp.arange(1)[:, None, None], jnp.arange(h)[None, :, None])
  inverse = (
      jnp.zeros_like(perm)
      .at[rows + (perm,)]
      .set(jnp.broadcast_to(pos, perm.shape))
  )
  qt = jnp.swapaxes(q, 1, 2)
  take_loss = lambda a, pm: routing_core.take_along_length(a, pm)
  perm_loss = permute
  big = jnp.ones((2048, 2048), jnp.float32)
  entries = {
      # The f32 matmul peak the core is compared with, in the same rounds.
      "matmul_2048": (jax.jit(jnp.dot), (big, big)),
      "module_fwd_bwd": (fwd_bwd(module_out, (0, 1)), (params, x)),
      "module_local_fwd_bwd": (fwd_bwd(local_out, (0, 1)), (local_params, x)),
      "projections_ln_fwd_bwd": (fwd_bwd(projections, (0, 1)), (params, x)),
      "kmeans_fwd_bwd": (fwd_bwd(kmeans_part, 0), (q,)),
      "core_lib_fwd_bwd": (fwd_bwd(lib, (0, 1, 2)), (q, kk, v, clusters)),
      "core_fast_fwd_bwd": (fwd_bwd(fast, (0, 1, 2)), (q, kk, v, clusters)),
      "core_fast_qb_half_fwd_bwd": (
          fwd_bwd(fast_half, (0, 1, 2)),
          (q, kk, v, clusters),
      ),
      "core_fast_qb_quarter_fwd_bwd": (
          fwd_bwd(fast_quarter, (0, 1, 2)),
          (q, kk, v, clusters),
      ),
      "core_local_fwd_bwd": (fwd_bwd(local, (0, 1, 2)), (q, kk, v)),
      "core_lib_fwd": (jax.jit(lib), (q, kk, v, clusters)),
      "core_fast_fwd": (jax.jit(fast), (q, kk, v, clusters)),
      "core_local_fwd": (jax.jit(local), (q, kk, v)),
      "argsort_key": (
          jax.jit(lambda c: jnp.argsort(c * npad + pos, axis=-1)),
          (cpad,),
      ),
      "lax_sort_pair": (
          jax.jit(
              lambda c: jax.lax.sort(
                  (c, jnp.broadcast_to(pos, c.shape)),
                  num_keys=1,
                  is_stable=True,
              )
          ),
          (cpad,),
      ),
      "one_hot_counts": (
          jax.jit(
              lambda c: jnp.sum(
                  jax.nn.one_hot(c, k + 1, dtype=jnp.int32), axis=2
              )
          ),
          (cpad,),
      ),
      "inverse_scatter": (
          jax.jit(
              lambda pm: jnp.zeros_like(pm)
              .at[rows + (pm,)]
              .set(jnp.broadcast_to(pos, pm.shape))
          ),
          (perm,),
      ),
      "gather_take_fwd_bwd": (fwd_bwd(take_loss, 0), (qt, perm)),
      "gather_custom_vjp_fwd_bwd": (fwd_bwd(perm_loss, 0), (qt, perm, inverse)),
  }
  only = [e for e in args.only.split(",") if e]
  results = {
      "n": n,
      "heads": h,
      "head_dim": d,
      "window": w,
      "clusters": k,
      "reps": args.reps,
      "entries": {},
  }
  # Same function: compare outputs and gradients with the library core.
  if not only or "check" in only:
    lv, lg = fwd_bwd(lib, (0, 1, 2))(q, kk, v, clusters)
    lo = jax.jit(lib)(q, kk, v, clusters)
    for name, f in (
        ("qb=w", fast),
        ("qb=w/2", fast_half),
        ("qb=w/4", fast_quarter),
    ):
      fv, fg = fwd_bwd(f, (0, 1, 2))(q, kk, v, clusters)
      err = max(float(jnp.max(jnp.abs(a - b_))) for a, b_ in zip(lg, fg))
      results[f"fast_{name}_vs_lib"] = {
          "loss_diff": float(abs(lv - fv)),
          "max_grad_diff": err,
          "max_out_diff": float(
              jnp.max(jnp.abs(lo - jax.jit(f)(q, kk, v, clusters)))
          ),
      }
      print("check", name, results[f"fast_{name}_vs_lib"], flush=True)
  if only:
    entries = {k: v for k, v in entries.items() if k in only}
  for name, (first, med, best) in time_round_robin(entries, args.reps).items():
    results["entries"][name] = {
        "first_s": first,
        "median_s": med,
        "min_s": best,
    }
    print(
        f"{name:28s} first {first:7.3f}  median {med:7.4f}  min {best:7.4f}",
        flush=True,
    )
  got = results["entries"]
  if "matmul_2048" in got and "core_lib_fwd_bwd" in got:
    # Two matmuls of 2·d FLOPs per (query, key) pair computed, forward;
    # forward and backward 3x that. Causal routing computes 1.5w keys per
    # query (blocks of w/2 queries against w/2 + w keys).
    core_flops = 3 * 2 * 2 * d * h * n * (w + routing_core.query_block_size(w))
    peak = 2 * 2048**3 / got["matmul_2048"]["min_s"]
    core = core_flops / got["core_lib_fwd_bwd"]["min_s"]
    results["matmul_peak_gflops"] = peak / 1e9
    results["core_gflops"] = core / 1e9
    results["core_fraction_of_peak"] = core / peak
    print(
        f"core {core / 1e9:.1f} GFLOP/s = {100 * core / peak:.1f}% of the"
        f" matmul peak {peak / 1e9:.1f} GFLOP/s (min times)",
        flush=True,
    )
  results["xla_flags"] = os.environ.get("XLA_FLAGS", "")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
