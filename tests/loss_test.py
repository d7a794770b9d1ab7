# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.nn.loss: chunked cross-entropy and the padded
vocabulary.

A tiny model (vocabulary 100 padded to 128) checks that the chunked loss
and its gradients equal the loss of the whole logits, that padded entries
get zero probability, and a 32k-vocabulary head checks in the compiled
memory that the chunked loss never holds the whole logits.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from routing_jax.nn import loss
from routing_jax.nn import model as M
from routing_jax.nn.model_config import ModelConfig
from routing_jax.training import train

TINY = dict(
    vocab_size=100,
    vocab_multiple=128,
    num_layers=2,
    d_model=32,
    num_heads=4,
    num_routing_heads=2,
    d_ff=64,
    query_block=8,
    memory_flange=8,
    routing=dict(window=8, num_clusters=2),
    max_len=40,
    residual_dropout=0.0,
)


def _setup(**kw):
  cfg = ModelConfig(**dict(TINY, **kw))
  model = M.TransformerLM(cfg)
  variables = nn.unbox(M.init_variables(model, jax.random.key(0), 2, 40))
  rng = np.random.default_rng(0)
  batch = {
      "inputs": rng.integers(0, 100, (2, 40)).astype(np.int32),
      "targets": rng.integers(0, 100, (2, 40)).astype(np.int32),
      "weights": (rng.random((2, 40)) > 0.2).astype(np.float32),
  }
  return model, variables, batch


def _whole(model, variables, batch):
  """The reference: __call__'s logits (padding sliced off), one softmax."""
  logits, _ = model.apply(variables, batch["inputs"])
  return train.cross_entropy(logits, batch["targets"], batch["weights"])


@pytest.mark.parametrize(
    "kw",
    [{}, dict(emb_dim=16, tie_embeddings=True)],
    ids=["untied", "tied_factorised"],
)
def test_chunked_loss_and_gradients_equal_the_whole_logits(kw):
  model, variables, batch = _setup(**kw)
  assert model.config.padded_vocab_size == 128
  logits, _ = model.apply(variables, batch["inputs"])
  assert logits.shape == (2, 40, 100)  # users never see the padding

  def whole(params):
    return _whole(model, dict(variables, params=params), batch)[0]

  def chunked(params):
    # 16 does not divide 40: the last chunk is padded with zero weights.
    ce, _, _, _ = train.token_loss(
        model, dict(variables, params=params), batch, chunk_len=16
    )
    return ce

  ref, ref_grads = jax.jit(jax.value_and_grad(whole))(variables["params"])
  got, grads = jax.jit(jax.value_and_grad(chunked))(variables["params"])
  np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
  for (path, a), b in zip(
      jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)
  ):
    np.testing.assert_allclose(
        np.asarray(a),
        np.asarray(b),
        rtol=2e-5,
        atol=1e-6,
        err_msg=jax.tree_util.keystr(path),
    )


def test_padded_vocabulary_entries_get_zero_probability():
  model, variables, batch = _setup()
  params = jax.tree.map(lambda x: x, variables["params"])  # a copy
  # Huge logits on the 28 padded entries: any probability there would
  # swamp the loss.
  params["logits"]["bias"] = params["logits"]["bias"].at[100:].set(1e4)
  variables = dict(variables, params=params)
  ce, w, _, _ = train.token_loss(model, variables, batch, chunk_len=16)
  ref, ref_w = _whole(model, variables, batch)
  np.testing.assert_allclose(float(ce), float(ref), rtol=1e-6)
  assert float(w) == float(ref_w)
  hidden, _ = model.apply(variables, batch["inputs"], return_hidden=True)
  padded = M.output_logits(model.config, params, hidden)
  assert padded.shape == (2, 40, 128)
  real = jnp.arange(128) < 100
  probs = jax.nn.softmax(jnp.where(real, padded, -jnp.inf), axis=-1)
  assert float(jnp.max(probs[..., 100:])) == 0.0
  # Without the mask they would take everything.
  assert float(jnp.min(jax.nn.softmax(padded)[..., 100:].sum(-1))) > 0.99


def test_chunked_loss_never_holds_the_whole_logits():
  """A 32k vocabulary over 2048 positions: 256 MiB of float32 logits.

  The compiled gradient of the whole-logits loss needs several such
  arrays; the chunked one (256 positions, 32 MiB of logits) needs a few
  chunks' worth, less than one whole array.
  """
  b, n, e, v = 1, 2048, 64, 32768
  logits_bytes = b * n * v * 4
  k = jax.random.split(jax.random.key(0), 3)
  kernel = jax.random.normal(k[0], (e, v)) * 0.02
  hidden = jax.random.normal(k[1], (b, n, e))
  targets = jax.random.randint(k[2], (b, n), 0, v)
  weights = jnp.ones((b, n))

  def whole(kernel, hidden):
    return loss.cross_entropy(hidden @ kernel, targets, weights)[0]

  def chunked(kernel, hidden):
    return loss.chunked_cross_entropy(
        lambda h: h @ kernel,
        hidden,
        targets,
        weights,
        vocab_size=v,
        chunk_len=256,
    )[0]

  temp = {}
  for name, fn in (("whole", whole), ("chunked", chunked)):
    compiled = (
        jax.jit(jax.grad(fn, argnums=(0, 1))).lower(kernel, hidden).compile()
    )
    temp[name] = compiled.memory_analysis().temp_size_in_bytes
  print(
      f"\ntemporaries: whole {temp['whole'] / 2**20:.0f} MiB, chunked "
      f"{temp['chunked'] / 2**20:.0f} MiB (logits {logits_bytes / 2**20:.0f}"
      " MiB)"
  )
  assert temp["whole"] >= 2 * logits_bytes
  assert temp["chunked"] < min(logits_bytes, 5 * logits_bytes * 256 // n)
  np.testing.assert_allclose(
      float(jax.jit(chunked)(kernel, hidden)),
      float(jax.jit(whole)(kernel, hidden)),
      rtol=1e-5,
  )


def test_cross_entropy_masks_padding_columns():
  logits = jnp.asarray([[[0.0, 0.0, 50.0]]])
  ce, _ = loss.cross_entropy(
      logits, jnp.asarray([[0]]), jnp.ones((1, 1)), vocab_size=2
  )
  np.testing.assert_allclose(float(ce), np.log(2.0), rtol=1e-6)


def test_bad_loss_chunk_len_is_named():
  from experiments import shakespeare  # pylint: disable=g-import-not-at-top

  config = shakespeare.get_config("tiny")
  config.train.loss_chunk_len = -1
  with pytest.raises(ValueError, match="train.loss_chunk_len=-1: must be"):
    train.validate_config(config)
