# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.nn.kmeans: the EMA update, its state flow and health.

Expected values are computed by hand from the formulas of docs/paper.md §1.2
(counts, sums, decay, Laplace smoothing), never from the library's helpers.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import routing_jax as rj
from routing_jax.nn import kmeans as km
from routing_jax.nn import kmeans_ops as ops

DECAY = 0.9
EPS = 1e-5

# Hand-made points: batch 2, length 2, heads 2, head_dim 2. The last token of
# the second sequence is padding ([9, 9], masked out).
X = np.array(
    [
        [[[2.0, 0.5], [1.0, 2.0]], [[3.0, -1.0], [4.0, 1.0]]],
        [[[0.2, 1.0], [0.0, 3.0]], [[9.0, 9.0], [9.0, 9.0]]],
    ],
    np.float32,
)  # [batch, length, heads, head_dim]
MASK = np.array([[True, True], [True, False]])
# Head 0: e1, e2. Head 1: e2, e1.
MU0 = np.array(
    [[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]], np.float32
)  # [heads, clusters, head_dim]
# By hand, argmax_c x·μ_c over the three valid tokens of each head:
#   head 0: [2,.5]->0, [3,-1]->0, [.2,1]->1
#   head 1: [1,2]->0 (2>1), [4,1]->1 (4>1), [0,3]->0
COUNTS = np.array([[2.0, 1.0], [2.0, 1.0]])
SUMS = np.array([[[5.0, -0.5], [0.2, 1.0]], [[1.0, 5.0], [4.0, 1.0]]])


def _hand_state(prior_count):
  """The state a KMeans with this prior has when its centroids are MU0."""
  return {
      "centroids": jnp.asarray(MU0),
      "ema_count": jnp.full((2, 2), prior_count, jnp.float32),
      "ema_sums": jnp.asarray(MU0 * (prior_count if prior_count else 1.0)),
      # Past the first update: data_init would not apply.
      "num_updates": jnp.ones((2,), jnp.int32),
  }


def _module(prior_count=0.0, **kw):
  return rj.KMeans(
      num_heads=2,
      num_clusters=2,
      head_dim=2,
      decay=DECAY,
      epsilon=EPS,
      prior_count=prior_count,
      **kw,
  )


