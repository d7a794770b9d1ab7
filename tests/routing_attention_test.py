# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.RoutingAttention: the module around the cores.

Module outputs are compared with brute-force references (tests/helpers)
fed the module's own projections and centroids; cached decoding and prefill
with teacher forcing; causality by perturbing the future. The module tests
run with centroids that have been through EMA updates, so the k-means state
is not the initial one. The pure cores have their own tests
(routing_core_test.py).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import modules
from helpers import references as ref
import routing_jax as rj

B, H, D, F = 2, 2, 8, 12  # batch, heads, head_dim, features
_normal = ref.normal


def _masks(kind, n, seed=0):
  return ref.masks(kind, B, n, seed)


def _valid(mask, n):
  return ref.valid_of(mask, B, n)


# ------------------------------------------------------ the full module


def _module(**kw):
  settings = dict(
      num_heads=H,
      head_dim=D,
      num_clusters=3,
      window=4,
      kmeans=dict(decay=0.5),
      max_relative_position=3,
  )
  settings.update(kw)
  return modules.routing_attention(**settings)


@functools.cache
def _trained():
  """Variables (3 clusters) whose k-means state went through EMA updates.

  Initialised with share_qk=False and relative positions so the params
  include "key" and the relative tables (modules that do not use them
  ignore them).
  """
  module = _module(share_qk=False, position="relative")
  x = _normal(0, (4, B, 32, F))
  variables = nn.unbox(jax.jit(module.init)(jax.random.key(1), x[0]))
  step = jax.jit(
      lambda v, x: module.apply(v, x, train=True, mutable=["kmeans"])[1]
  )
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
  Returns (output, top-k counts or None, normalised keys, key scores).
  """
  params = variables["params"]
  mu = np.asarray(variables["kmeans"]["kmeans"]["centroids"], np.float64)
  x = np.asarray(x, np.float64)
  b, n, _ = x.shape
  w = lambda name: np.asarray(params[name]["kernel"], np.float64)
  heads = lambda a: a.reshape(b, n, module.num_heads, module.head_dim)
  qn = ref.ln(heads(x @ w("query")))
  kn = qn if module.config.share_qk else ref.ln(heads(x @ w("key")))
  v = heads(x @ w("value"))
  qr, kr = (
      (ref.rope(qn), ref.rope(kn))
      if module.position_kind == "rope"
      else (qn, kn)
  )
  rel = None
  if module.position_kind == "relative":
    rel = (params["rel_key"], params["rel_value"])
  valid = _valid(mask, n)
  qs = np.einsum("bnhd,hkd->bhnk", qn, mu)
  ks = np.einsum("bnhd,hkd->bhnk", kn, mu)
  if module.config.mode == "causal":
    _check_margin(ks, valid)
    _check_margin(qs, valid)
    o = ref.causal_routing(
        qr,
        kr,
        v,
        ks.argmax(-1),
        valid,
        module.config.window,
        module.config.logit_scale,
        None if module.config.share_qk else qs.argmax(-1),
        module.config.exclude_self,
        rel,
        module.max_relative_position,
    )
    count = None
  else:
    o, count = ref.topk_routing(
        qr,
        kr,
        v,
        qs,
        ks,
        valid,
        module.config.window,
        module.causal,
        module.config.logit_scale,
        rel,
        module.max_relative_position,
    )
  return o.reshape(b, n, -1) @ w("out"), count, kn, ks


def _check_margin(scores, valid):
  """No near-ties: float64 and float32 argmax agree. scores [b, h, n, k]."""
  top2 = np.sort(scores, axis=-1)[..., -2:]
  margin = (top2[..., 1] - top2[..., 0])[
      np.broadcast_to(valid[:, None, :], scores.shape[:3])
  ]
  assert margin.min() > 1e-4, "seed gives a near-tie; pick another"


@pytest.mark.parametrize(
    "share_qk, position, mask_kind, scale, exclude",
    [
        (False, "none", "holes", 1.0, False),
        (True, "rope", "right", 0.5, False),
        (False, "relative", "right", 1.0, True),
        (True, "relative", "none", 1.0, True),
    ],
)
def test_causal_module_matches_reference(
    share_qk, position, mask_kind, scale, exclude
):
  n = 24
  module = _module(
      share_qk=share_qk,
      position=position,
      logit_scale=scale,
      window=5,
      exclude_self=exclude,
  )
  variables = _trained()
  x = _normal(2, (B, n, F))
  mask = _masks(mask_kind, n)
  (y, aux), new = jax.jit(
      functools.partial(
          module.apply, train=True, return_aux=True, mutable=["kmeans"]
      )
  )(variables, x, mask)
  want, _, kn, ks = _module_reference(module, variables, x, mask)
  np.testing.assert_allclose(y, want, atol=2e-5, rtol=1e-4)
  # The update happened, and routing with the updated centroids would have
  # assigned some tokens differently: the match above used the old ones.
  new_mu = np.asarray(new["kmeans"]["kmeans"]["centroids"], np.float64)
  assert not np.allclose(new_mu, variables["kmeans"]["kmeans"]["centroids"])
  new_clusters = np.einsum("bnhd,hkd->bhnk", kn, new_mu).argmax(-1)
  assert (new_clusters != ks.argmax(-1)).any()
  assert np.isfinite(aux["loss"]) and aux["loss"] > 0


@pytest.mark.parametrize(
    "share_qk, causal, mask_kind, position",
    [
        (True, True, "none", "relative"),
        (False, True, "right", "none"),
        (False, False, "holes", "rope"),
    ],
)
def test_topk_module_matches_reference(share_qk, causal, mask_kind, position):
  n = 24
  module = _module(
      mode="topk",
      causal=causal,
      share_qk=share_qk,
      window=6,
      position=position,
  )
  variables = _trained()
  x = _normal(3, (B, n, F))
  mask = _masks(mask_kind, n)
  y, aux = jax.jit(functools.partial(module.apply, return_aux=True))(
      variables, x, mask
  )
  want, count, _, _ = _module_reference(module, variables, x, mask)
  np.testing.assert_allclose(y, want, atol=2e-5, rtol=1e-4)
  # unselected_fraction against an independent count of never-picked valid
  # tokens (over heads and valid positions).
  valid = _valid(mask, n)
  unpicked = (count == 0) & valid[:, None, :]
  fraction = unpicked.sum() / (valid.sum() * H)
  assert fraction > 0
  np.testing.assert_allclose(aux["unselected_fraction"], fraction, rtol=1e-6)


def test_warmup_attends_densely_until_enough_updates():
  """Before `warmup_steps` k-means updates: dense causal attention (one
  cluster, every earlier member, the same positions); after: routing."""
  n = 20
  variables = _trained()  # 4 k-means updates
  x = _normal(8, (B, n, F))
  mask = _masks("holes", n)
  warm = _module(warmup_steps=5, exclude_self=True, position="relative")
  done = _module(warmup_steps=4, exclude_self=True, position="relative")
  plain = _module(exclude_self=True, position="relative")
  dense = _module(
      num_clusters=1, window=n, exclude_self=True, position="relative"
  )
  run = jax.jit(lambda m, v: m.apply(v, x, mask), static_argnums=0)
  one_cluster = {
      **variables,
      "kmeans": {
          "kmeans": jax.tree.map(
              lambda a: a[:, :1] if a.ndim > 1 else a,
              variables["kmeans"]["kmeans"],
          )
      },
  }
  np.testing.assert_allclose(
      run(warm, variables), run(dense, one_cluster), atol=1e-6
  )
  np.testing.assert_array_equal(run(done, variables), run(plain, variables))
  assert np.abs(run(warm, variables) - run(done, variables)).max() > 1e-3


# ------------------------------------------------------------- causality


CAUSALITY_CASES = [  # (n, window, share_qk, position, mask, exclude, drop)
    (37, 8, False, "none", "holes", False, 0.0),
    (24, 5, True, "rope", "right", False, 0.0),
    (64, 16, True, "none", "none", False, 0.0),
    (40, 6, False, "relative", "holes", True, 0.3),
    (33, 4, True, "relative", "right", False, 0.5),
]


def _perturb_future(rng, x, mask, i):
  x2 = x.copy()
  x2[:, i + 1 :] = rng.normal(size=x2[:, i + 1 :].shape)
  if mask is None:
    return x2, None
  mask2 = mask.copy()  # the future's padding changes too
  mask2[:, i + 1 :] = rng.random(mask2[:, i + 1 :].shape) < 0.5
  return x2, mask2


@pytest.mark.parametrize(
    "n, window, share_qk, position, mask_kind, exclude, dropout",
    CAUSALITY_CASES,
)
def test_causal_routing_future_perturbation(
    n, window, share_qk, position, mask_kind, exclude, dropout
):
  """Outputs <= i do not move when everything after i is replaced.

  The centroids went through EMA updates (see `_trained`). With attention
  dropout the same dropout key is used: the noise a past query sees must
  not depend on the future either.
  """
  module = _module(
      window=window,
      share_qk=share_qk,
      position=position,
      exclude_self=exclude,
      attention_dropout=dropout,
  )
  variables = _trained()
  rngs = {"dropout": jax.random.key(3)}

  @jax.jit
  def apply(x, mask):
    # train=True: routing uses the old centroids, the update comes after.
    y_train, _ = module.apply(
        variables, x, mask, train=True, mutable=["kmeans"], rngs=rngs
    )
    y_eval, state = module.apply(variables, x, mask, mutable=["kmeans"])
    # train=True with "kmeans" read-only: runs, no update.
    y_read_only = module.apply(variables, x, mask, train=True, rngs=rngs)
    return y_train, y_eval, y_read_only, state

  rng = np.random.default_rng(5)
  x = rng.normal(size=(B, n, F)).astype(np.float32)
  mask = _masks(mask_kind, n)
  base, base_eval, base_read_only, state = apply(x, mask)
  base = np.asarray(base)
  np.testing.assert_array_equal(base, base_read_only)
  if dropout:
    assert np.abs(base - base_eval).max() > 1e-3  # dropout acts in training
  else:
    np.testing.assert_array_equal(base, base_eval)
  # Eval (train=False) leaves the k-means state alone even when mutable.
  jax.tree.map(
      np.testing.assert_array_equal, state["kmeans"], variables["kmeans"]
  )
  for i in sorted({0, n // 3, n // 2, n - 2}):
    x2, mask2 = _perturb_future(rng, x, mask, i)
    out = np.asarray(apply(x2, mask2)[0])
    np.testing.assert_allclose(
        out[:, : i + 1], base[:, : i + 1], rtol=0, atol=1e-5
    )
    assert np.abs(out[:, i + 1 :] - base[:, i + 1 :]).max() > 1e-3


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

  The same inputs through mode="causal" show no leak.
  """
  n = 32
  topk = _module(mode="topk", window=8)
  causal = _module(window=8)
  variables = _trained()
  apply = jax.jit(
      lambda x: (topk.apply(variables, x), causal.apply(variables, x))
  )
  rng = np.random.default_rng(7)
  x = rng.normal(size=(B, n, F)).astype(np.float32)
  base_topk, base_causal = (np.asarray(a) for a in apply(x))
  leaks = {}
  for i in (n // 4, n // 2, 3 * n // 4, n - 2):
    x2, _ = _perturb_future(rng, x, None, i)
    out_topk, out_causal = (np.asarray(a) for a in apply(x2))
    leaks[i] = float(np.abs(out_topk[:, : i + 1] - base_topk[:, : i + 1]).max())
    np.testing.assert_allclose(
        out_causal[:, : i + 1], base_causal[:, : i + 1], rtol=0, atol=1e-5
    )
  print(
      "topk routing: max |change| of outputs <= i after perturbing the "
      f"future, by i: {leaks} (output scale "
      f"{np.abs(base_topk).max():.3f})"
  )
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
  module = _module(
      mode=routing,
      share_qk=False,
      window=4,
      kmeans=dict(decay=0.5, commitment_weight=1.0),
  )
  variables = _trained()
  x = _normal(13, (3, B, n, F))
  mask = jnp.asarray(_masks("holes", n))
  readout = _normal(9, (F,))

  def forward(v, x):
    (y, aux), _ = module.apply(
        v, x, mask, train=True, return_aux=True, mutable=["kmeans"]
    )
    return y, aux["loss"]

  def losses(v):
    y, aux_loss = forward(v, x[0])
    return jnp.stack([jnp.sum(jnp.sin(y @ readout)), aux_loss])

  # A central difference of the eager forward along a random unit
  # direction in parameter space. Routing is piecewise constant: the step
  # is small enough not to cross a cluster/top-w boundary on this seed
  # (checked: the difference is stable from 1e-2 down to 3e-4).
  leaves, tree = jax.tree.flatten(variables["params"])
  rng = np.random.default_rng(11)
  direction = [rng.normal(size=l.shape) for l in leaves]
  norm = np.sqrt(sum(np.sum(d**2) for d in direction))
  direction = jax.tree.unflatten(
      tree, [(d / norm).astype(np.float32) for d in direction]
  )
  eps = 1e-3
  main_loss = lambda s: np.sum(
      np.sin(
          np.asarray(
              forward(
                  {
                      **variables,
                      "params": jax.tree.map(
                          lambda a, d: a + s * d, variables["params"], direction
                      ),
                  },
                  x[0],
              )[0],
              np.float64,
          )
          @ readout
      )
  )
  return dict(
      eager=[forward(variables, xa) for xa in x],
      batched=jax.jit(jax.vmap(forward, in_axes=(None, 0)))(variables, x),
      # allow_int: the k-means update counter is an integer (its
      # "gradient" is float0).
      grads=jax.jit(jax.jacrev(losses, allow_int=True))(variables),
      direction=direction,
      finite_difference=(main_loss(eps) - main_loss(-eps)) / (2 * eps),
  )


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
  analytic = sum(
      float(jnp.vdot(g, d))
      for g, d in zip(
          jax.tree.leaves(main_grad), jax.tree.leaves(r["direction"])
      )
  )
  assert abs(analytic) > 1e-2
  np.testing.assert_allclose(analytic, r["finite_difference"], rtol=2e-2)


@pytest.mark.parametrize("routing", ["causal", "topk"])
def test_gradients_reach_params_not_kmeans(routing):
  grads = _transformed(routing)["grads"]  # leaves [2 losses, ...]
  # Gradients w.r.t. the whole variables dict: zero for the k-means state.
  for leaf in jax.tree.leaves(grads["kmeans"]):
    if leaf.dtype != jax.dtypes.float0:
      np.testing.assert_array_equal(leaf, 0.0)
  projections = ("query", "key", "value", "out")
  for name in projections:
    leaf = grads["params"][name]["kernel"]
    assert np.isfinite(leaf).all(), name
    assert np.abs(leaf[0]).max() > 0, name
  # The commitment loss alone reaches the projections of the clustered
  # vectors (through them), not the values or the output: with separate
  # Q and K both are clustered, in both modes.
  for name in projections:
    leaf = grads["params"][name]["kernel"][1]
    if name in ("query", "key"):
      assert np.abs(leaf).max() > 0, name
    else:
      np.testing.assert_array_equal(leaf, 0.0)


@pytest.mark.parametrize("routing", ["causal", "topk"])
def test_bfloat16_close_to_float32(routing):
  n = 24
  x = _normal(11, (B, n, F))
  variables = _trained()
  module = _module(mode=routing, window=6, dtype=jnp.bfloat16)
  got, new = jax.jit(
      functools.partial(module.apply, train=True, mutable=["kmeans"])
  )(variables, x)
  assert got.dtype == jnp.bfloat16
  # The float32 result is the float64 reference (checked to 2e-5 above).
  want = _module_reference(module, variables, x, None)[0]
  err = np.abs(np.asarray(got, np.float32) - want).max()
  # bf16 keeps 8 mantissa bits (rel. 4e-3 per rounding); routing scores
  # and k-means maths are float32, so only a few roundings accumulate.
  assert err < 5e-2 * np.abs(want).max(), err
  for name, leaf in new["kmeans"]["kmeans"].items():
    assert leaf.dtype == (
        jnp.int32 if name == "num_updates" else jnp.float32
    ), name
  assert not np.allclose(
      new["kmeans"]["kmeans"]["centroids"],
      variables["kmeans"]["kmeans"]["centroids"],
  )


# ------------------------------------------------------- decode, prefill


def _decoder(module):
  """jit(variables, x [b, n, F], prefill P) -> (prefill out, step outs, cache).

  Prefill feeds x[:, :P] at once (P = 0: nothing), then decode steps feed
  x[:, t] for t = P .. n−1 one at a time from that cache.
  """

  @functools.partial(jax.jit, static_argnums=2)
  def run(variables, x, prefill):
    b, n, _ = x.shape
    cache = module.init(
        jax.random.key(0),
        x[:, :1],
        decode=True,
        positions=jnp.zeros((b,), jnp.int32),
    )["cache"]
    first = jnp.zeros((b, 0, x.shape[-1]))
    if prefill:
      first, new = module.apply(
          {**variables, "cache": cache},
          x[:, :prefill],
          prefill=True,
          mutable=["cache"],
      )
      cache = new["cache"]

    def body(cache, xt_t):
      xt, t = xt_t
      y, new = module.apply(
          {**variables, "cache": cache},
          xt[:, None],
          decode=True,
          positions=jnp.full((b,), t),
          mutable=["cache"],
      )
      return new["cache"], y[:, 0]

    steps = jnp.arange(prefill, n)
    cache, ys = jax.lax.scan(
        body, cache, (jnp.swapaxes(x[:, prefill:], 0, 1), steps)
    )
    return first, jnp.swapaxes(ys, 0, 1), cache

  return run


DECODE_CASES = [  # (share_qk, exclude_self, position)
    (True, False, "relative"),
    (False, False, "rope"),
    (False, True, "relative"),
    (True, True, "none"),
]


@pytest.mark.parametrize("share_qk, exclude, position", DECODE_CASES)
def test_causal_decode_and_prefill_match_teacher_forcing(
    share_qk, exclude, position
):
  """Token-by-token decoding, and prefill-then-decode, reproduce training.

  30 steps wrap every ring (window 4) several times; the prefill of 17
  positions leaves exactly the cache that 17 decode steps leave.
  """
  n, prefill = 30, 17
  module = _module(share_qk=share_qk, exclude_self=exclude, position=position)
  variables = _trained()
  x = _normal(21, (B, n, F))
  forced = np.asarray(jax.jit(module.apply)(variables, x))
  run = _decoder(module)
  _, stepped, _ = run(variables, x, 0)
  np.testing.assert_allclose(stepped, forced, atol=1e-5, rtol=0)
  first, rest, _ = run(variables, x, prefill)
  np.testing.assert_allclose(first, forced[:, :prefill], atol=1e-5, rtol=0)
  np.testing.assert_allclose(rest, forced[:, prefill:], atol=1e-5, rtol=0)
  # The caches after `prefill` positions agree, slot by slot.
  _, _, after_steps = run(variables, x[:, :prefill], 0)
  _, _, after_prefill = run(variables, x[:, :prefill], prefill)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
      after_steps,
      after_prefill,
  )


