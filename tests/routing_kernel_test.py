# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The fused Pallas causal-routing kernels against the XLA path.

Everything runs in the Pallas interpreter on CPU: the same kernel bodies the
GPU compiles with Triton, executed as XLA ops. Small tiles (4 or 8 slots)
give several query and key tiles per row, so the tile ranges, the online
softmax across tiles and the scatter back to event order are exercised.

Tolerances: outputs to 1e-5 absolute (float32; the two paths sum the same
terms in different orders). Gradients to rtol 1e-5 plus an atol of 1e-5
times the largest entry of any of the compared gradients: entries that are
sums of cancelling terms sit near 0 (with w = 1, dq and dk are exactly 0 in
the XLA path and ~1e-8 from the kernel's p·(dO·v − dO·o)), where a purely
relative bound on reordered float32 sums is meaningless. Observed
differences are below 1e-6 of that scale.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common
from helpers import modules
from helpers import references as ref
import routing_jax as rj
from routing_jax.nn import routing_core
from routing_jax.nn import routing_kernel
from routing_jax.training import resume

B, H, D = 2, 2, 8


def _inputs(n, k, separate, seed):
  rng = np.random.default_rng(seed)
  q, k_ = (
      ref.ln(rng.normal(size=(B, n, H, D))).astype(np.float32) for _ in range(2)
  )
  v = rng.normal(size=(B, n, H, D)).astype(np.float32)
  key_clusters = rng.integers(0, k, (B, H, n)).astype(np.int32)
  query_clusters = (
      rng.integers(0, k, (B, H, n)).astype(np.int32) if separate else None
  )
  cotangent = rng.normal(size=(B, n, H, D)).astype(np.float32)
  return q, k_, v, key_clusters, query_clusters, cotangent


def _output_and_grads(core, q, k, v, cotangent, **kw):
  """Jitted output and the VJP of a fixed cotangent w.r.t. q, k, v."""

  def run(q, k, v):
    o, vjp = jax.vjp(lambda q, k, v: core(q, k, v, **kw), q, k, v)
    return o, vjp(cotangent)

  return jax.jit(run)(q, k, v)


def _assert_grads_close(got, want):
  scale = max(float(np.abs(w).max()) for w in want)
  assert scale > 1e-2  # not trivially 0 (w = 1 has dq = dk = 0 exactly)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * scale)


CASES = [  # n, window, clusters, mask, separate, exclude_self, block_q, block_k
    (19, 4, 3, "holes", False, False, 4, 8),  # n not a multiple of a tile
    (29, 5, 4, "right", False, True, 8, 4),  # odd w, self excluded
    (27, 6, 3, "holes", True, True, 4, 4),  # queries routed apart
    (40, 12, 2, "none", True, False, 4, 4),  # w spans several key tiles
    pytest.param(
        16, 1, 4, "right", False, False, 4, 4, marks=pytest.mark.slow
    ),  # w = 1
]


@pytest.mark.parametrize(
    "n, window, k, mask_kind, separate, exclude_self, block_q, block_k", CASES
)
def test_kernel_matches_xla_path(
    n, window, k, mask_kind, separate, exclude_self, block_q, block_k
):
  q, k_, v, key_clusters, query_clusters, cotangent = _inputs(
      n, k, separate, seed=n
  )
  mask = ref.masks(mask_kind, B, n)
  kw = dict(
      key_clusters=key_clusters,
      mask=mask,
      num_clusters=k,
      window=window,
      query_clusters=query_clusters,
      exclude_self=exclude_self,
      logit_scale=0.7,
  )
  want, want_grads = _output_and_grads(
      routing_core.causal_routing_attention, q, k_, v, cotangent, **kw
  )
  got, got_grads = _output_and_grads(
      routing_kernel.causal_routing_attention,
      q,
      k_,
      v,
      cotangent,
      block_q=block_q,
      block_k=block_k,
      interpret=True,
      **kw,
  )
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  valid = ref.valid_of(mask, B, n)
  np.testing.assert_array_equal(np.asarray(got)[~valid], 0.0)
  assert np.abs(np.asarray(want)[valid]).max() > 0.1
  _assert_grads_close(got_grads, want_grads)


@pytest.mark.slow
def test_bfloat16_kernel_close_to_xla_path():
  q, k_, v, key_clusters, _, cotangent = _inputs(24, 3, False, seed=5)
  cotangent = cotangent.astype(jnp.bfloat16)
  kw = dict(
      key_clusters=key_clusters,
      mask=None,
      num_clusters=3,
      window=6,
      dtype=jnp.bfloat16,
  )
  want, want_grads = _output_and_grads(
      routing_core.causal_routing_attention, q, k_, v, cotangent, **kw
  )
  got, got_grads = _output_and_grads(
      routing_kernel.causal_routing_attention,
      q,
      k_,
      v,
      cotangent,
      block_q=8,
      block_k=8,
      interpret=True,
      **kw,
  )
  assert got.dtype == jnp.bfloat16
  as32 = lambda a: np.asarray(a, np.float32)
  np.testing.assert_allclose(as32(got), as32(want), atol=3e-2)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(
        as32(g), as32(w), atol=5e-2 * np.abs(as32(w)).max()
    )


def test_kernels_lower_to_triton():
  """The kernel bodies lower to Triton IR for CUDA (no GPU needed).

  Checks that every op inside the kernels has a Triton lowering and that
  the tensor shapes meet Triton's rules at GPU-sized tiles; it does not
  compile the IR to PTX or run it.
  """
  n, h, d = 256, 2, 64

  def loss(q, k, v, clusters, query_clusters):
    o = routing_kernel.causal_routing_attention(
        q,
        k,
        v,
        clusters,
        None,
        num_clusters=4,
        window=64,
        query_clusters=query_clusters,
        exclude_self=True,
        dtype=jnp.bfloat16,
        interpret=False,
    )
    return jnp.sum(o.astype(jnp.float32))

  shape = jax.ShapeDtypeStruct((1, n, h, d), jnp.bfloat16)
  ids = jax.ShapeDtypeStruct((1, h, n), jnp.int32)
  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  text = (
      grad.trace(shape, shape, shape, ids, ids)
      .lower(lowering_platforms=("cuda",))
      .as_text()
  )
  for name in (
      "routing_attention_fwd",
      "routing_attention_dq",
      "routing_attention_dkv",
  ):
    assert f'name = "{name}"' in text
  assert text.count("__gpu$xla.gpu.triton") == 3


# --------------------------------------------------------------- the module


def _module(**kw):
  settings = dict(
      num_heads=H,
      head_dim=D,
      num_clusters=3,
      window=5,
      kmeans=dict(decay=0.5),
      share_qk=False,
      exclude_self=True,
      position="rope",
      kernel_block_sizes=(4, 8),
  )
  settings.update(kw)
  return modules.routing_attention(**settings)


def _variables(module, x, seed=0):
  """Random variables of the module's shapes, without compiling its init."""
  shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), x))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda s: 0.3 * rng.normal(size=s.shape).astype(s.dtype), shapes["params"]
  )
  centroids = ref.ln(
      rng.normal(size=shapes["kmeans"]["kmeans"]["centroids"].shape)
  ).astype(np.float32)
  kmeans = dict(
      centroids=centroids,
      ema_sums=centroids,
      ema_count=np.ones(centroids.shape[:2], np.float32),
      num_updates=np.ones(centroids.shape[:1], np.int32),
  )
  return {"params": params, "kmeans": {"kmeans": kmeans}}