@pytest.mark.parametrize("prior_count", [0.0, 1.0])
def test_one_ema_step_closed_form(prior_count):
  module = _module(prior_count, commitment_weight=1.0)
  out, new = module.apply(
      {"kmeans": _hand_state(prior_count)},
      jnp.asarray(X),
      jnp.asarray(MASK),
      update=True,
      mutable=["kmeans"],
  )
  # assignments are [batch, heads, length].
  np.testing.assert_array_equal(out.assignments[0], [[0, 0], [0, 1]])
  np.testing.assert_array_equal(np.asarray(out.assignments)[1, :, 0], [1, 0])
  # Routing scores use the centroids from before the update.
  np.testing.assert_allclose(out.scores[0, 0, 0], [2.0, 0.5])
  np.testing.assert_allclose(out.scores[0, 1, 1], [1.0, 4.0])

  # ema_count = λ·prior + (1−λ)·count, ema_sums = λ·sums0 + (1−λ)·sum,
  # by hand:
  if prior_count == 0.0:
    ema_count = np.array([[0.2, 0.1], [0.2, 0.1]])
  else:
    ema_count = np.array([[1.1, 1.0], [1.1, 1.0]])
  ema_sums = np.array([[[1.4, -0.05], [0.02, 1.0]], [[0.1, 1.4], [1.3, 0.1]]])
  np.testing.assert_allclose(ema_count, DECAY * prior_count + 0.1 * COUNTS)
  total = ema_count.sum(-1, keepdims=True)
  smoothed = (ema_count + EPS) / (total + 2 * EPS) * total
  centroids = ema_sums / smoothed[..., None]
  state = new["kmeans"]
  np.testing.assert_allclose(state["ema_count"], ema_count, rtol=1e-6)
  np.testing.assert_allclose(state["ema_sums"], ema_sums, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(state["centroids"], centroids, rtol=1e-5)
  if prior_count == 0.0:
    # The reference's start-up quirk: centroids ~1/(1−λ) times too long.
    assert np.linalg.norm(centroids[0, 0]) > 6.0

  # Commitment loss: mean over the 3·2·2 valid elements of ‖x − μ_a‖², by
  # hand 1.25 + 5 + .04 (head 0) and 2 + 10 + 4 (head 1).
  np.testing.assert_allclose(out.loss, 22.29 / 12, rtol=1e-6)
  # Cluster health of this batch: counts [2, 1] in both heads.
  p = np.array([2 / 3, 1 / 3])
  np.testing.assert_allclose(
      out.stats["entropy"], -np.sum(p * np.log(p)), rtol=1e-6
  )
  np.testing.assert_allclose(out.stats["max_share"], 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(out.stats["empty_fraction"], 0.0)


def test_pure_ema_update_matches_formula():
  """The pure function, on random statistics, against the formula."""
  rng = np.random.default_rng(0)
  count0 = rng.uniform(0, 3, (2, 4))
  sums0 = rng.normal(size=(2, 4, 3))
  counts = rng.integers(0, 5, (2, 4)).astype(np.float64)
  sums = rng.normal(size=(2, 4, 3))
  state = ops.EMAState(
      jnp.zeros((2, 4, 3)),
      jnp.asarray(count0, jnp.float32),
      jnp.asarray(sums0, jnp.float32),
  )
  new = ops.ema_update(
      state,
      jnp.asarray(counts, jnp.float32),
      jnp.asarray(sums, jnp.float32),
      0.99,
      epsilon=1e-3,
  )
  c = 0.99 * count0 + 0.01 * counts
  s = 0.99 * sums0 + 0.01 * sums
  n = c.sum(-1, keepdims=True)
  smoothed = (c + 1e-3) / (n + 4e-3) * n
  np.testing.assert_allclose(new.ema_count, c, rtol=1e-5)
  np.testing.assert_allclose(new.ema_sums, s, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      new.centroids, s / smoothed[..., None], rtol=1e-4, atol=1e-5
  )


@pytest.mark.parametrize("prior_count", [0.0, 1.0])
def test_init_state_and_no_update_during_init(prior_count):
  module = _module(prior_count)
  x = jnp.asarray(X)
  v_upd = nn.unbox(module.init(jax.random.key(3), x, update=True))
  v_plain = nn.unbox(module.init(jax.random.key(3), x))
  jax.tree.map(np.testing.assert_array_equal, v_upd, v_plain)
  state = v_upd["kmeans"]
  np.testing.assert_array_equal(
      state["ema_count"], np.full((2, 2), prior_count)
  )
  mu = np.asarray(state["centroids"])
  np.testing.assert_allclose(
      state["ema_sums"], mu * (prior_count if prior_count else 1.0)
  )
  # Initial centroids are LayerNorm'd: zero mean, norm √d per centroid (up
  # to the LayerNorm epsilon).
  np.testing.assert_allclose(mu.mean(-1), 0.0, atol=1e-6)
  np.testing.assert_allclose(
      np.linalg.norm(mu, axis=-1), math.sqrt(2), rtol=1e-3
  )
  assert state["centroids"].dtype == jnp.float32


def test_no_update_in_eval_or_when_not_mutable():
  module = _module(1.0)
  variables = {"kmeans": _hand_state(1.0)}
  x, mask = jnp.asarray(X), jnp.asarray(MASK)
  # Eval: mutable but update=False.
  out_eval, new = module.apply(
      variables, x, mask, update=False, mutable=["kmeans"]
  )
  jax.tree.map(np.testing.assert_array_equal, new, variables)
  # update=True but "kmeans" not mutable: runs, same outputs, no state.
  out_ro = module.apply(variables, x, mask, update=True)
  jax.tree.map(np.testing.assert_array_equal, out_ro, out_eval)
  # Sanity: with both, the state does change.
  _, changed = module.apply(variables, x, mask, update=True, mutable=["kmeans"])
  assert not np.allclose(changed["kmeans"]["centroids"], MU0)


def test_commitment_loss_gradient_reaches_x():
  module = _module(0.0, commitment_weight=0.5)
  variables = {"kmeans": _hand_state(0.0)}
  mask = jnp.asarray(MASK)
  loss = lambda x: module.apply(variables, x, mask).loss
  g = np.asarray(jax.grad(loss)(jnp.asarray(X)))
  # d/dx of β·Σ‖x − μ_a‖²/12 is 2β(x − μ_a)/12 at valid tokens, 0 at
  # padding.
  assigned = np.array([[[0, 0], [0, 1]], [[1, 0], [0, 0]]])  # [b, n, h]
  mu_a = np.stack([MU0[h][assigned[..., h]] for h in range(2)], axis=2)
  expected = 2 * 0.5 * (X - mu_a) / 12 * MASK[..., None, None]
  np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7)


def _kmeans_grads(loss_of_output):
  """Gradient of loss_of_output(KMeansOutput) w.r.t. the variables dict."""
  module = _module(0.0, commitment_weight=1.0)

  state = _hand_state(0.0)
  counter = state.pop("num_updates")  # an integer: not differentiable

  def loss(v, x):
    v = {"kmeans": dict(v["kmeans"], num_updates=counter)}
    out, _ = module.apply(
        v, x, jnp.asarray(MASK), update=True, mutable=["kmeans"]
    )
    return loss_of_output(out)

  return jax.grad(loss)({"kmeans": state}, jnp.asarray(X))


def test_gradients_never_reach_kmeans_state():
  # The commitment loss depends on the centroids only through sg(μ).
  g = _kmeans_grads(lambda out: out.loss)
  for leaf in jax.tree.leaves(g):
    np.testing.assert_array_equal(leaf, 0.0)


def test_scores_carry_no_gradient_to_centroids():
  g = _kmeans_grads(lambda out: jnp.sum(out.scores))
  for leaf in jax.tree.leaves(g):
    np.testing.assert_array_equal(leaf, 0.0)


def _ln(a):
  a = a - a.mean(-1, keepdims=True)
  return a / np.sqrt((a**2).mean(-1, keepdims=True) + 1e-6)


def _blobs(rng, directions, per_blob, spread=0.25):
  """Points on the √d sphere around each direction: [k, per_blob, d]."""
  pts = directions[:, None, :] + spread * rng.normal(
      size=(len(directions), per_blob, directions.shape[-1])
  )
  return _ln(pts)


def _blob_batches(seed, k, d, per, steps):
  rng = np.random.default_rng(seed)
  directions = _ln(rng.normal(size=(k, d)))
  batches = np.stack([
      _blobs(rng, directions, per).reshape(1, k * per, 1, d)
      for _ in range(steps)
  ]).astype(np.float32)
  return directions, batches


@functools.cache
def _ema_runner(num_clusters, **kw):
  module = rj.KMeans(
      num_heads=1, num_clusters=num_clusters, head_dim=8, decay=0.9, **kw
  )

  @jax.jit
  def run(variables, batches):
    """EMA steps over batches [steps, 1, length, 1, d] in one compile."""

    def step(v, x):
      return module.apply(v, x, update=True, mutable=["kmeans"])[1], None

    return jax.lax.scan(step, variables, batches)[0]

  return module, run


def _converge(seed, num_clusters=8, per=10, steps=100, **kw):
  """Runs the library's own init and EMA on separated blobs.

  Returns (module, final variables, blob directions).
  """
  d = 8
  directions, batches = _blob_batches(seed, num_clusters, d, per, steps)
  module, run = _ema_runner(num_clusters, **kw)
  variables = nn.unbox(module.init(jax.random.key(seed), batches[0]))
  return module, run(variables, jnp.asarray(batches)), directions


def _check_converged(module, final, directions):
  k, d = directions.shape
  test = _blobs(np.random.default_rng(1), directions, 200)  # [k, 200, d]
  blob_means = test.mean(axis=1)
  out = module.apply(final, jnp.asarray(test.reshape(1, -1, 1, d), jnp.float32))
  assign = np.asarray(out.assignments).reshape(k, 200)
  # Every blob goes to its own centroid (a few points of neighbouring
  # blobs overlap: at least 99% of each blob).
  owners = np.array([np.bincount(a, minlength=k).argmax() for a in assign])
  assert sorted(owners.tolist()) == list(range(k))
  assert (assign == owners[:, None]).mean() >= 0.99
  centroids = np.asarray(final["kmeans"]["centroids"][0])
  err = np.linalg.norm(centroids[owners] - blob_means, axis=-1)
  assert err.max() < 0.15, err  # blob means have norm ≈ 2.76
  np.testing.assert_allclose(out.stats["entropy"], math.log(k), rtol=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_library_init_converges_on_separated_blobs(seed):
  """Data-initialised centroids and dead-cluster revival, from `init`.

  8 clusters, 8 blobs, 100 steps: every blob gets its own centroid.
  """
  module, final, directions = _converge(
      seed, prior_count=1.0, data_init=True, revive_threshold=0.05
  )
  _check_converged(module, final, directions)


def test_without_revival_clusters_die():
  """The failure revival fixes: random init, argmax, prior count 1.

  Measured over the same 4 seeds: some blob shares a centroid with another
  and some centroid never wins a token.
  """
  dead = []
  for seed in range(4):
    module, final, directions = _converge(seed, prior_count=1.0)
    k, d = directions.shape
    test = _blobs(np.random.default_rng(1), directions, 50)
    out = module.apply(
        final, jnp.asarray(test.reshape(1, -1, 1, d), jnp.float32)
    )
    dead.append(k - len(np.unique(np.asarray(out.assignments))))
  assert max(dead) > 0, dead


def test_reference_init_converges_on_separated_blobs():
  """prior_count=0 (the reference), random init, no revival: the start-up
  quirk (tiny smoothed counts, huge norms) revives empty clusters."""
  module, final, directions = _converge(0, num_clusters=3)
  _check_converged(module, final, directions)


def test_data_init_seeds_from_the_first_batch():
  module = _module(1.0, data_init=True)
  x, mask = jnp.asarray(X), jnp.asarray(MASK)
  variables = nn.unbox(module.init(jax.random.key(0), x))
  assert int(variables["kmeans"]["num_updates"][0]) == 0
  _, new = module.apply(variables, x, mask, update=True, mutable=["kmeans"])
  seeds = np.asarray(ops.sample_vectors(x, mask, 2))  # [heads, 2, d]
  # The seeds are distinct valid tokens (never the [9, 9] padding).
  valid = np.asarray(X)[np.asarray(MASK)]  # [3, heads, d]
  for h in range(2):
    rows = [tuple(r) for r in valid[:, h]]
    assert len({tuple(s) for s in seeds[h]}) == 2
    assert all(tuple(s) in rows for s in seeds[h])
  # Then one ordinary EMA step from (seeds, count 1), by the formula, with
  # the assignments of the *random* centroids that routed this batch.
  out = module.apply(variables, x, mask)
  onehot = (
      np.eye(2)[np.asarray(out.assignments)]
      * np.asarray(MASK)[:, None, :, None]
  )  # [b, h, n, k]
  counts = onehot.sum((0, 2))
  sums = np.einsum("bhnk,bnhd->hkd", onehot, np.asarray(X, np.float64))
  ema_count = DECAY * 1.0 + 0.1 * counts
  ema_sums = DECAY * seeds + 0.1 * sums
  total = ema_count.sum(-1, keepdims=True)
  smoothed = (ema_count + EPS) / (total + 2 * EPS) * total
  np.testing.assert_allclose(
      new["kmeans"]["centroids"], ema_sums / smoothed[..., None], rtol=1e-5
  )
  assert int(new["kmeans"]["num_updates"][0]) == 1
  # The second update is an ordinary one: no re-seeding.
  _, newer = module.apply(new, x, mask, update=True, mutable=["kmeans"])
  np.testing.assert_allclose(
      newer["kmeans"]["ema_count"],
      DECAY * ema_count + 0.1 * _counts(module, new, x, mask),
      rtol=1e-5,
  )


def _counts(module, variables, x, mask):
  out = module.apply(variables, x, mask)
  onehot = (
      np.eye(2)[np.asarray(out.assignments)]
      * np.asarray(mask)[:, None, :, None]
  )
  return onehot.sum((0, 2))


def test_dead_cluster_is_revived_from_the_worst_served_token():
  # Head 0's cluster 1 has an EMA count far below the mean.
  state = _hand_state(1.0)
  state["ema_count"] = jnp.asarray([[10.0, 0.01], [5.0, 5.0]])
  state["ema_sums"] = state["ema_count"][..., None] * MU0
  module = _module(1.0, revive_threshold=0.1)
  x, mask = jnp.asarray(X), jnp.asarray(MASK)
  _, new = module.apply(
      {"kmeans": state}, x, mask, update=True, mutable=["kmeans"]
  )
  # Head 0 scores with MU0 = (e1, e2): best scores 2, 3, 1 for the valid
  # tokens [2, .5], [3, -1], [.2, 1]; the worst served is [.2, 1].
  counts = np.array([[2.0, 1.0], [2.0, 1.0]])
  ema_count = DECAY * np.asarray(state["ema_count"]) + 0.1 * counts
  mean = ema_count[0].mean()
  assert ema_count[0, 1] < 0.1 * mean  # dead after the update
  np.testing.assert_allclose(
      new["kmeans"]["ema_count"][0], [ema_count[0, 0], 0.2 * mean], rtol=1e-5
  )
  np.testing.assert_allclose(
      new["kmeans"]["centroids"][0, 1], [0.2, 1.0], rtol=1e-3
  )
  # Head 1 has no dead cluster and is untouched by revival.
  np.testing.assert_allclose(
      new["kmeans"]["ema_count"][1], ema_count[1], rtol=1e-6
  )


def test_route_many_runs_one_update_per_set_in_order():
  """Queries and keys clustered apart: two EMA steps, summed losses."""
  module = _module(1.0, commitment_weight=1.0)
  state = _hand_state(1.0)
  x, mask = jnp.asarray(X), jnp.asarray(MASK)
  y = jnp.asarray(X[:, :, ::-1])  # another set (heads swapped)
  (out_x, out_y), new = module.apply(
      {"kmeans": state},
      (x, y),
      mask,
      update=True,
      mutable=["kmeans"],
      method=module.route_many,
  )
  single_x = module.apply({"kmeans": state}, x, mask)
  single_y = module.apply({"kmeans": state}, y, mask)
  # Both sets are routed with the old centroids.
  np.testing.assert_array_equal(out_x.assignments, single_x.assignments)
  np.testing.assert_array_equal(out_y.assignments, single_y.assignments)
  # Two sequential EMA steps: first x's statistics, then y's.
  _, after_x = module.apply(
      {"kmeans": state}, x, mask, update=True, mutable=["kmeans"]
  )
  _, after_xy = module.apply(after_x, y, mask, update=True, mutable=["kmeans"])
  for name in ("centroids", "ema_count", "ema_sums"):
    np.testing.assert_allclose(
        new["kmeans"][name], after_xy["kmeans"][name], rtol=1e-6
    )
  np.testing.assert_allclose(
      out_x.loss + out_y.loss, single_x.loss + single_y.loss, rtol=1e-6
  )


@pytest.mark.parametrize(
    "counts, entropy, empty, max_share",
    [
        ([[5, 5, 5, 5]], math.log(4), 0.0, 0.25),
        ([[10, 0, 0, 0]], 0.0, 0.75, 1.0),
        (
            [[3, 1, 0, 0]],
            -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)),
            0.5,
            0.75,
        ),
        # Two heads are averaged.
        ([[2, 2, 0, 0], [4, 0, 0, 0]], math.log(2) / 2, 0.625, 0.75),
    ],
)
def test_cluster_health_hand_made(counts, entropy, empty, max_share):
  health = ops.cluster_health(jnp.asarray(counts, jnp.float32))
  np.testing.assert_allclose(health["entropy"], entropy, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(health["empty_fraction"], empty)
  np.testing.assert_allclose(health["max_share"], max_share, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(num_clusters=0), "num_clusters must be >= 1"),
        (dict(num_clusters=2, decay=1.0), r"decay must be in \[0, 1\)"),
        (dict(num_clusters=2, prior_count=-1.0), "prior_count must be >= 0"),
        (
            dict(num_clusters=2, revive_threshold=0.5),
            r"revive_threshold must be in \[0, 0.5\)",
        ),
    ],
)
def test_bad_settings_raise(kwargs, pattern):
  module = rj.KMeans(num_heads=2, head_dim=2, **kwargs)
  with pytest.raises(ValueError, match=pattern):
    module.init(jax.random.key(0), jnp.asarray(X))


