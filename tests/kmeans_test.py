"""Tests for routing_jax.kmeans: the EMA update, its state flow and health.

Expected values are computed by hand from the formulas of reference §1.2
(counts, sums, decay, Laplace smoothing), never from the library's helpers.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import routing_jax as rj
from routing_jax import kmeans as km

DECAY = 0.9
EPS = 1e-5

# Hand-made points: batch 2, length 2, heads 2, head_dim 2. The last token of
# the second sequence is padding ([9, 9], masked out).
X = np.array([
    [[[2.0, 0.5], [1.0, 2.0]], [[3.0, -1.0], [4.0, 1.0]]],
    [[[0.2, 1.0], [0.0, 3.0]], [[9.0, 9.0], [9.0, 9.0]]],
], np.float32)  # [batch, length, heads, head_dim]
MASK = np.array([[True, True], [True, False]])
# Head 0: e1, e2. Head 1: e2, e1.
MU0 = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]],
               np.float32)  # [heads, clusters, head_dim]
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
  }


def _module(prior_count=0.0, **kw):
  return rj.KMeans(num_heads=2, num_clusters=2, head_dim=2, decay=DECAY,
                   epsilon=EPS, prior_count=prior_count, **kw)


@pytest.mark.parametrize("prior_count", [0.0, 1.0])
def test_one_ema_step_closed_form(prior_count):
  module = _module(prior_count, commitment_weight=1.0)
  out, new = module.apply({"kmeans": _hand_state(prior_count)},
                          jnp.asarray(X), jnp.asarray(MASK), update=True,
                          mutable=["kmeans"])
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
  ema_sums = np.array([[[1.4, -0.05], [0.02, 1.0]],
                       [[0.1, 1.4], [1.3, 0.1]]])
  np.testing.assert_allclose(ema_count, DECAY * prior_count + 0.1 * COUNTS)
  total = ema_count.sum(-1, keepdims=True)
  smoothed = (ema_count + EPS) / (total + 2 * EPS) * total
  centroids = ema_sums / smoothed[..., None]
  state = new["kmeans"]
  np.testing.assert_allclose(state["ema_count"], ema_count, rtol=1e-6)
  np.testing.assert_allclose(state["ema_sums"], ema_sums, rtol=1e-6,
                             atol=1e-7)
  np.testing.assert_allclose(state["centroids"], centroids, rtol=1e-5)
  if prior_count == 0.0:
    # The reference's start-up quirk: centroids ~1/(1−λ) times too long.
    assert np.linalg.norm(centroids[0, 0]) > 6.0

  # Commitment loss: mean over the 3·2·2 valid elements of ‖x − μ_a‖², by
  # hand 1.25 + 5 + .04 (head 0) and 2 + 10 + 4 (head 1).
  np.testing.assert_allclose(out.loss, 22.29 / 12, rtol=1e-6)
  # Cluster health of this batch: counts [2, 1] in both heads.
  p = np.array([2 / 3, 1 / 3])
  np.testing.assert_allclose(out.stats["entropy"], -np.sum(p * np.log(p)),
                             rtol=1e-6)
  np.testing.assert_allclose(out.stats["max_share"], 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(out.stats["empty_fraction"], 0.0)


def test_pure_ema_update_matches_formula():
  """The pure function, on random statistics, against the formula."""
  rng = np.random.default_rng(0)
  count0 = rng.uniform(0, 3, (2, 4))
  sums0 = rng.normal(size=(2, 4, 3))
  counts = rng.integers(0, 5, (2, 4)).astype(np.float64)
  sums = rng.normal(size=(2, 4, 3))
  state = km.EMAState(jnp.zeros((2, 4, 3)), jnp.asarray(count0, jnp.float32),
                      jnp.asarray(sums0, jnp.float32))
  new = km.ema_update(state, jnp.asarray(counts, jnp.float32),
                      jnp.asarray(sums, jnp.float32), 0.99, epsilon=1e-3)
  c = 0.99 * count0 + 0.01 * counts
  s = 0.99 * sums0 + 0.01 * sums
  n = c.sum(-1, keepdims=True)
  smoothed = (c + 1e-3) / (n + 4e-3) * n
  np.testing.assert_allclose(new.ema_count, c, rtol=1e-5)
  np.testing.assert_allclose(new.ema_sums, s, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new.centroids, s / smoothed[..., None],
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prior_count", [0.0, 1.0])
def test_init_state_and_no_update_during_init(prior_count):
  module = _module(prior_count)
  x = jnp.asarray(X)
  v_upd = nn.unbox(module.init(jax.random.key(3), x, update=True))
  v_plain = nn.unbox(module.init(jax.random.key(3), x))
  jax.tree.map(np.testing.assert_array_equal, v_upd, v_plain)
  state = v_upd["kmeans"]
  np.testing.assert_array_equal(state["ema_count"],
                                np.full((2, 2), prior_count))
  mu = np.asarray(state["centroids"])
  np.testing.assert_allclose(state["ema_sums"],
                             mu * (prior_count if prior_count else 1.0))
  # Initial centroids are LayerNorm'd: zero mean, norm √d per centroid (up
  # to the LayerNorm epsilon).
  np.testing.assert_allclose(mu.mean(-1), 0.0, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(mu, axis=-1), math.sqrt(2),
                             rtol=1e-3)
  assert state["centroids"].dtype == jnp.float32


def test_no_update_in_eval_or_when_not_mutable():
  module = _module(1.0)
  variables = {"kmeans": _hand_state(1.0)}
  x, mask = jnp.asarray(X), jnp.asarray(MASK)
  # Eval: mutable but update=False.
  out_eval, new = module.apply(variables, x, mask, update=False,
                               mutable=["kmeans"])
  jax.tree.map(np.testing.assert_array_equal, new, variables)
  # update=True but "kmeans" not mutable: runs, same outputs, no state.
  out_ro = module.apply(variables, x, mask, update=True)
  jax.tree.map(np.testing.assert_array_equal, out_ro, out_eval)
  # Sanity: with both, the state does change.
  _, changed = module.apply(variables, x, mask, update=True,
                            mutable=["kmeans"])
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

  def loss(v, x):
    out, _ = module.apply(v, x, jnp.asarray(MASK), update=True,
                          mutable=["kmeans"])
    return loss_of_output(out)

  return jax.grad(loss)({"kmeans": _hand_state(0.0)}, jnp.asarray(X))


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
  return a / np.sqrt((a ** 2).mean(-1, keepdims=True) + 1e-6)


def _blobs(rng, directions, per_blob, spread=0.25):
  """Points on the √d sphere around each direction: [k, per_blob, d]."""
  pts = directions[:, None, :] + spread * rng.normal(
      size=(len(directions), per_blob, directions.shape[-1]))
  return _ln(pts)


_BLOB_MODULE = rj.KMeans(num_heads=1, num_clusters=3, head_dim=8, decay=0.9)


@jax.jit
def _run_ema(variables, batches):
  """EMA steps over batches [steps, 1, length, 1, d] in one compile."""
  def step(v, x):
    return _BLOB_MODULE.apply(v, x, update=True, mutable=["kmeans"])[1], None
  return jax.lax.scan(step, variables, batches)[0]


@pytest.mark.parametrize("prior_count", [0.0, 1.0])
def test_centroids_converge_on_separated_blobs(prior_count):
  k, d, per, steps = 3, 8, 10, 100
  rng = np.random.default_rng(0)
  directions = _ln(rng.normal(size=(k, d)))
  batches = np.stack([_blobs(rng, directions, per).reshape(1, k * per, 1, d)
                      for _ in range(steps)]).astype(np.float32)
  variables = nn.unbox(_BLOB_MODULE.init(jax.random.key(0), batches[0]))
  if prior_count:
    # The state of KMeans(prior_count=1) (the update does not depend on the
    # attribute, only on the state). With a prior the argmax can leave a
    # centroid dead for good (measured: 3 of 6 random inits), so start each
    # centroid near a different blob (Forgy-style), far from its mean.
    start = _ln(directions + 1.0 * rng.normal(size=(k, d)))[None]
    variables = {"kmeans": {
        "centroids": jnp.asarray(start, jnp.float32),
        "ema_count": jnp.ones((1, k), jnp.float32),
        "ema_sums": jnp.asarray(start, jnp.float32)}}
  # prior_count=0 starts from the library's random init: the start-up quirk
  # (tiny smoothed counts) revives empty clusters.
  final = _run_ema(variables, jnp.asarray(batches))
  test = _blobs(np.random.default_rng(1), directions, 200)  # [k, 200, d]
  blob_means = test.mean(axis=1)
  out = _BLOB_MODULE.apply(final, jnp.asarray(test.reshape(1, -1, 1, d),
                                               jnp.float32))
  assign = np.asarray(out.assignments).reshape(k, 200)
  # Every blob goes to one centroid, all different: 100% accuracy.
  owners = assign[:, 0]
  assert sorted(owners.tolist()) == list(range(k))
  np.testing.assert_array_equal(assign, np.repeat(owners[:, None], 200, 1))
  centroids = np.asarray(final["kmeans"]["centroids"][0])
  err = np.linalg.norm(centroids[owners] - blob_means, axis=-1)
  assert err.max() < 0.15, err  # blob means have norm ≈ 2.76
  np.testing.assert_allclose(out.stats["entropy"], math.log(3), rtol=1e-5)


@pytest.mark.parametrize("counts, entropy, empty, max_share", [
    ([[5, 5, 5, 5]], math.log(4), 0.0, 0.25),
    ([[10, 0, 0, 0]], 0.0, 0.75, 1.0),
    ([[3, 1, 0, 0]], -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), 0.5,
     0.75),
    # Two heads are averaged.
    ([[2, 2, 0, 0], [4, 0, 0, 0]], math.log(2) / 2, 0.625, 0.75),
])
def test_cluster_health_hand_made(counts, entropy, empty, max_share):
  health = km.cluster_health(jnp.asarray(counts, jnp.float32))
  np.testing.assert_allclose(health["entropy"], entropy, rtol=1e-6,
                             atol=1e-7)
  np.testing.assert_allclose(health["empty_fraction"], empty)
  np.testing.assert_allclose(health["max_share"], max_share, rtol=1e-6)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(num_clusters=0), "num_clusters must be >= 1"),
    (dict(num_clusters=2, decay=1.0), r"decay must be in \[0, 1\)"),
    (dict(num_clusters=2, prior_count=-1.0), "prior_count must be >= 0"),
])
def test_bad_settings_raise(kwargs, pattern):
  module = rj.KMeans(num_heads=2, head_dim=2, **kwargs)
  with pytest.raises(ValueError, match=pattern):
    module.init(jax.random.key(0), jnp.asarray(X))
