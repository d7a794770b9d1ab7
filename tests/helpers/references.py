# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Brute-force float64 numpy references for the attention tests.

Written from the definitions (docs/causal_routing.md, and the paper's
routing for top-k), one query at a time, without the library's blocking,
sorting or caches. Only shapes and conventions are shared with the library:
q, k, v are [batch, length, heads, head_dim]; cluster ids [batch, heads,
length]; relative tables [2R+1, head_dim] indexed by clip(offset, ±R) + R.
"""

import numpy as np

NEG = -1e9  # the library's finite mask value


def ln(x):
  """Parameter-free LayerNorm over the last axis (epsilon 1e-6)."""
  x = np.asarray(x, np.float64)
  x = x - x.mean(-1, keepdims=True)
  return x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)


def rope(x, base=10000.0, positions=None):
  """Rotates pairs (2i, 2i+1) by angle t·base^(−2i/d): x [b, n, h, d]."""
  n, d = x.shape[1], x.shape[-1]
  t = np.arange(n) if positions is None else np.asarray(positions)
  ang = t[:, None] * base ** (-np.arange(0, d, 2) / d)
  cos, sin = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
  out = np.empty(x.shape, np.float64)
  out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
  out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
  return out


def normal(seed, shape):
  """Float32 normal draws (numpy: eager jax.random compiles per shape)."""
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def masks(kind, batch, n, seed=0):
  """None, right padding ("right") or random holes ("holes") [batch, n]."""
  if kind == "none":
    return None
  if kind == "right":  # right padding, different lengths per row
    lengths = np.array([n, n - n // 3, n - n // 2, n - 1])[:batch]
    return np.arange(n)[None, :] < lengths[:, None]
  valid = np.random.default_rng(seed).random((batch, n)) < 0.7  # holes
  valid[:, 0] = True
  return valid


def valid_of(mask, batch, n):
  return np.ones((batch, n), bool) if mask is None else np.asarray(mask)


def attend(
    q, keys, values, scale=1.0, rel=None, offsets=None, max_relative_position=0
):
  """One query [d] over keys/values [m, d]; 0 when there is no key.

  rel: optional (rel_k, rel_v) tables; offsets [m] key − query distances.
  """
  if len(keys) == 0:
    return np.zeros(q.shape)
  logits = keys @ q
  values = np.asarray(values, np.float64)
  if rel is not None:
    idx = (
        np.clip(offsets, -max_relative_position, max_relative_position)
        + max_relative_position
    )
    rel_k, rel_v = (np.asarray(t, np.float64)[idx] for t in rel)
    logits = logits + rel_k @ q
    values = values + rel_v
  logits = logits * scale
  p = np.exp(logits - logits.max())
  return (p / p.sum()) @ values


def causal_routing(
    q,
    k,
    v,
    key_clusters,
    valid,
    window,
    scale=1.0,
    query_clusters=None,
    exclude_self=False,
    rel=None,
    max_relative_position=0,
):
  """Attention under the exactly-causal routing definition.

  A token is a member of its key's cluster and of its query's cluster. The
  query of t sees, among the last `window` members of its query's cluster
  up to and including t (or the `window` members before t with
  exclude_self), those that are members as keys. Relative offsets count
  members between key and query. Padding belongs to no cluster and gets 0.
  """
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  b, n, h, _ = q.shape
  out = np.zeros(q.shape)
  for bi in range(b):
    for hi in range(h):
      kc = key_clusters[bi, hi]
      qc = kc if query_clusters is None else query_clusters[bi, hi]
      for t in range(n):
        if not valid[bi, t]:
          continue
        c = qc[t]
        members = [
            s
            for s in range(t + 1)
            if valid[bi, s] and (kc[s] == c or qc[s] == c)
        ]
        assert members[-1] == t
        view = members[:-1][-window:] if exclude_self else members[-window:]
        keys = [s for s in view if kc[s] == c]
        offsets = np.array(
            [members.index(s) - (len(members) - 1) for s in keys], int
        )
        out[bi, t, hi] = attend(
            q[bi, t, hi],
            k[bi, keys, hi],
            v[bi, keys, hi],
            scale,
            rel,
            offsets,
            max_relative_position,
        )
  return out


def top_w(scores, valid_row, window):
  """Top-w positions by score among valid ones, sorted by position.

  Padding is picked last (when fewer than w are valid), ties go to the
  lower position, as jax.lax.top_k.
  """
  s = np.where(valid_row, scores, -np.inf)
  return np.sort(np.argsort(-s, kind="stable")[:window])


def topk_routing(
    q,
    k,
    v,
    q_scores,
    k_scores,
    valid,
    window,
    causal,
    scale=1.0,
    rel=None,
    max_relative_position=0,
):
  """The paper's balanced routing, looping over heads and centroids.

  Each centroid picks its top-w queries and keys; a picked query attends to
  the picked valid keys (at or before it when causal; 0 if there are none;
  relative offsets are slot differences j − i); outputs are averaged over
  the picking clusters with +0.01; unpicked tokens get 0.

  Returns:
    out [b, n, h, d] and count [b, h, n]: clusters that picked each token.
  """
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  b, n, h, _ = q.shape
  out = np.zeros(q.shape)
  count = np.zeros((b, h, n))
  for bi in range(b):
    for hi in range(h):
      for c in range(q_scores.shape[-1]):
        qi = top_w(q_scores[bi, hi, :, c], valid[bi], window)
        ki = top_w(k_scores[bi, hi, :, c], valid[bi], window)
        for i, t in enumerate(qi):
          slots = [
              j
              for j, s in enumerate(ki)
              if valid[bi, s] and (s <= t or not causal)
          ]
          keys = ki[slots]
          out[bi, t, hi] += attend(
              q[bi, t, hi],
              k[bi, keys, hi],
              v[bi, keys, hi],
              scale,
              rel,
              np.array(slots, int) - i,
              max_relative_position,
          )
          count[bi, hi, t] += 1
  out = out / (np.swapaxes(count, 1, 2)[..., None] + 0.01)
  return out * valid[:, :, None, None], count
