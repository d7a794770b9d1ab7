# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.training.optim: schedules, the weight-decay mask,
training."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common
from experiments import shakespeare
from routing_jax.data import input_pipeline
from routing_jax.nn.model import TransformerLM
from routing_jax.nn.model_config import ModelConfig
from routing_jax.training import optim
from routing_jax.training import sharding
from routing_jax.training import train


def _train_config(**kw):
  t = common.base_config().train
  for k, v in kw.items():
    t[k] = v
  return t


def _values(schedule, steps):
  return [float(schedule(jnp.asarray(s, jnp.int32))) for s in steps]


def test_rsqrt_schedule():
  lr, w = 0.01, 10000
  sched = optim.learning_rate_schedule(
      _train_config(schedule="rsqrt", lr=lr, warmup_steps=w)
  )
  steps = [0, 1, 5000, 10000, 10001, 40000, 1000000]
  expected = [lr * math.sqrt(w) / math.sqrt(max(s, w)) for s in steps]
  np.testing.assert_allclose(_values(sched, steps), expected, rtol=1e-6)
  assert _values(sched, [40000]) == pytest.approx([lr / 2])
  # Without warmup: lr / sqrt(step), flat at lr for step 0.
  sched = optim.learning_rate_schedule(
      _train_config(schedule="rsqrt", lr=lr, warmup_steps=0)
  )
  np.testing.assert_allclose(
      _values(sched, [0, 1, 4, 100]), [lr, lr, lr / 2, lr / 10], rtol=1e-6
  )


def test_cosine_schedule():
  lr, w, total = 2e-3, 100, 1000
  sched = optim.learning_rate_schedule(
      _train_config(schedule="cosine", lr=lr, warmup_steps=w, steps=total)
  )
  steps = [0, 50, 100, 325, 550, 775, 1000, 1200]
  expected = [
      0.0,
      lr / 2,
      lr,
      lr * 0.5 * (1 + math.cos(math.pi * 225 / 900)),
      lr / 2,
      lr * 0.5 * (1 + math.cos(math.pi * 675 / 900)),
      0.0,
      0.0,
  ]
  np.testing.assert_allclose(
      _values(sched, steps), expected, rtol=1e-5, atol=1e-10
  )


def test_constant_schedule():
  lr = 3e-4
  sched = optim.learning_rate_schedule(
      _train_config(schedule="constant", lr=lr, warmup_steps=10)
  )
  np.testing.assert_allclose(
      _values(sched, [0, 5, 10, 11, 10**6]),
      [0.0, lr / 2, lr, lr, lr],
      rtol=1e-6,
  )
  sched = optim.learning_rate_schedule(
      _train_config(schedule="constant", lr=lr, warmup_steps=0)
  )
  np.testing.assert_allclose(_values(sched, [0, 7]), [lr, lr], rtol=1e-6)


@functools.lru_cache(maxsize=1)
def _boxed_params():
  """A real TransformerLM tree with biases (relu FFN) and both norms."""
  cfg = ModelConfig(
      vocab_size=256,
      num_layers=2,
      d_model=32,
      num_heads=4,
      num_routing_heads=2,
      d_ff=64,
      ffn="relu",
      norm="pre",
      emb_dim=16,
      query_block=16,
      memory_flange=16,
      max_relative_position=33,
      routing=dict(window=16, num_clusters=2),
      max_len=64,
  )
  # Shapes only: the mask needs the tree, not values (no compile).
  variables = jax.eval_shape(
      TransformerLM(cfg).init,
      {"params": jax.random.PRNGKey(0)},
      jnp.zeros((1, 64), jnp.int32),
  )
  return variables["params"]


def _random_params():
  """The unboxed tree of _boxed_params() with random values."""
  rng = np.random.default_rng(0)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape).astype(s.dtype)),
      nn.meta.unbox(_boxed_params()),
  )


def _paths(tree):
  is_box = lambda x: isinstance(x, nn.meta.Partitioned)
  return {
      "/".join(
          str(getattr(k, "key", k))
          for k in path
          if getattr(k, "name", None) != "value"
      ): (leaf.value if is_box(leaf) else leaf)
      for path, leaf in jax.tree_util.tree_leaves_with_path(
          tree, is_leaf=lambda x: is_box(x) or isinstance(x, bool)
      )
  }


