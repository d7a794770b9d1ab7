# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Cached decoding of TransformerLM reproduces teacher forcing.

Each check runs k-means training, the teacher-forced forward pass and 80
cached steps (a `lax.scan` over `generation.step_fn`) in one jitted program, so a
configuration costs one compilation. The models have max_len 32, so every
check also decodes well past the training length with a constant-size cache.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import routing_jax as rj
from routing_jax.nn import generation
from routing_jax.nn import model as M

from helpers import model_variables

STEPS = 80
# Tiny blocks, windows and relative range: 80 steps wrap the local ring (16
# slots) and every routing ring (window 6) many times and clip the Shaw
# offsets (±10). max_len 32 < 80: decoding goes past the training length.
TEXT = dict(model_variables.SMALL_TEXT, num_layers=2, routing_layers="1")


@functools.lru_cache(maxsize=None)
def _forced_and_cached(cfg, prefill=0):
  """jit(variables, tokens [b, n]) -> (forward logits, step logits, cache).

  Both logits are [b, n, vocab]: the teacher-forced forward pass, and the
  step function fed tokens[:, t] at index t for t = 0 .. n-1 from an empty
  cache (after 3 k-means training steps, shared by both). With `prefill`,
  positions 0 .. prefill−1 go through one prefill pass instead (their
  logits come from it).
  """
  model = rj.TransformerLM(cfg)
  step = generation.step_fn(model)

  def fn(variables, tokens):
    b, n = tokens.shape
    variables = model_variables.train_kmeans(model, variables, n)
    forced, _ = model.apply(variables, tokens)

    def body(state, t):
      logits, state = step(state, tokens[:, t], t)
      return state, logits

    state = (variables, generation.init_cache(model, b))
    first = jnp.zeros((b, 0, cfg.vocab_size))
    if prefill:
      (first, _), new = model.apply(
          dict(variables, cache=state[1]),
          tokens[:, :prefill],
          prefill=True,
          mutable=["cache"],
      )
      state = (variables, new["cache"])
    state, stepped = jax.lax.scan(body, state, jnp.arange(prefill, n))
    stepped = jnp.concatenate([first, jnp.swapaxes(stepped, 0, 1)], 1)
    return forced, stepped, state[1]

  return jax.jit(fn)


def _tokens(batch, n, vocab, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.integers(0, vocab, (batch, n)), jnp.int32)


def _run(cfg, n=STEPS, seed=0, prefill=0):
  model = rj.TransformerLM(cfg)
  variables = model_variables.random_variables(model, seed)
  forced, stepped, cache = _forced_and_cached(cfg, prefill)(
      variables, _tokens(2, n, cfg.vocab_size, seed)
  )
  return model, variables, np.asarray(forced), np.asarray(stepped), cache


CASES = {
    "mixed_relative": dict(TEXT),
    "local_only": dict(TEXT, routing_layers="none"),
    "routing_only": dict(TEXT, num_routing_heads=4, routing_layers="all"),
    "mixed_rope_scan": dict(TEXT, position="rope", scan_layers=True),
    "mixed_relative_scan": dict(TEXT, scan_layers=True),
    "separate_qk_exclude_self": model_variables.merged(
        TEXT, routing=dict(share_qk=False, exclude_self=True)
    ),
}
SLOW = ("local_only", "routing_only", "mixed_rope_scan", "mixed_relative_scan")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(k, marks=pytest.mark.slow) if k in SLOW else k
        for k in CASES
    ],
)
def test_cached_decoding_matches_teacher_forcing(name):
  cfg = rj.ModelConfig(**CASES[name])
  model, variables, forced, stepped, cache = _run(cfg)
  assert forced.shape == stepped.shape == (2, STEPS, cfg.vocab_size)
  np.testing.assert_allclose(stepped, forced, atol=1e-4, rtol=0)
  # Not vacuous: the logits vary with position and content.
  assert np.abs(forced[:, 1:] - forced[:, :1]).max() > 1e-2
  # Constant-size cache: after 80 steps (> max_len 32) every cache leaf has
  # its initial shape, and none grows with the number of steps.
  init = jax.eval_shape(lambda: generation.init_cache(model, 2))
  assert jax.tree.map(lambda a: (a.shape, a.dtype), init) == jax.tree.map(
      lambda a: (a.shape, a.dtype), cache
  )
  assert max(max(a.shape) for a in jax.tree.leaves(cache)) < STEPS
  big = jax.eval_shape(
      lambda: generation.init_cache(
          rj.TransformerLM(cfg.replace(max_len=4096)), 2
      )
  )
  assert jax.tree.map(lambda a: a.shape, big) == jax.tree.map(
      lambda a: a.shape, init
  )


