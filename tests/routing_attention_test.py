"""Tests for routing_jax.routing_attention against brute-force references.

The references are float64 numpy loops written here from design.md §2
(causal routing: "same cluster, at or before me, among the last w of my
cluster") and reference §1.3–1.5 (topk routing: per-centroid top-w, sorted,
attend, scatter-average with +0.01, 0 for unpicked tokens). Only inputs and
parameters come from the library. The module tests run with centroids that
have been through EMA updates, so the k-means state is not the initial one.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import routing_jax as rj
from routing_jax import routing_attention as ra

B, H, D, F = 2, 2, 8, 12  # batch, heads, head_dim, features
NEG = -1e9  # the library's finite mask value: all-masked rows are uniform

_causal_core = jax.jit(ra.causal_routing_attention, static_argnames=(
    "num_clusters", "window", "logit_scale"))
_topk_core = jax.jit(ra.topk_routing_attention, static_argnames=(
    "window", "causal", "logit_scale"))


def _ln(x):
  """Parameter-free LayerNorm over the last axis (epsilon 1e-6)."""
  x = np.asarray(x, np.float64)
  x = x - x.mean(-1, keepdims=True)
  return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6)


def _rope(x, base=10000.0):
  """Rotates pairs (2i, 2i+1) by angle t·base^(−2i/d): x [b, n, h, d]."""
  n, d = x.shape[1], x.shape[-1]
  ang = np.arange(n)[:, None] * base ** (-np.arange(0, d, 2) / d)
  cos, sin = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
  out = np.empty_like(x)
  out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
  out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
  return out


def _attend(q, k, v, allowed, scale):
  """One query [d] over keys [m, d] with a finite mask, as the library."""
  logits = np.where(allowed, (k @ q) * scale, NEG)
  p = np.exp(logits - logits.max())
  return (p / p.sum()) @ v


def _causal_reference(q, k, v, clusters, valid, window, scale=1.0):
  """Dense attention under "same cluster, s <= t, among the last w".

  Args:
    q, k, v: [b, n, h, d]. clusters: [b, h, n]. valid: [b, n] bool.

  Returns:
    [b, n, h, d]; padding tokens belong to no cluster and get 0.
  """
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  b, n, h, _ = q.shape
  out = np.zeros(q.shape)
  for bi in range(b):
    for hi in range(h):
      c = clusters[bi, hi]
      for t in range(n):
        if not valid[bi, t]:
          continue
        keys = [s for s in range(t + 1) if valid[bi, s] and c[s] == c[t]]
        keys = keys[-window:]
        out[bi, t, hi] = _attend(q[bi, t, hi], k[bi, keys, hi],
                                 v[bi, keys, hi], True, scale)
  return out


def _topk_reference(q, k, v, q_scores, k_scores, valid, window, causal,
                    scale=1.0):
  """The paper's balanced routing as a loop over heads and centroids.

  Args:
    q, k, v: [b, n, h, d]. q_scores, k_scores: [b, h, n, clusters].
    valid: [b, n] bool.

  Returns:
    out [b, n, h, d] and count [b, h, n]: clusters that picked each token.
  """
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  b, n, h, _ = q.shape
  out = np.zeros(q.shape)
  count = np.zeros((b, h, n))

  def top(scores, bi):
    """Top-w positions by score, padding last (lowest index on ties)."""
    s = np.where(valid[bi], scores, -np.inf)
    return np.sort(np.argsort(-s, kind="stable")[:window])

  for bi in range(b):
    for hi in range(h):
      for c in range(q_scores.shape[-1]):
        qi = top(q_scores[bi, hi, :, c], bi)
        ki = top(k_scores[bi, hi, :, c], bi)
        for t in qi:
          allowed = valid[bi, ki] & ((ki <= t) if causal else True)
          out[bi, t, hi] += _attend(q[bi, t, hi], k[bi, ki, hi],
                                    v[bi, ki, hi], allowed, scale)
          count[bi, hi, t] += 1
  out = out / (np.swapaxes(count, 1, 2)[..., None] + 0.01)
  return out * valid[:, :, None, None], count


def _normal(seed, shape):
  """Float32 normal draws (numpy: eager jax.random compiles per shape)."""
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _masks(kind, n, seed=0):
  if kind == "none":
    return None
  if kind == "right":  # right padding, different lengths per row
    return np.arange(n)[None, :] < np.array([[n], [n - n // 3]])
  valid = np.random.default_rng(seed).random((B, n)) < 0.7  # holes
  valid[:, 0] = True
  return valid


def _valid(mask, n):
  return np.ones((B, n), bool) if mask is None else mask


def _normalized_qkv(n, seed=0):
  rng = np.random.default_rng(seed)
  q, k = (_ln(rng.normal(size=(B, n, H, D))).astype(np.float32)
          for _ in range(2))
  return q, k, rng.normal(size=(B, n, H, D)).astype(np.float32)


def _skewed_clusters(n, num_clusters, seed=0):
  """[b, h, n] ids drawn unevenly, so cluster sizes differ a lot."""
  p = np.arange(1, num_clusters + 1, dtype=np.float64) ** 2
  return np.random.default_rng(seed).choice(
      num_clusters, size=(B, H, n), p=p / p.sum()).astype(np.int32)


# -------------------------------------------------------- causal routing core


@pytest.mark.parametrize("n, window, scale, mask_kind", [
    (16, 16, 1.0, "none"), (13, 20, 0.5, "right"), (13, 13, 1.0, "holes")])
def test_causal_one_cluster_is_dense_causal(n, window, scale, mask_kind):
  q, k, v = _normalized_qkv(n)
  mask = _masks(mask_kind, n)
  valid = _valid(mask, n)
  got = _causal_core(q, k, v, jnp.zeros((B, H, n), jnp.int32), mask,
                     num_clusters=1, window=window, logit_scale=scale)
  # Dense causal attention, logits = LN(q)·LN(k) · scale.
  logits = np.einsum("bthd,bshd->bhts", q.astype(np.float64), k) * scale
  allowed = np.tril(np.ones((n, n), bool))[None, None] & valid[:, None, None]
  logits = np.where(allowed, logits, -np.inf)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  want = np.einsum("bhts,bshd->bthd", p / p.sum(-1, keepdims=True), v)
  want *= valid[:, :, None, None]
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)


CAUSAL_CORE_CASES = [  # (n, window, clusters, mask kind)
    (16, 4, 3, "none"),
    (19, 4, 3, "holes"),  # n not a multiple of w
    (16, 1, 4, "right"),  # w = 1
    (12, 20, 3, "holes"),  # w > n
    (32, 8, 2, "none"),
    (29, 5, 4, "right"),
]


@pytest.mark.parametrize("n, window, k, mask_kind", CAUSAL_CORE_CASES)
def test_causal_core_matches_brute_force_and_covers_every_token(
    n, window, k, mask_kind):
  q, k_, v = _normalized_qkv(n, seed=n)
  clusters = _skewed_clusters(n, k, seed=n)
  mask = _masks(mask_kind, n)
  valid = _valid(mask, n)
  got = np.asarray(_causal_core(q, k_, v, clusters, mask, num_clusters=k,
                                window=window, logit_scale=0.7))
  want = _causal_reference(q, k_, v, clusters, valid, window, 0.7)
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
  if window == 1:  # every token attends to itself only
    np.testing.assert_allclose(got, v * valid[..., None, None], rtol=1e-6)
  # Coverage: every valid token gets routing output, padding gets 0.
  norms = np.linalg.norm(got, axis=-1)  # [b, n, h]
  assert (norms[valid] > 1e-3).all()
  np.testing.assert_array_equal(norms[~valid], 0.0)


# ---------------------------------------------------------- topk routing core


TOPK_CORE_CASES = [  # (n, window, clusters, causal, shared, mask kind)
    (24, 6, 4, True, True, "none"),  # k·w = n, as the paper's configs
    (24, 6, 4, False, True, "holes"),
    (20, 8, 3, True, False, "right"),  # k·w > n: overlaps
    (20, 8, 3, False, False, "none"),
    (16, 12, 2, True, False, "holes"),  # w > number of valid tokens
]


@pytest.mark.parametrize("n, window, kc, causal, shared, mask_kind",
                         TOPK_CORE_CASES)
def test_topk_core_matches_brute_force(n, window, kc, causal, shared,
                                       mask_kind):
  q, k, v = _normalized_qkv(n, seed=n + 1)
  rng = np.random.default_rng(n)
  mu = _ln(rng.normal(size=(H, kc, D)))
  if shared:
    k = q
  qs = np.einsum("bnhd,hkd->bhnk", q, mu).astype(np.float32)
  ks = np.einsum("bnhd,hkd->bhnk", k, mu).astype(np.float32)
  mask = _masks(mask_kind, n)
  valid = _valid(mask, n)
  qs_j = jnp.asarray(qs)
  # With shared Q/K the library reuses the query selection for the keys.
  ks_j = qs_j if shared else jnp.asarray(ks)
  got, count = _topk_core(q, k, v, qs_j, ks_j, mask, window=window,
                          causal=causal, logit_scale=0.5)
  want, want_count = _topk_reference(q, k, v, qs, ks, valid, window, causal,
                                     0.5)
  np.testing.assert_array_equal(count, want_count)
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
  # Tokens no centroid picked get exactly 0; every picked valid token gets
  # a nonzero output.
  unpicked = (np.swapaxes(want_count, 1, 2) == 0) | ~valid[..., None]
  if kc * window <= n:  # the paper's sizing leaves some tokens unpicked
    assert unpicked[valid].any()
  np.testing.assert_array_equal(np.asarray(got)[unpicked], 0.0)
  assert (np.linalg.norm(got, axis=-1)[~unpicked] > 0).all()


# ------------------------------------------------------ the full module


def _module(**kw):
  settings = dict(num_heads=H, head_dim=D, num_clusters=3, window=4,
                  kmeans_decay=0.5)
  settings.update(kw)
  return rj.RoutingAttention(**settings)


@functools.cache
def _trained():
  """Variables (3 clusters) whose k-means state went through EMA updates.

  Initialised with share_qk=False so the params include "key" (modules that
  share Q and K ignore it).
  """
  module = _module(share_qk=False)
  x = _normal(0, (4, B, 32, F))
  variables = nn.unbox(jax.jit(module.init)(jax.random.key(1), x[0]))
  step = jax.jit(lambda v, x: module.apply(v, x, train=True,
                                           mutable=["kmeans"])[1])
  trained = variables
  for xb in x:
    trained = {**trained, **step(trained, xb)}
  before = variables["kmeans"]["kmeans"]
  after = trained["kmeans"]["kmeans"]
  assert np.abs(after["centroids"] - before["centroids"]).min() > 1e-4
  assert np.abs(after["ema_count"] - before["ema_count"]).min() > 1e-4
  return trained


def _module_reference(module, variables, x, mask):
  """Projections + LayerNorm + brute-force routing + out projection.

  Uses the centroids in `variables` (from before the call's update).
  """
  params = variables["params"]
  mu = np.asarray(variables["kmeans"]["kmeans"]["centroids"], np.float64)
  x = np.asarray(x, np.float64)
  b, n, _ = x.shape
  w = lambda name: np.asarray(params[name]["kernel"], np.float64)
  heads = lambda a: a.reshape(b, n, module.num_heads, module.head_dim)
  qn = _ln(heads(x @ w("query")))
  kn = qn if module.share_qk else _ln(heads(x @ w("key")))
  v = heads(x @ w("value"))
  qr, kr = (qn, kn) if module.position == "none" else (_rope(qn), _rope(kn))
  valid = _valid(mask, n)
  qs = np.einsum("bnhd,hkd->bhnk", qn, mu)
  ks = np.einsum("bnhd,hkd->bhnk", kn, mu)
  if module.mode == "causal":
    _check_margin(ks, valid)
    o = _causal_reference(qr, kr, v, ks.argmax(-1), valid, module.window,
                          module.logit_scale)
    count = None
  else:
    o, count = _topk_reference(qr, kr, v, qs, ks, valid, module.window,
                               module.causal, module.logit_scale)
  return o.reshape(b, n, -1) @ w("out"), count, kn, ks


def _check_margin(scores, valid):
  """No near-ties: float64 and float32 argmax agree. scores [b, h, n, k]."""
  top2 = np.sort(scores, axis=-1)[..., -2:]
  margin = (top2[..., 1] - top2[..., 0])[np.broadcast_to(
      valid[:, None, :], scores.shape[:3])]
  assert margin.min() > 1e-4, "seed gives a near-tie; pick another"


@pytest.mark.parametrize("share_qk, position, mask_kind, scale", [
    (False, "none", "holes", 1.0),
    (True, "rope", "right", 0.5),
])
def test_causal_module_matches_reference(share_qk, position, mask_kind,
                                         scale):
  n = 24
  module = _module(share_qk=share_qk, position=position, logit_scale=scale,
                   window=5)
  variables = _trained()
  x = _normal(2, (B, n, F))
  mask = _masks(mask_kind, n)
  (y, aux), new = jax.jit(functools.partial(
      module.apply, train=True, return_aux=True, mutable=["kmeans"]))(
          variables, x, mask)
  want, _, kn, ks = _module_reference(module, variables, x, mask)
  np.testing.assert_allclose(y, want, atol=2e-5, rtol=1e-4)
  # The update happened, and routing with the updated centroids would have
  # assigned some tokens differently: the match above used the old ones.
  new_mu = np.asarray(new["kmeans"]["kmeans"]["centroids"], np.float64)
  assert not np.allclose(new_mu, variables["kmeans"]["kmeans"]["centroids"])
  new_clusters = np.einsum("bnhd,hkd->bhnk", kn, new_mu).argmax(-1)
  assert (new_clusters != ks.argmax(-1)).any()
  assert np.isfinite(aux["loss"]) and aux["loss"] > 0


@pytest.mark.parametrize("share_qk, causal, mask_kind", [
    (True, True, "none"), (False, True, "right"), (False, False, "holes")])
def test_topk_module_matches_reference(share_qk, causal, mask_kind):
  n = 24
  module = _module(routing="topk", causal=causal, share_qk=share_qk,
                   window=6)
  variables = _trained()
  x = _normal(3, (B, n, F))
  mask = _masks(mask_kind, n)
  y, aux = jax.jit(functools.partial(module.apply, return_aux=True))(
      variables, x, mask)
  want, count, _, _ = _module_reference(module, variables, x, mask)
  np.testing.assert_allclose(y, want, atol=2e-5, rtol=1e-4)
  # unselected_fraction against an independent count of never-picked valid
  # tokens (over heads and valid positions).
  valid = _valid(mask, n)
  unpicked = (count == 0) & valid[:, None, :]
  fraction = unpicked.sum() / (valid.sum() * H)
  assert fraction > 0
  np.testing.assert_allclose(aux["unselected_fraction"], fraction,
                             rtol=1e-6)


# ------------------------------------------------------------- causality


CAUSALITY_CASES = [  # (n, window, share_qk, position, mask kind)
    (37, 8, False, "none", "holes"),
    (24, 5, True, "rope", "right"),
    (64, 16, True, "none", "none"),
]


def _perturb_future(rng, x, mask, i):
  x2 = x.copy()
  x2[:, i + 1:] = rng.normal(size=x2[:, i + 1:].shape)
  if mask is None:
    return x2, None
  mask2 = mask.copy()  # the future's padding changes too
  mask2[:, i + 1:] = rng.random(mask2[:, i + 1:].shape) < 0.5
  return x2, mask2


@pytest.mark.parametrize("n, window, share_qk, position, mask_kind",
                         CAUSALITY_CASES)
def test_causal_routing_future_perturbation(n, window, share_qk, position,
                                            mask_kind):
  """Outputs <= i do not move when everything after i is replaced.

  The centroids went through EMA updates (see `_trained`).
  """
  module = _module(window=window, share_qk=share_qk, position=position)
  variables = _trained()

  @jax.jit
  def apply(x, mask):
    # train=True: routing uses the old centroids, the update comes after.
    y_train, _ = module.apply(variables, x, mask, train=True,
                              mutable=["kmeans"])
    y_eval, state = module.apply(variables, x, mask, mutable=["kmeans"])
    # train=True with "kmeans" read-only: runs, no update.
    y_read_only = module.apply(variables, x, mask, train=True)
    return y_train, y_eval, y_read_only, state

  rng = np.random.default_rng(5)
  x = rng.normal(size=(B, n, F)).astype(np.float32)
  mask = _masks(mask_kind, n)
  base, base_eval, base_read_only, state = apply(x, mask)
  base = np.asarray(base)
  np.testing.assert_array_equal(base, base_eval)
  np.testing.assert_array_equal(base, base_read_only)
  # Eval (train=False) leaves the k-means state alone even when mutable.
  jax.tree.map(np.testing.assert_array_equal, state["kmeans"],
               variables["kmeans"])
  for i in sorted({0, n // 3, n // 2, n - 2}):
    x2, mask2 = _perturb_future(rng, x, mask, i)
    out = np.asarray(apply(x2, mask2)[0])
    np.testing.assert_allclose(out[:, :i + 1], base[:, :i + 1], rtol=0,
                               atol=1e-5)
    assert np.abs(out[:, i + 1:] - base[:, i + 1:]).max() > 1e-3


def test_causal_routing_gradient_receptive_field():
  """d out[i] / d x[j] == 0 for every j > i; the diagonal is nonzero."""
  n = 16
  module = _module(window=4)
  variables = _trained()
  x = _normal(6, (1, n, F))
  readout = _normal(7, (F,))
  f = lambda x: module.apply(variables, x)[0] @ readout
  jac = np.asarray(jax.jit(jax.jacrev(f))(x))[:, 0]  # [i, j, features]
  size = np.abs(jac).sum(axis=-1)
  np.testing.assert_array_equal(size[np.triu_indices(n, 1)], 0.0)
  assert (np.diag(size) > 0).all()


def test_topk_routing_leaks_the_future(record_property):
  """Documents the paper-faithful mode's future dependence (ref. §4.3).

  The same inputs through routing="causal" show no leak.
  """
  n = 32
  topk = _module(routing="topk", window=8)
  causal = _module(window=8)
  variables = _trained()
  apply = jax.jit(lambda x: (topk.apply(variables, x),
                             causal.apply(variables, x)))
  rng = np.random.default_rng(7)
  x = rng.normal(size=(B, n, F)).astype(np.float32)
  base_topk, base_causal = (np.asarray(a) for a in apply(x))
  leaks = {}
  for i in (n // 4, n // 2, 3 * n // 4, n - 2):
    x2, _ = _perturb_future(rng, x, None, i)
    out_topk, out_causal = (np.asarray(a) for a in apply(x2))
    leaks[i] = float(np.abs(out_topk[:, :i + 1] - base_topk[:, :i + 1]).max())
    np.testing.assert_allclose(out_causal[:, :i + 1], base_causal[:, :i + 1],
                               rtol=0, atol=1e-5)
  print(f"topk routing: max |change| of outputs <= i after perturbing the "
        f"future, by i: {leaks} (output scale "
        f"{np.abs(base_topk).max():.3f})")
  record_property("topk_future_leak_by_position", leaks)
  assert max(leaks.values()) > 1e-3


# ------------------------------------------- gradients, transforms, dtypes


@functools.cache
def _transformed(routing):
  """Eager, jit(vmap) and jit(grad) of one train-mode apply (done once).

  The loss is Σ sin(y·r) + β·commitment (β = 1); its two terms are
  differentiated separately (jacrev of a 2-vector: one compile) w.r.t. the
  whole variables dict, k-means state included.
  """
  n = 16
  module = _module(routing=routing, share_qk=False, window=4,
                   commitment_weight=1.0)
  variables = _trained()
  x = _normal(12, (3, B, n, F))
  mask = jnp.asarray(_masks("holes", n))
  readout = _normal(9, (F,))

  def forward(v, x):
    (y, aux), _ = module.apply(v, x, mask, train=True, return_aux=True,
                               mutable=["kmeans"])
    return y, aux["loss"]

  def losses(v):
    y, aux_loss = forward(v, x[0])
    return jnp.stack([jnp.sum(jnp.sin(y @ readout)), aux_loss])

  # A central difference of the eager forward along a random unit
  # direction in parameter space. Routing is piecewise constant: the step
  # is small enough not to cross a cluster/top-w boundary on this seed
  # (checked: the difference is stable from 3e-2 down to 3e-4).
  leaves, tree = jax.tree.flatten(variables["params"])
  rng = np.random.default_rng(11)
  direction = [rng.normal(size=l.shape) for l in leaves]
  norm = np.sqrt(sum(np.sum(d ** 2) for d in direction))
  direction = jax.tree.unflatten(
      tree, [(d / norm).astype(np.float32) for d in direction])
  eps = 1e-3
  main_loss = lambda s: np.sum(np.sin(np.asarray(forward(
      {**variables, "params": jax.tree.map(lambda a, d: a + s * d,
                                           variables["params"], direction)},
      x[0])[0], np.float64) @ readout))
  return dict(
      eager=[forward(variables, xa) for xa in x],
      batched=jax.jit(jax.vmap(forward, in_axes=(None, 0)))(variables, x),
      grads=jax.jit(jax.jacrev(losses))(variables), direction=direction,
      finite_difference=(main_loss(eps) - main_loss(-eps)) / (2 * eps))


@pytest.mark.parametrize("routing", ["causal", "topk"])
def test_jit_grad_vmap_match_eager(routing):
  """jit(vmap) equals the eager forward; jax.grad equals its derivative.

  The gradient check is a central difference of the eager forward along a
  random unit direction in parameter space: an op-by-op eager jax.grad
  would add ~5 s of compiles per mode for a weaker guarantee.
  """
  r = _transformed(routing)
  for a, (y, aux_loss) in enumerate(r["eager"]):
    np.testing.assert_allclose(r["batched"][0][a], y, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(r["batched"][1][a], aux_loss, rtol=1e-6)
  main_grad = jax.tree.map(lambda g: g[0], r["grads"]["params"])
  analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(
      jax.tree.leaves(main_grad), jax.tree.leaves(r["direction"])))
  assert abs(analytic) > 1e-2
  np.testing.assert_allclose(analytic, r["finite_difference"], rtol=2e-2)


@pytest.mark.parametrize("routing", ["causal", "topk"])
def test_gradients_reach_params_not_kmeans(routing):
  grads = _transformed(routing)["grads"]  # leaves [2 losses, ...]
  # Gradients w.r.t. the whole variables dict: zero for the k-means state.
  for leaf in jax.tree.leaves(grads["kmeans"]):
    np.testing.assert_array_equal(leaf, 0.0)
  for name, leaf in grads["params"].items():
    assert np.isfinite(leaf["kernel"]).all(), name
    assert np.abs(leaf["kernel"][0]).max() > 0, name
  # The commitment loss alone reaches the projections of the clustered
  # vectors (through x), not the values or the output. Causal routing
  # clusters the keys only (design.md §2.7); topk clusters both.
  clustered = ("key",) if routing == "causal" else ("query", "key")
  for name, leaf in grads["params"].items():
    if name in clustered:
      assert np.abs(leaf["kernel"][1]).max() > 0, name
    else:
      np.testing.assert_array_equal(leaf["kernel"][1], 0.0)


@pytest.mark.parametrize("routing", ["causal", "topk"])
def test_bfloat16_close_to_float32(routing):
  n = 24
  x = _normal(11, (B, n, F))
  variables = _trained()
  module = _module(routing=routing, window=6, dtype=jnp.bfloat16)
  got, new = jax.jit(functools.partial(module.apply, train=True,
                                       mutable=["kmeans"]))(variables, x)
  assert got.dtype == jnp.bfloat16
  # The float32 result is the float64 reference (checked to 2e-5 above).
  want = _module_reference(module, variables, x, None)[0]
  err = np.abs(np.asarray(got, np.float32) - want).max()
  # bf16 keeps 8 mantissa bits (rel. 4e-3 per rounding); routing scores
  # and k-means maths are float32, so only a few roundings accumulate.
  assert err < 5e-2 * np.abs(want).max(), err
  for leaf in jax.tree.leaves(new["kmeans"]):
    assert leaf.dtype == jnp.float32
  assert not np.allclose(new["kmeans"]["kmeans"]["centroids"],
                         variables["kmeans"]["kmeans"]["centroids"])


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, shape, mask_shape, pattern", [
    (dict(window=0), (2, 8, F), None, "window must be >= 1"),
    (dict(num_clusters=0), (2, 8, F), None, "num_clusters must be >= 1"),
    (dict(routing="lsh"), (2, 8, F), None, "routing must be one of"),
    (dict(routing="causal", causal=False), (2, 8, F), None,
     'routing="causal" requires causal=True'),
    (dict(), (2, 8), None, r"x must have rank 3 \[batch, length, features\]"),
    (dict(), (2, 8, 1, F), None, "x must have rank 3"),
    (dict(), (2, 8, F), (2, 9), r"mask must have shape \[batch, length\]"),
    (dict(), (2, 8, F), (2, 8, 1), r"mask must have shape \[batch, length\]"),
    (dict(routing="topk", window=9), (2, 8, F), None,
     r'routing="topk" needs window <= length'),
])
def test_bad_input_raises(kwargs, shape, mask_shape, pattern):
  module = _module(**kwargs)
  x = jnp.ones(shape)
  mask = None if mask_shape is None else jnp.ones(mask_shape, bool)
  with pytest.raises(ValueError, match=pattern):
    module.init(jax.random.key(0), x, mask)