def test_route_many_fits_only_the_chosen_sets():
  """fit=(False, True): both sets are assigned, only the second is learned."""
  module = _module(1.0)
  state = _hand_state(1.0)
  x, mask = jnp.asarray(X), jnp.asarray(MASK)
  y = jnp.asarray(X[:, :, ::-1])
  (out_x, _), new = module.apply(
      {"kmeans": state},
      (x, y),
      mask,
      update=True,
      mutable=["kmeans"],
      fit=(False, True),
      method=module.route_many,
  )
  np.testing.assert_array_equal(
      out_x.assignments, module.apply({"kmeans": state}, x, mask).assignments
  )
  _, only_y = module.apply(
      {"kmeans": state}, y, mask, update=True, mutable=["kmeans"]
  )
  jax.tree.map(np.testing.assert_array_equal, new, only_y)
  with pytest.raises(ValueError, match="fit must name"):
    module.apply(
        {"kmeans": state},
        (x, y),
        mask,
        fit=(False, False),
        method=module.route_many,
    )


def test_statistics_of_two_halves_merge_into_the_whole_batchs_update():
  """Deferred statistics ("kmeans_stats" mutable) of two half batches,
  merged and applied once, equal the immediate update on the whole batch
  (revival on, so the candidates matter too)."""
  module = _module(1.0, revive_threshold=0.3)
  state = _hand_state(1.0)
  state["ema_count"] = jnp.asarray([[10.0, 0.01], [5.0, 5.0]])
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(4, 3, 2, 2)), jnp.float32)
  mask = jnp.asarray(rng.random((4, 3)) < 0.8)
  _, whole = module.apply(
      {"kmeans": state}, x, mask, update=True, mutable=["kmeans"]
  )
  halves = []
  for rows in (slice(0, 2), slice(2, 4)):
    _, new = module.apply(
        {"kmeans": state},
        x[rows],
        mask[rows],
        update=True,
        mutable=[km.STATS_COLLECTION],
    )
    assert set(new) == {km.STATS_COLLECTION}  # the state is left alone
    halves.append(new[km.STATS_COLLECTION])
  merged = ops.merge_statistics(*halves)
  np.testing.assert_allclose(merged["counts"].sum(), mask.sum() * 2)
  applied = ops.apply_statistics(state, merged, module.settings())
  for name in ("centroids", "ema_count", "ema_sums", "num_updates"):
    np.testing.assert_allclose(
        applied[name], whole["kmeans"][name], rtol=1e-5, atol=1e-6, err_msg=name
    )
  # Head 0's cluster 1 was dead and was revived from the worst-served token.
  assert not np.allclose(applied["centroids"][0, 1], MU0[0, 1])