def _topk_fast_decode_reference(module, variables, x):
  """The reference's fast decode, brute force: at step t, every centroid
  picks its top-w among positions <= t (padding, i.e. later positions,
  last); the output is row t of that routing."""
  params = variables["params"]
  mu = np.asarray(variables["kmeans"]["kmeans"]["centroids"], np.float64)
  x = np.asarray(x, np.float64)
  b, n, _ = x.shape
  w = lambda name: np.asarray(params[name]["kernel"], np.float64)
  heads = lambda a: a.reshape(b, n, module.num_heads, module.head_dim)
  qn = ref.ln(heads(x @ w("query")))
  kn = qn if module.config.share_qk else ref.ln(heads(x @ w("key")))
  v = heads(x @ w("value"))
  qs = np.einsum("bnhd,hkd->bhnk", qn, mu)
  ks = np.einsum("bnhd,hkd->bhnk", kn, mu)
  out = np.zeros((b, n, module.num_heads, module.head_dim))
  for t in range(n):
    written = np.broadcast_to(np.arange(n) <= t, (b, n))
    o, _ = ref.topk_routing(
        qn, kn, v, qs, ks, written, module.config.window, module.causal
    )
    out[:, t] = o[:, t]
  return out.reshape(b, n, -1) @ w("out")


