# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The pure routing cores against brute-force references (tests/helpers).

Causal routing: every case compares routing_core.causal_routing_attention
with a per-query loop over the membership definition (shared or separate
query clusters, self-exclusion, cluster-relative positions, padding).
Top-k routing: the paper's balanced selection, with the causal mask from
original positions and 0 for a picked query with no legal key.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import references as ref
from routing_jax.nn import routing_core

B, H, D = 2, 2, 8

_causal = jax.jit(
    routing_core.causal_routing_attention,
    static_argnames=(
        "num_clusters",
        "window",
        "exclude_self",
        "max_relative_position",
        "logit_scale",
        "dropout_rate",
    ),
)
_topk = jax.jit(
    routing_core.topk_routing_attention,
    static_argnames=(
        "window",
        "causal",
        "max_relative_position",
        "logit_scale",
    ),
)


def _qkv(n, seed=0):
  rng = np.random.default_rng(seed)
  q, k = (
      ref.ln(rng.normal(size=(B, n, H, D))).astype(np.float32) for _ in range(2)
  )
  return q, k, rng.normal(size=(B, n, H, D)).astype(np.float32)


def _skewed(n, num_clusters, seed=0):
  """[b, h, n] ids drawn unevenly, so cluster sizes differ a lot."""
  p = np.arange(1, num_clusters + 1, dtype=np.float64) ** 2
  return (
      np.random.default_rng(seed)
      .choice(num_clusters, size=(B, H, n), p=p / p.sum())
      .astype(np.int32)
  )


def _tables(seed, max_distance):
  rng = np.random.default_rng(seed)
  return tuple(
      0.3 * rng.normal(size=(2 * max_distance + 1, D)).astype(np.float32)
      for _ in range(2)
  )


# ------------------------------------------------------------ causal routing


@pytest.mark.parametrize(
    "n, window, scale, mask_kind",
    [(16, 16, 1.0, "none"), (13, 20, 0.5, "right"), (13, 13, 1.0, "holes")],
)
def test_one_cluster_is_dense_causal_attention(n, window, scale, mask_kind):
  q, k, v = _qkv(n)
  mask = ref.masks(mask_kind, B, n)
  valid = ref.valid_of(mask, B, n)
  got = _causal(
      q,
      k,
      v,
      jnp.zeros((B, H, n), jnp.int32),
      mask,
      num_clusters=1,
      window=window,
      logit_scale=scale,
  )
  logits = np.einsum("bthd,bshd->bhts", q.astype(np.float64), k) * scale
  allowed = np.tril(np.ones((n, n), bool))[None, None] & valid[:, None, None]
  logits = np.where(allowed, logits, -np.inf)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  want = np.einsum("bhts,bshd->bthd", p / p.sum(-1, keepdims=True), v)
  want *= valid[:, :, None, None]
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)


CAUSAL_CASES = [  # (n, window, clusters, mask, separate, exclude_self, rel)
    (16, 4, 3, "none", False, False, 0),
    (19, 4, 3, "holes", False, False, 0),  # n not a multiple of w
    (16, 1, 4, "right", False, False, 0),  # w = 1
    (12, 20, 3, "holes", False, False, 0),  # w > n
    (29, 5, 4, "right", False, False, 0),  # odd w: blocks of w
    (24, 6, 3, "none", True, False, 0),  # queries routed apart
    (31, 4, 4, "holes", True, False, 3),
    (20, 5, 2, "right", False, True, 0),  # self excluded
    (27, 6, 3, "holes", True, True, 4),
    (32, 8, 2, "none", False, False, 3),  # relative, clipped at 3
]