EXCLUDED = [
    "final_norm/scale",
    "final_norm/bias",
    "layer_0/attn_norm/scale",
    "layer_1/ffn_norm/bias",
    "layer_0/ffn/wi/bias",
    "layer_1/ffn/wo/bias",
    "logits/bias",
]
INCLUDED = [
    "embed/embedding",
    "layer_0/ffn/wi/kernel",
    "layer_1/local/query/kernel",
    "layer_0/routing/value/kernel",
    "layer_1/routing/out/kernel",
    "logits/kernel",
    "layer_0/local/rel_key",
]


@pytest.mark.parametrize("boxed", [True, False])
def test_decay_mask_on_a_real_model(boxed):
  params = _boxed_params()
  if not boxed:
    params = nn.meta.unbox(params)
  mask = _paths(optim.decay_mask(params))
  assert set(mask) == set(_paths(params))
  for name in EXCLUDED:
    assert mask[name] is False, name
  for name in INCLUDED:
    assert mask[name] is True, name
  # The rule for every leaf: biases and anything in a norm are excluded.
  for name, decayed in mask.items():
    leaf = name.split("/")[-1]
    assert decayed == (leaf not in ("bias", "scale") and "norm" not in name)


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_weight_decay_skips_masked_leaves(name):
  """With zero gradients the update is pure weight decay."""
  params = _random_params()
  t = _train_config(
      optimizer=name,
      schedule="constant",
      warmup_steps=0,
      lr=0.1,
      weight_decay=0.5,
      grad_clip=1.0,
  )
  tx = optim.create_optimizer(t)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
  got, p = _paths(updates), _paths(params)
  for key, decayed in _paths(optim.decay_mask(params)).items():
    if not decayed:
      np.testing.assert_array_equal(np.asarray(got[key]), 0.0, err_msg=key)
    elif name == "adamw":
      # Decoupled decay, scaled by the learning rate.
      np.testing.assert_allclose(
          np.asarray(got[key]),
          -0.1 * 0.5 * np.asarray(p[key]),
          rtol=1e-6,
          atol=1e-12,
          err_msg=key,
      )
    else:
      # Adafactor: the reference's L2 term, gradient 0.5·v, rescaled by
      # Adafactor; every step shrinks each weight towards zero.
      g, v = np.asarray(got[key]), np.asarray(p[key])
      assert np.all(np.sign(g[v != 0]) == -np.sign(v[v != 0])), key


def test_unknown_optimizer_is_rejected():
  with pytest.raises(ValueError, match="train.optimizer must be one of"):
    optim.create_optimizer(_train_config(optimizer="sgd"))


@pytest.mark.parametrize(
    "name, lr, schedule, warmup, decay, min_drop",
    [
        # The training tests' configuration (the compiled step is shared).
        ("adamw", 2e-3, "constant", 0, 0.1, 1.0),
        # The paper's: flat 0.01 for 10k steps, steps relative to the parameter
        # scale, so it moves slowly at first, and no weight decay (Adafactor's
        # decay is per step, not scaled by the learning rate: 0.1 would shrink
        # every weight by 10% a step).
        ("adafactor", 0.01, "rsqrt", 10000, 0.0, 0.05),
    ],
)
def test_optimizer_reduces_the_loss(
    name, lr, schedule, warmup, decay, min_drop
):
  """20 steps on one fixed batch of Shakespeare: the loss must drop."""
  config = shakespeare.get_config("tiny")
  config.model.num_heads = 4
  config.model.num_routing_heads = 2
  t = config.train
  t.optimizer, t.lr, t.schedule, t.warmup_steps, t.weight_decay = (
      name,
      lr,
      schedule,
      warmup,
      decay,
  )
  t.steps = 20
  model_cfg = train.validate_config(config)
  mesh = sharding.create_mesh(
      dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1]
  )
  trainer, state = train.build_trainer(
      config, mesh, sharding.logical_rules(), model_cfg
  )
  batch = next(
      input_pipeline.create_datasets(config.data, vocab_size=256).train
  )
  gb = sharding.make_global_batch(batch, mesh, trainer.data_sharding)
  losses = []
  for _ in range(t.steps):
    state, m = train.run_step(trainer, trainer.train_step, state, gb)
    losses.append(float(m["loss"]))
  assert all(np.isfinite(losses))
  # From about log(256) = 5.55 nats; a fixed batch is quickly memorised.
  assert losses[0] > 5.0
  assert losses[-1] < losses[0] - min_drop, losses
  assert max(losses[-5:]) < min(losses[:5]), losses