@pytest.mark.parametrize("share_qk", [True, False])
def test_topk_decode_is_the_references_fast_decode(share_qk):
  """topk decoding re-selects among the tokens so far at every step (the
  reference's fast decode); prefill reproduces it. It differs from the
  teacher-forced outputs, which select over the whole sequence."""
  n, prefill = 14, 9
  module = _module(
      mode="topk", share_qk=share_qk, window=4, max_decode_length=n
  )
  variables = _trained()
  x = _normal(22, (B, n, F))
  want = _topk_fast_decode_reference(module, variables, x)
  run = _decoder(module)
  _, stepped, _ = run(variables, x, 0)
  np.testing.assert_allclose(stepped, want, atol=2e-5, rtol=1e-4)
  first, rest, _ = run(variables, x, prefill)
  np.testing.assert_allclose(
      np.concatenate([first, rest], 1), want, atol=2e-5, rtol=1e-4
  )
  forced = np.asarray(jax.jit(module.apply)(variables, x))
  assert np.abs(forced - want).max() > 1e-2


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, shape, mask_shape, pattern",
    [
        (dict(window=0), (2, 8, F), None, r"routing\.window=0: must be >= 1"),
        (
            dict(num_clusters=0),
            (2, 8, F),
            None,
            r"routing\.num_clusters=0: must be >= 1",
        ),
        (
            dict(mode="lsh"),
            (2, 8, F),
            None,
            r"routing\.mode='lsh': must be one of",
        ),
        (
            dict(mode="causal", causal=False),
            (2, 8, F),
            None,
            r'RoutingAttention\.config\.mode=\'causal\': "causal" needs causal',
        ),
        (
            dict(),
            (2, 8),
            None,
            r"x must have rank 3 \[batch, length, features\]",
        ),
        (dict(), (2, 8, 1, F), None, "x must have rank 3"),
        (dict(), (2, 8, F), (2, 9), r"mask must have shape \[batch, length\]"),
        (
            dict(),
            (2, 8, F),
            (2, 8, 1),
            r"mask must have shape \[batch, length\]",
        ),
        (
            dict(mode="topk", window=9),
            (2, 8, F),
            None,
            r'mode="topk" needs window <= length',
        ),
    ],
)
def test_bad_input_raises(kwargs, shape, mask_shape, pattern):
  x = jnp.ones(shape)
  mask = None if mask_shape is None else jnp.ones(mask_shape, bool)
  with pytest.raises(ValueError, match=pattern):
    _module(**kwargs).init(jax.random.key(0), x, mask)