@pytest.mark.parametrize(
    "n, window, k, mask_kind, separate, exclude_self, max_rel", CAUSAL_CASES
)
def test_causal_core_matches_brute_force(
    n, window, k, mask_kind, separate, exclude_self, max_rel
):
  q, k_, v = _qkv(n, seed=n)
  key_clusters = _skewed(n, k, seed=n)
  query_clusters = _skewed(n, k, seed=n + 100) if separate else None
  mask = ref.masks(mask_kind, B, n)
  valid = ref.valid_of(mask, B, n)
  rel = _tables(n, max_rel) if max_rel else None
  got = np.asarray(
      _causal(
          q,
          k_,
          v,
          key_clusters,
          mask,
          num_clusters=k,
          window=window,
          query_clusters=query_clusters,
          exclude_self=exclude_self,
          rel=rel,
          max_relative_position=max_rel,
          logit_scale=0.7,
      )
  )
  want = ref.causal_routing(
      q,
      k_,
      v,
      key_clusters,
      valid,
      window,
      0.7,
      query_clusters,
      exclude_self,
      rel,
      max_rel,
  )
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
  np.testing.assert_array_equal(got[~valid], 0.0)  # padding
  norms = np.linalg.norm(want, axis=-1)[valid]
  if not (separate or exclude_self):
    # Every valid token sees at least itself.
    assert (norms > 1e-3).all()
  else:
    # Some queries have no visible key (exactly 0), the rest do.
    assert (norms == 0).any() and (norms > 1e-3).any()


def test_separate_query_routing_reaches_keys_of_other_tokens():
  """A query routed away from its own key sees the keys of its cluster.

  Token 3's query is in cluster 1 while its key is in cluster 0; keys 0-2
  are in cluster 1: the query averages their values (equal logits).
  """
  n = 4
  q = np.zeros((1, n, 1, 2), np.float32)
  k = np.zeros((1, n, 1, 2), np.float32)
  v = np.arange(n * 2, dtype=np.float32).reshape(1, n, 1, 2)
  key_clusters = np.array([[[1, 1, 1, 0]]], np.int32)
  query_clusters = np.array([[[1, 1, 1, 1]]], np.int32)
  out = np.asarray(
      routing_core.causal_routing_attention(
          q,
          k,
          v,
          key_clusters,
          None,
          num_clusters=2,
          window=8,
          query_clusters=query_clusters,
      )
  )
  np.testing.assert_allclose(out[0, 3, 0], v[0, :3, 0].mean(0), rtol=1e-6)


def test_causal_dropout_is_unbiased_and_causal():
  n, window, k = 24, 6, 3
  q, k_, v = _qkv(n, seed=1)
  clusters = _skewed(n, k, seed=1)
  run = lambda rng, v, clusters, rate: _causal(
      q,
      k_,
      v,
      clusters,
      None,
      num_clusters=k,
      window=window,
      dropout_rate=rate,
      dropout_rng=rng,
  )
  exact = np.asarray(run(None, v, clusters, 0.0))
  keys = jax.random.split(jax.random.key(0), 400)
  samples = np.stack(
      [np.asarray(run(key, v, clusters, 0.3)) for key in keys[:400]]
  )
  assert np.abs(samples[0] - exact).max() > 1e-2  # dropout acts
  np.testing.assert_array_equal(samples[0], run(keys[0], v, clusters, 0.3))
  # Unbiased: the mean over draws approaches the exact output (standard
  # error of 400 draws).
  err = np.abs(samples.mean(0) - exact)
  assert (err <= 5 * samples.std(0) / 20 + 1e-5).all()
  # Causal with dropout on: changing the clusters and values after i leaves
  # outputs <= i unchanged, though the sorted layout moves.
  rng = np.random.default_rng(2)
  for i in (5, 12, 20):
    c2, v2 = clusters.copy(), v.copy()
    c2[:, :, i + 1 :] = rng.integers(0, k, c2[:, :, i + 1 :].shape)
    v2[:, i + 1 :] = rng.normal(size=v2[:, i + 1 :].shape)
    out = np.asarray(run(keys[0], v2, c2, 0.3))
    np.testing.assert_allclose(
        out[:, : i + 1], samples[0][:, : i + 1], atol=1e-6
    )


# -------------------------------------------------------------- top-k routing


TOPK_CASES = [  # (n, window, clusters, causal, shared, mask kind, rel)
    (24, 6, 4, True, True, "none", 0),  # k·w = n, as the paper's configs
    (24, 6, 4, False, True, "holes", 0),
    (20, 8, 3, True, False, "right", 0),  # k·w > n: overlaps
    (20, 8, 3, False, False, "none", 3),
    (16, 12, 2, True, False, "holes", 0),  # w > number of valid tokens
    (24, 6, 4, True, True, "right", 4),  # cluster-relative positions
]