def test_bfloat16_decoding_matches_teacher_forcing_and_caches_in_bf16():
  # bf16 weights and activations (decode.py --dtype/--param-dtype): the
  # step must agree with the bf16 forward up to bf16 rounding, and every
  # floating leaf of the cache must be bf16 (half the bytes of float32).
  cfg = rj.ModelConfig(**dict(TEXT, dtype="bfloat16", param_dtype="bfloat16"))
  _, variables, forced, stepped, cache = _run(cfg)
  assert {a.dtype for a in jax.tree.leaves(variables["params"])} == {
      jnp.dtype(jnp.bfloat16)
  }
  floats = [
      a for a in jax.tree.leaves(cache) if jnp.issubdtype(a.dtype, jnp.floating)
  ]
  assert floats and all(a.dtype == jnp.bfloat16 for a in floats)
  np.testing.assert_allclose(stepped, forced, atol=3e-2, rtol=0)
  assert np.abs(forced[:, 1:] - forced[:, :1]).max() > 1.0


@pytest.mark.slow
def test_image_model_decodes_like_teacher_forcing():
  cfg = rj.ModelConfig(
      **dict(
          TEXT,
          vocab_size=256,
          position="learned2d",
          image_shape=(4, 4, 3),
          max_len=48,
          ffn="relu",
          scan_layers=True,
      )
  )
  _, _, forced, stepped, _ = _run(cfg, n=48)
  np.testing.assert_allclose(stepped, forced, atol=1e-4, rtol=0)


def test_decode_length_limits():
  image = rj.ModelConfig(
      **dict(
          TEXT,
          vocab_size=256,
          position="learned2d",
          image_shape=(4, 4, 3),
          max_len=48,
      )
  )
  generation.check_decode_length(image, 48)
  with pytest.raises(ValueError, match=r"learned2d.*max_len=48"):
    generation.check_decode_length(image, 49)
  for position in ("relative", "rope"):
    generation.check_decode_length(
        rj.ModelConfig(**dict(TEXT, position=position)), 10**6
    )
  topk = rj.ModelConfig(
      **model_variables.merged(TEXT, routing=dict(mode="topk"))
  )
  generation.check_decode_length(topk, 32)
  with pytest.raises(ValueError, match=r"topk.*max_len=32"):
    generation.check_decode_length(topk, 33)


@pytest.mark.parametrize(
    "name, prefill",
    [
        ("mixed_relative_scan", 37),
        ("separate_qk_exclude_self", 50),
        pytest.param("topk", 20, marks=pytest.mark.slow),
    ],
)
def test_prefill_then_decode_matches_token_by_token(name, prefill):
  """One parallel prefill pass leaves the cache of `prefill` decode steps.

  Causal routing: both equal teacher forcing. topk routing decodes as the
  reference's fast decode (re-selecting among the tokens so far), which
  teacher forcing does not reproduce; prefill must still equal stepping.
  """
  cases = dict(
      CASES,
      topk=model_variables.merged(
          TEXT, max_len=64, routing=dict(mode="topk", window=8)
      ),
  )
  cfg = rj.ModelConfig(**cases[name])
  n = 64
  _, _, forced, stepped, cache = _run(cfg, n=n)
  _, _, _, prefilled, prefilled_cache = _run(cfg, n=n, prefill=prefill)
  np.testing.assert_allclose(prefilled, stepped, atol=1e-4, rtol=0)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4),
      cache,
      prefilled_cache,
  )
  if name != "topk":
    np.testing.assert_allclose(stepped, forced, atol=1e-4, rtol=0)


def test_generate_greedy_is_argmax_of_teacher_forced_logits():
  # One layer with local and routing heads: the smallest model to compile.
  cfg = rj.ModelConfig(**dict(TEXT, num_layers=1, routing_layers="all"))
  model = rj.TransformerLM(cfg)
  variables = model_variables.random_variables(model, seed=5)
  prompts = _tokens(2, 6, cfg.vocab_size, seed=5)
  lengths = jnp.array([2, 6], jnp.int32)
  out = rj.generate(
      generation.step_fn(model),
      generation.initial_state(model, variables, 2),
      prompts,
      lengths,
      max_length=40,
      rng=jax.random.key(0),
      temperature=0.0,
  )
  tokens = np.asarray(out.tokens)
  assert tokens.shape == (2, 40)
  np.testing.assert_array_equal(tokens[0, :2], np.asarray(prompts)[0, :2])
  np.testing.assert_array_equal(tokens[1, :6], np.asarray(prompts)[1])
  logits = np.asarray(
      jax.jit(lambda v, x: model.apply(v, x)[0])(variables, jnp.asarray(tokens))
  )
  greedy = logits.argmax(-1)  # [2, 40]: prediction for position t + 1
  for row, length in enumerate([2, 6]):
    np.testing.assert_array_equal(
        tokens[row, length:], greedy[row, length - 1 : -1]
    )
  assert len(set(tokens[0, 2:].tolist())) > 1  # not a degenerate constant