@pytest.mark.parametrize("routing", ["causal", "topk"])
def test_warmup_switch_reads_the_count_from_before_this_steps_update(routing):
  """One rule for both update paths: a call with "kmeans" mutable writes
  its update before the attention runs, yet is dense exactly when the
  count *before* the call is below warmup_steps, as when the train step
  applies the statistics afterwards. warming_up=True / False compile one
  branch each and equal the in-graph choice. Both routing modes (top-k in
  a decoder gets the same warm-up)."""
  n = 20
  variables = _trained()  # 4 k-means updates
  x = _normal(9, (B, n, F))
  kw = dict(warmup_steps=5, position="relative", mode=routing)
  warm = _module(**kw)  # 4 updates < 5: dense
  dense = _module(**kw, warming_up=True)
  routed = _module(**kw, warming_up=False)
  plain = _module(position="relative", mode=routing)
  np.testing.assert_array_equal(
      routed.apply(variables, x), plain.apply(variables, x)
  )
  y_dense = dense.apply(variables, x)
  y_routed = routed.apply(variables, x)
  assert np.abs(y_dense - y_routed).max() > 1e-3
  np.testing.assert_array_equal(warm.apply(variables, x), y_dense)
  for mutable in (["kmeans_stats"], ["kmeans"]):
    y, new = warm.apply(variables, x, train=True, mutable=mutable)
    np.testing.assert_allclose(y, y_dense, atol=1e-6, err_msg=str(mutable))
  # The update really was written during the call.
  counts = new["kmeans"]["kmeans"]["num_updates"]
  assert (np.asarray(counts) == 5).all(), counts