@pytest.mark.parametrize(
    "n, window, kc, causal, shared, mask_kind, max_rel", TOPK_CASES
)
def test_topk_core_matches_brute_force(
    n, window, kc, causal, shared, mask_kind, max_rel
):
  q, k, v = _qkv(n, seed=n + 1)
  rng = np.random.default_rng(n)
  mu = ref.ln(rng.normal(size=(H, kc, D)))
  if shared:
    k = q
  qs = np.einsum("bnhd,hkd->bhnk", q, mu).astype(np.float32)
  ks = np.einsum("bnhd,hkd->bhnk", k, mu).astype(np.float32)
  mask = ref.masks(mask_kind, B, n)
  valid = ref.valid_of(mask, B, n)
  rel = _tables(n, max_rel) if max_rel else None
  qs_j = jnp.asarray(qs)
  # With shared Q/K the library reuses the query selection for the keys.
  ks_j = qs_j if shared else jnp.asarray(ks)
  got, count = _topk(
      q,
      k,
      v,
      qs_j,
      ks_j,
      mask,
      window=window,
      causal=causal,
      rel=rel,
      max_relative_position=max_rel,
      logit_scale=0.5,
  )
  want, want_count = ref.topk_routing(
      q, k, v, qs, ks, valid, window, causal, 0.5, rel, max_rel
  )
  np.testing.assert_array_equal(count, want_count)
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
  # Tokens no centroid picked get exactly 0.
  unpicked = (np.swapaxes(want_count, 1, 2) == 0) | ~valid[..., None]
  if kc * window <= n:  # the paper's sizing leaves some tokens unpicked
    assert unpicked[valid].any()
  np.testing.assert_array_equal(np.asarray(got)[unpicked], 0.0)


def test_topk_separate_keys_never_read_the_future():
  """A picked query whose cluster's picked keys all lie after it gets 0.

  One cluster picks queries {0, 1} and keys {6, 7}: with a finite mask
  value the fully masked rows would average the future values.
  """
  n, w = 8, 2
  q, k, v = _qkv(n, seed=3)
  q_scores = np.zeros((B, H, n, 1), np.float32)
  k_scores = np.zeros((B, H, n, 1), np.float32)
  q_scores[..., :2, 0] = 1.0
  k_scores[..., 6:, 0] = 1.0
  run = lambda v: np.asarray(
      _topk(
          q,
          k,
          v,
          jnp.asarray(q_scores),
          jnp.asarray(k_scores),
          None,
          window=w,
          causal=True,
      )[0]
  )
  base = run(v)
  v2 = v.copy()
  v2[:, 6:] += 100.0
  np.testing.assert_array_equal(run(v2)[:, :2], base[:, :2])
  np.testing.assert_array_equal(base, 0.0)


# ---------------------------------------------------------- decode rings


@pytest.mark.parametrize("separate", [False, True])
def test_fill_rings_keeps_each_clusters_last_members(separate):
  n, k, size = 23, 3, 4
  _, keys, values = _qkv(n, seed=4)
  key_clusters = _skewed(n, k, seed=5)
  query_clusters = _skewed(n, k, seed=6) if separate else None
  rings = jax.jit(
      routing_core.fill_rings, static_argnames=("num_clusters", "size")
  )(keys, values, key_clusters, query_clusters, num_clusters=k, size=size)
  qc = key_clusters if query_clusters is None else query_clusters
  for b in range(B):
    for h in range(H):
      for c in range(k):
        # Memberships of cluster c in order: (token, is a key).
        members = [
            (t, key_clusters[b, h, t] == c)
            for t in range(n)
            if key_clusters[b, h, t] == c or qc[b, h, t] == c
        ]
        assert rings["count"][b, h, c] == len(members)
        for m, (t, is_key) in enumerate(
            members[-size:], start=max(len(members) - size, 0)
        ):
          slot = m % size
          assert rings["member"][b, h, c, slot] == m
          assert rings["is_key"][b, h, c, slot] == is_key
          want = keys[b, t, h] if is_key else 0.0
          np.testing.assert_array_equal(rings["key"][b, h, c, slot], want)
        if len(members) < size:
          assert (
              np.asarray(rings["member"][b, h, c, len(members) :]) == -1
          ).all()