def test_python_loop_of_decode_step_matches_teacher_forcing():
  """jit(decode_step) called per token, the cache donated: the teacher-
  forced logits, and the compiled step copies none of its parameters."""
  cfg = rj.ModelConfig(**dict(TEXT, num_layers=1, routing_layers="all"))
  model = rj.TransformerLM(cfg)
  variables = model_variables.random_variables(model, seed=6)
  variables = jax.jit(lambda v: model_variables.train_kmeans(model, v, 12))(
      variables
  )
  tokens = _tokens(2, 12, cfg.vocab_size, seed=6)
  forced = np.asarray(
      jax.jit(lambda v, x: model.apply(v, x)[0])(variables, tokens)
  )
  step = jax.jit(generation.decode_step(model), donate_argnums=(1,))
  v, cache = generation.initial_state(model, variables, 2)
  stepped = []
  for t in range(tokens.shape[1]):
    logits, cache = step(v, cache, tokens[:, t], t)
    stepped.append(np.asarray(logits))
  np.testing.assert_allclose(np.stack(stepped, 1), forced, atol=1e-5)

  hlo = step.lower(v, cache, tokens[:, 0], 0).compile().as_text()
  entry = hlo[hlo.index("ENTRY") :]
  parameters = set(re.findall(r"%([\w.\-]+) = \S+ parameter\(", entry))
  weights = {p for p in parameters if "params" in p or "kmeans" in p}
  copied = set(re.findall(r"= \S+ copy\(%([\w.\-]+)\)", entry))
  assert len(weights) > 5 and not weights & copied, weights & copied


def test_sample_with_prefill_equals_sample_without():
  cfg = rj.ModelConfig(
      **model_variables.merged(TEXT, routing=dict(share_qk=False))
  )
  model = rj.TransformerLM(cfg)
  variables = model_variables.random_variables(model, seed=6)
  prompts = np.asarray(_tokens(2, 9, cfg.vocab_size, seed=6))
  run = lambda prefill: np.asarray(
      generation.sample(
          model,
          variables,
          prompts,
          30,
          rng=jax.random.key(1),
          temperature=0.7,
          use_prefill=prefill,
      ).tokens
  )
  with_prefill = run(True)
  np.testing.assert_array_equal(with_prefill, run(False))
  np.testing.assert_array_equal(with_prefill[:, :9], prompts)


def test_decoding_a_model_still_warming_up_is_an_error():
  cfg = rj.ModelConfig(
      **model_variables.merged(TEXT, routing=dict(warmup_steps=5))
  )
  model = rj.TransformerLM(cfg)
  variables = model_variables.random_variables(model)  # num_updates = 1 < 5
  with pytest.raises(ValueError, match="still warming up.*1 of.*=5"):
    generation.initial_state(model, variables, 1)
  done = jax.tree_util.tree_map_with_path(
      lambda p, a: a + 4 if "num_updates" in jax.tree_util.keystr(p) else a,
      variables,
  )
  generation.initial_state(model, done, 1)


def test_decoding_a_model_still_warming_up_inside_jit_gives_nan():
  """Inside jit the k-means counters are traced and the host check cannot
  run; the logits then say it (NaN) instead of looking plausible."""
  cfg = rj.ModelConfig(
      **model_variables.merged(TEXT, routing=dict(warmup_steps=5))
  )
  model = rj.TransformerLM(cfg)
  variables = model_variables.random_variables(model)  # num_updates = 1 < 5
  cache = generation.init_cache(model, 1)
  step = jax.jit(generation.decode_step(model))
  tokens = jnp.zeros((1,), jnp.int32)
  params = {k: variables[k] for k in ("params", "kmeans")}
  logits, _ = step(params, cache, tokens, 0)
  assert np.isnan(np.asarray(logits)).all()
  done = jax.tree_util.tree_map_with_path(
      lambda p, a: a + 4 if "num_updates" in jax.tree_util.keystr(p) else a,
      params,
  )
  logits, _ = step(done, cache, tokens, 0)
  assert np.isfinite(np.asarray(logits)).all()


def test_exclude_self_is_refused_with_topk():
  with pytest.raises(ValueError, match=r"model\.routing\.exclude_self.*causal"):
    rj.ModelConfig(
        **model_variables.merged(
            TEXT, routing=dict(mode="topk", exclude_self=True)
        )
    )
  with pytest.raises(ValueError, match=r"routing\.exclude_self.*causal"):
    rj.RoutingConfig(mode="topk", exclude_self=True)
