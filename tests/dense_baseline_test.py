# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""model.dense_routing_heads: the routing model's own dense counterpart.

Its routing heads become plain heads over the whole sequence. Checked
exactly: with the local heads' block widened to the whole sequence too, the
model equals a model of full-attention heads whose projections are the two
groups' stacked (two head groups added = their heads concatenated before
one output projection); and it is causal.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import routing_jax as rj

BASE = dict(
    vocab_size=32,
    d_model=32,
    num_layers=2,
    num_heads=4,
    d_ff=64,
    max_len=32,
    position="rope",
    norm="pre",
)


def _tokens(seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 32, (2, 32)))


def test_equals_full_attention_with_the_head_groups_stacked():
  hybrid = rj.TransformerLM(
      rj.ModelConfig(
          **BASE,
          num_routing_heads=2,
          dense_routing_heads=True,
          query_block=32,
          memory_flange=0,
      )
  )
  full = rj.TransformerLM(
      rj.ModelConfig(
          **BASE, num_routing_heads=0, query_block=32, memory_flange=0
      )
  )
  x = _tokens()
  variables = hybrid.init(jax.random.PRNGKey(0), x)
  params = nn.unbox(variables["params"])  # a fresh tree of plain dicts
  stacked = {}
  for name, layer in params.items():
    if not name.startswith("layer_"):
      stacked[name] = layer
      continue
    local, dense = layer.pop("local"), layer.pop("dense")
    attn = {
        proj: {
            "kernel": jnp.concatenate(
                [local[proj]["kernel"], dense[proj]["kernel"]],
                axis=0 if proj == "out" else 1,
            )
        }
        for proj in ("query", "key", "value")
    }
    attn["out"] = {
        "kernel": jnp.concatenate(
            [local["out"]["kernel"], dense["out"]["kernel"]], axis=0
        )
    }
    stacked[name] = dict(layer, local=attn)
  want, _ = full.apply({"params": stacked}, x)
  got, _ = hybrid.apply(variables, x)
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_is_causal():
  model = rj.TransformerLM(
      rj.ModelConfig(
          **BASE,
          num_routing_heads=2,
          dense_routing_heads=True,
          query_block=8,
          memory_flange=8,
      )
  )
  x = _tokens(1)
  variables = model.init(jax.random.PRNGKey(1), x)
  t = 20
  a, _ = model.apply(variables, x)
  b, _ = model.apply(variables, x.at[:, t:].set((x[:, t:] + 1) % 32))
  np.testing.assert_allclose(a[:, :t], b[:, :t], atol=1e-6)
  assert np.abs(a[:, t:] - b[:, t:]).max() > 1e-3
  assert "kmeans" not in variables  # no routing state at all
