# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for the random warm-up of causal routing (warmup="random").

During the warm-up every token (query and key together) joins a cluster
drawn uniformly at random, afresh for each k-means count, and the heads run
ordinary causal routing over those clusters. The tests recover the clusters
from the module's receptive field (d out[t] / d x[s] is nonzero exactly for
the keys t sees: the draw does not depend on x), check that they form a
partition of about n / window classes that changes with the count, and
compare the module with the brute-force causal routing reference fed that
partition.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import modules
from helpers import references as ref
import routing_jax as rj

B, D, F, N, WINDOW = 2, 8, 12, 24, 6


def _module(**kw):
  settings = dict(
      num_heads=1,
      head_dim=D,
      num_clusters=8,
      window=WINDOW,
      warmup_steps=5,
      warmup="random",
      share_qk=False,
  )
  settings.update(kw)
  return modules.routing_attention(**settings)


def _variables(module, count):
  x = jnp.ones((B, N, F))
  variables = nn.unbox(module.init(jax.random.key(1), x))
  kmeans = dict(variables["kmeans"]["kmeans"])
  kmeans["num_updates"] = jnp.full_like(kmeans["num_updates"], count)
  return {**variables, "kmeans": {"kmeans": kmeans}}


def _x(seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(B, N, F)))


def _seen(module, variables, x):
  """[B, N, N] bool: token t's output depends on token s."""
  jac = jax.jacrev(lambda x: module.apply(variables, x))(x)
  # [B, N, F, B, N, F] -> per example, [t, s].
  dep = np.abs(np.asarray(jac)).sum(axis=(2, 5))
  return np.stack([dep[b, :, b, :] > 0 for b in range(B)])


def _partition(seen):
  """Classes of the relation "t sees s" closed under symmetry and
  transitivity (a cluster's members chain through their windows)."""
  parent = list(range(len(seen)))

  def root(i):
    while parent[i] != i:
      i = parent[i]
    return i

  for t, s in zip(*np.nonzero(seen)):
    parent[root(t)] = root(s)
  roots = [root(i) for i in range(len(seen))]
  return np.unique(roots, return_inverse=True)[1]


def test_random_warmup_is_causal_routing_over_a_random_partition():
  module = _module()
  variables = _variables(module, count=2)
  x = _x()
  seen = _seen(module, variables, x)
  assert not np.triu(seen, 1).any()  # causal
  assert all(seen[b].diagonal().all() for b in range(B))
  clusters = np.stack([_partition(s) for s in seen])  # [B, N]
  k = -(-N // WINDOW)  # clusters of about a window each
  assert all(len(np.unique(c)) <= k for c in clusters)
  assert max(len(np.unique(c)) for c in clusters) >= 3
  # The module equals brute-force causal routing over that partition, with
  # its own projections (query and key share the cluster: one membership).
  params = variables["params"]
  w = lambda name: np.asarray(params[name]["kernel"], np.float64)
  heads = lambda a: a.reshape(B, N, 1, D)
  xs = np.asarray(x, np.float64)
  qn, kn = ref.ln(heads(xs @ w("query"))), ref.ln(heads(xs @ w("key")))
  v = heads(xs @ w("value"))
  valid = np.ones((B, N), bool)
  o = ref.causal_routing(qn, kn, v, clusters[:, None], valid, WINDOW)
  want = o.reshape(B, N, D) @ w("out")
  np.testing.assert_allclose(module.apply(variables, x), want, atol=1e-5)


def test_each_count_draws_fresh_clusters_and_a_count_repeats_its_draw():
  module = _module()
  x = _x(1)
  first = _seen(module, _variables(module, 2), x)
  again = _seen(module, _variables(module, 2), x)
  later = _seen(module, _variables(module, 3), x)
  np.testing.assert_array_equal(first, again)
  assert (first != later).any()
  # Layers (module paths) draw differently, with equal weights and counts.

  class Two(nn.Module):

    @nn.compact
    def __call__(self, x):
      return _module(name="a")(x), _module(name="b")(x)

  two = Two()
  variables = nn.unbox(two.init(jax.random.key(0), x))
  same = lambda tree: {"a": tree["a"], "b": tree["a"]}
  variables = jax.tree.map(
      lambda a: a, {c: same(t) for c, t in variables.items()}
  )
  ya, yb = two.apply(variables, x)
  assert np.abs(np.asarray(ya) - np.asarray(yb)).max() > 1e-3


def test_a_sequence_within_one_window_is_the_dense_warmup():
  """n <= window: one random cluster holding every token, which is the
  dense warm-up (every earlier token), positions and padding included."""
  n = 10
  x = jnp.asarray(np.random.default_rng(2).normal(size=(B, n, F)))
  mask = ref.masks("holes", B, n)
  for position in ("relative", "rope"):
    random = _module(window=n, position=position, max_relative_position=3)
    dense = _module(
        window=n, position=position, max_relative_position=3, warmup="dense"
    )
    variables = nn.unbox(random.init(jax.random.key(1), x))
    np.testing.assert_allclose(
        random.apply(variables, x, mask),
        dense.apply(variables, x, mask),
        atol=1e-5,
    )


def test_host_switch_and_in_graph_switch_agree():
  x = _x(3)
  for count, warm in ((2, True), (5, False)):
    graph = _module()
    host = _module(warming_up=warm)
    variables = _variables(graph, count)
    np.testing.assert_array_equal(
        graph.apply(variables, x), host.apply(variables, x)
    )
  routed = _module(warmup_steps=0)
  np.testing.assert_array_equal(
      _module(warming_up=False).apply(_variables(routed, 2), x),
      routed.apply(_variables(routed, 2), x),
  )


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(mode="topk", causal=False), r'warmup=\'random\': "random" needs'),
        (dict(warmup_window=4), r"routing\.warmup_window=4"),
        (dict(warmup="sparse"), r"routing\.warmup='sparse': must be one of"),
    ],
)
def test_bad_settings_are_refused(kw, message):
  with pytest.raises(ValueError, match=message):
    _module(**kw).init(jax.random.key(0), jnp.ones((1, 8, F)))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(mode="topk"), r'model\.routing\.warmup=.*needs mode="causal"'),
        (dict(warmup_window=16), r"model\.routing\.warmup_window=16"),
        (dict(warmup="sparse"), r"model\.routing\.warmup='sparse'"),
    ],
)
def test_model_config_names_the_field(fields, message):
  with pytest.raises(ValueError, match=message):
    rj.ModelConfig(routing={"warmup": "random", "warmup_steps": 10, **fields})