def test_module_pallas_matches_xla():
  n, features = 23, 12
  x = ref.normal(0, (B, n, features))
  mask = ref.masks("right", B, n)
  xla, pallas = _module(), _module(implementation="pallas")
  variables = _variables(xla, x)

  def run(module):
    def loss(params, x):
      y = module.apply({**variables, "params": params}, x, mask)
      return jnp.sum(y * jnp.cos(jnp.arange(y.size)).reshape(y.shape)), y

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        variables["params"], x
    )

  (_, want), want_grads = run(xla)
  (_, got), got_grads = run(pallas)
  assert np.abs(want).max() > 0.1
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  _assert_grads_close(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(implementation="triton"), r"implementation='triton': must be"),
        (
            dict(implementation="pallas", position="relative"),
            'support position="relative"',
        ),
        (
            dict(implementation="pallas", attention_dropout=0.1),
            "support attention_dropout",
        ),
        (
            dict(
                implementation="pallas",
                mode="topk",
                causal=False,
                exclude_self=False,  # refused with topk on its own
            ),
            r'routing\.mode=\'topk\': .*"pallas".* needs mode="causal"',
        ),
        (dict(implementation="pallas", head_dim=6), "power-of-2 head_dim"),
        (
            dict(implementation="pallas", kernel_block_sizes=(4, 12)),
            "power-of-2 block_k",
        ),
    ],
)
def test_module_refuses_what_the_kernel_does_not_cover(kwargs, pattern):
  x = jnp.zeros((1, 8, 12))
  with pytest.raises(ValueError, match=pattern):
    _module(**kwargs).init(jax.random.key(0), x)


def test_model_config_field():
  base = common.base_config().model
  assert base.routing.implementation == "xla"
  assert rj.ModelConfig().routing.implementation == "xla"
  pallas = rj.RoutingConfig(implementation="pallas")
  ok = rj.ModelConfig(routing=pallas, position="rope")
  assert ok.routing.implementation == "pallas"
  with pytest.raises(ValueError, match=r"model\.routing\.implementation"):
    rj.ModelConfig(routing=dict(implementation="cuda"))
  with pytest.raises(ValueError, match="no relative position tables"):
    rj.ModelConfig(routing=pallas, position="relative")
  # Relative tables for the local heads only: allowed.
  rj.ModelConfig(routing=pallas.replace(position="rope"), position="relative")
  with pytest.raises(ValueError, match="no attention dropout"):
    rj.ModelConfig(routing=pallas, position="none", attention_dropout=0.1)
  # Local-only models ignore the field.
  rj.ModelConfig(routing=pallas, num_routing_heads=0)


def test_implementation_does_not_change_the_checkpoint_hash():
  """Resuming an XLA-path run on the kernel (or back) is allowed."""
  config = common.base_config()
  before = resume.config_hash(config)
  config.model.routing.implementation = "pallas"
  assert resume.config_hash(config) == before
  config.model.routing.window += 1
  assert resume.config_hash(config) != before


def test_fields_added_later_keep_older_checkpoints_hash():
  """A field added with a default that computes what older runs computed
  leaves their hash alone (they resume); another value changes it."""
  config = common.base_config()
  now = resume.config_hash(config)
  del config.model.routing["warmup"]  # a config from before the field
  assert resume.config_hash(config) == now
  config.model.routing.warmup = "random"
  assert resume.config_hash(config) != now
  config = common.base_config()
  del config.model["init_mode"]  # from before the field: fan_avg
  assert resume.config_hash(config) == now
  config.model.init_mode = "fan_in"
  assert resume.config_hash(config) != now
