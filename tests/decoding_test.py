# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.nn.decoding with fake step functions (no model)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from routing_jax.nn import decoding

VOCAB = 16
NEG = -1e9


def successor_step(cache, tokens, index):
  """Next token is (token + 1) % VOCAB; counts calls in the cache."""
  del index
  logits = jnp.where(jax.nn.one_hot((tokens + 1) % VOCAB, VOCAB) > 0, 10.0, 0.0)
  return logits, cache + 1


def _successor_prompts():
  prompts = jnp.array([[5, 9, 3], [2, 0, 0], [7, 7, 0]], jnp.int32)
  return prompts, jnp.array([3, 1, 2], jnp.int32)


def test_greedy_successor_exact():
  out = decoding.generate(
      successor_step,
      jnp.zeros((), jnp.int32),
      jnp.array([[5]]),
      jnp.array([1]),
      max_length=6,
      rng=jax.random.key(0),
      temperature=0.0,
  )
  np.testing.assert_array_equal(out.tokens, [[5, 6, 7, 8, 9, 10]])
  np.testing.assert_array_equal(out.lengths, [6])


def test_ragged_prompts_kept_verbatim():
  prompts, lengths = _successor_prompts()
  out = decoding.generate(
      successor_step,
      jnp.zeros((), jnp.int32),
      prompts,
      lengths,
      max_length=7,
      rng=jax.random.key(0),
      temperature=0.0,
  )
  np.testing.assert_array_equal(
      out.tokens,
      [
          [5, 9, 3, 4, 5, 6, 7],
          [2, 3, 4, 5, 6, 7, 8],
          [7, 7, 8, 9, 10, 11, 12],
      ],
  )


def test_eos_stops_row_pads_and_exits_early():
  fed_indices = []

  def step(cache, tokens, index):
    jax.debug.callback(lambda i: fed_indices.append(int(i)), index)
    return successor_step(cache, tokens, index)

  prompts = jnp.array([[5, 0], [1, 0], [2, 8]], jnp.int32)
  out = decoding.generate(
      step,
      jnp.zeros((), jnp.int32),
      prompts,
      jnp.array([1, 1, 2]),
      max_length=12,
      rng=jax.random.key(0),
      temperature=0.0,
      eos_id=8,
      pad_id=-1,
  )
  # The forced 8 in row 2's prompt does not stop it; its sampled 8 does.
  np.testing.assert_array_equal(
      out.tokens,
      [
          [5, 6, 7, 8, -1, -1, -1, -1, -1, -1, -1, -1],
          [1, 2, 3, 4, 5, 6, 7, 8, -1, -1, -1, -1],
          [2, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2],
      ],
  )
  np.testing.assert_array_equal(out.lengths, [4, 8, 12])
  fed_indices.clear()
  out = decoding.generate(
      step,
      jnp.zeros((), jnp.int32),
      prompts[:2, :1],
      jnp.array([1, 1]),
      max_length=12,
      rng=jax.random.key(0),
      temperature=0.0,
      eos_id=8,
  )
  jax.block_until_ready(out)
  # Row 1 samples EOS at position 7 from index 6: no step after that.
  assert fed_indices == list(range(7))
  np.testing.assert_array_equal(out.lengths, [4, 8])


def test_top_k_filter_exact():
  logits = jnp.array([[1.0, 4.0, 2.0, 4.0, 0.5], [3.0, 1.0, 3.0, 3.0, 0.0]])
  inf = -np.inf
  np.testing.assert_array_equal(
      decoding.top_k_filter(logits, 2),
      [[inf, 4.0, inf, 4.0, inf], [3.0, inf, 3.0, inf, inf]],
  )
  np.testing.assert_array_equal(
      decoding.top_k_filter(logits, 3)[0], [inf, 4.0, 2.0, 4.0, inf]
  )
  np.testing.assert_array_equal(decoding.top_k_filter(logits, 0), logits)
  np.testing.assert_array_equal(decoding.top_k_filter(logits, 9), logits)


def _np_top_p_kept(logits, p):
  """Reference: smallest top set (ties to the lower id) with mass >= p."""
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  order = np.argsort(-logits, kind="stable")
  count = int(np.searchsorted(np.cumsum(probs[order]), p) + 1)
  return set(order[:count].tolist())


def test_top_p_filter_exact():
  logits = np.log(np.array([0.1, 0.5, 0.2, 0.2], np.float32))
  top_p = jax.jit(decoding.top_p_filter)
  kept = lambda p: set(
      np.flatnonzero(np.isfinite(top_p(jnp.asarray(logits), p))).tolist()
  )
  assert kept(1e-6) == {1}  # The top token is always kept.
  assert kept(0.5) == {1}
  assert kept(0.6) == {1, 2}  # Tie between 2 and 3: the lower id wins.
  assert kept(0.8) == {1, 2, 3}
  assert kept(0.95) == {0, 1, 2, 3}
  assert kept(1.0) == {0, 1, 2, 3}
  # p = 1 keeps tokens of negligible mass; filtered values are untouched.
  tiny = jnp.array([0.0, -80.0, 5.0])
  np.testing.assert_array_equal(decoding.top_p_filter(tiny, 1.0), tiny)
  # Random logits against the numpy reference, p away from mass boundaries.
  rng = np.random.default_rng(0)
  batch = rng.normal(size=(64, 11)).astype(np.float32) * 2
  ps = rng.uniform(0.05, 1.0, size=64)
  got = np.isfinite(jax.vmap(decoding.top_p_filter)(batch, ps))
  for row, p, mask in zip(batch, ps, got):
    assert set(np.flatnonzero(mask).tolist()) == _np_top_p_kept(row, p)


def test_top_k_then_top_p_combined():
  logits = jnp.log(jnp.array([0.05, 0.4, 0.3, 0.25]))
  # top_k=3 keeps {1, 2, 3}: renormalised 0.421, 0.316, 0.263; p=0.6 -> {1, 2}.
  filtered = decoding.top_p_filter(decoding.top_k_filter(logits, 3), 0.6)
  np.testing.assert_array_equal(np.isfinite(filtered), [0, 1, 1, 0])


def _frequencies(logits, n, **kwargs):
  keys = jax.random.split(jax.random.key(123), n)
  samples = jax.jit(
      jax.vmap(lambda k: decoding.sample_logits(k, logits, **kwargs))
  )(keys)
  return np.bincount(np.asarray(samples), minlength=logits.shape[-1]) / n


def test_sampling_frequencies_match_softmax():
  probs = np.array([0.5, 0.3, 0.15, 0.05])
  logits = jnp.log(jnp.asarray(probs, jnp.float32))
  n = 20000
  np.testing.assert_allclose(_frequencies(logits, n), probs, atol=0.015)
  hot = np.sqrt(probs) / np.sqrt(probs).sum()  # temperature 2
  np.testing.assert_allclose(
      _frequencies(logits, n, temperature=2.0), hot, atol=0.015
  )
  top2 = np.array([0.5, 0.3, 0, 0]) / 0.8
  freq_k = _frequencies(logits, n, top_k=2)
  freq_p = _frequencies(logits, n, top_p=0.7)
  np.testing.assert_allclose(freq_k, top2, atol=0.015)
  np.testing.assert_allclose(freq_p, top2, atol=0.015)
  assert freq_k[2:].sum() == 0 and freq_p[2:].sum() == 0
  # top_k=3 renormalises to [.526, .316, .158]; their nucleus at 0.85 keeps
  # all three (mass before the third is .842).
  np.testing.assert_allclose(
      _frequencies(logits, n, top_k=3, top_p=0.85),
      np.array([0.5, 0.3, 0.15, 0]) / 0.95,
      atol=0.015,
  )
  np.testing.assert_allclose(
      _frequencies(logits, n, top_k=3, top_p=0.6), top2, atol=0.015
  )


def fixed_step(cache, tokens, index):
  """Ignores its input: the same distribution at every position."""
  del tokens, index
  logits = jnp.log(jnp.array([0.04, 0.3, 0.06, 0.35, 0.05, 0.2]))
  return jnp.broadcast_to(logits, (cache.shape[0], 6)), cache


def _fixed_generate(seed, **kwargs):
  cache = jnp.zeros((4,))
  return decoding.generate(
      fixed_step,
      cache,
      jnp.zeros((4, 1), jnp.int32),
      jnp.ones((4,)),
      max_length=24,
      rng=jax.random.key(seed),
      **kwargs,
  ).tokens


def test_temperature_limit_is_greedy():
  greedy = _fixed_generate(0, temperature=0.0)
  np.testing.assert_array_equal(greedy[:, 1:], 3)
  for seed in range(3):
    np.testing.assert_array_equal(
        _fixed_generate(seed, temperature=1e-6), greedy
    )
  assert not np.array_equal(_fixed_generate(0, temperature=1.0), greedy)


def test_generate_respects_top_k_and_top_p():
  for seed in range(4):
    sampled = np.asarray(_fixed_generate(seed, top_k=2))[:, 1:]
    assert set(sampled.ravel().tolist()) == {1, 3}
    sampled = np.asarray(_fixed_generate(seed, top_p=0.8))[:, 1:]
    assert set(sampled.ravel().tolist()) == {1, 3, 5}


def test_seed_reproduces_and_differs():
  a = _fixed_generate(7, temperature=1.0)
  np.testing.assert_array_equal(a, _fixed_generate(7, temperature=1.0))
  assert not np.array_equal(a, _fixed_generate(8, temperature=1.0))


def history_step(cache, tokens, index):
  """Records fed tokens; logits peak at (sum(history) + calls) % VOCAB."""
  seen = cache["seen"].at[:, index].set(tokens)
  calls = cache["calls"] + 1
  return _history_logits(seen, calls), {"seen": seen, "calls": calls}


def history_prefill(cache, tokens):
  """Feeds all prompt positions at once, counting as len(tokens) calls."""
  seen = jax.lax.dynamic_update_slice(cache["seen"], tokens, (0, 0))
  calls = cache["calls"] + tokens.shape[1]
  return _history_logits(seen, calls), {"seen": seen, "calls": calls}


def _history_logits(seen, calls):
  peak = (jnp.sum(jnp.maximum(seen, 0), axis=1) + calls) % VOCAB
  return 3.0 * jax.nn.one_hot(peak, VOCAB)  # [batch, VOCAB]


def _history_cache(batch, length):
  return {
      "seen": jnp.full((batch, length), -1, jnp.int32),
      "calls": jnp.zeros((), jnp.int32),
  }


def _history_reference(prompt, length):
  """Greedy decoding of `history_step` in plain python."""
  seq, total = list(prompt), 0
  for t in range(length - 1):
    total += seq[t]
    if t + 1 >= len(seq):
      seq.append((total + t + 1) % VOCAB)
  return seq


def test_cache_threaded_and_prefill_matches_steps():
  prompts = jnp.array([[3, 1, 4, 1], [5, 9, 2, 0]], jnp.int32)
  lengths = jnp.array([4, 3], jnp.int32)
  common = dict(max_length=10, rng=jax.random.key(1))
  greedy = decoding.generate(
      history_step,
      _history_cache(2, 10),
      prompts,
      lengths,
      temperature=0.0,
      **common,
  )
  np.testing.assert_array_equal(
      greedy.tokens,
      [_history_reference([3, 1, 4, 1], 10), _history_reference([5, 9, 2], 10)],
  )
  for prefill_length in (1, 3):
    for temperature in (0.0, 1.0):
      stepped = decoding.generate(
          history_step,
          _history_cache(2, 10),
          prompts,
          lengths,
          temperature=temperature,
          **common,
      )
      prefilled = decoding.generate(
          history_step,
          _history_cache(2, 10),
          prompts,
          lengths,
          temperature=temperature,
          prefill_fn=history_prefill,
          prefill_length=prefill_length,
          **common,
      )
      np.testing.assert_array_equal(prefilled.tokens, stepped.tokens)


def test_no_retrace_and_works_under_outer_jit():
  traces = []

  def step(cache, tokens, index):
    traces.append(1)
    return fixed_step(cache, tokens, index)

  prompts, lengths = jnp.zeros((4, 2), jnp.int32), jnp.full((4,), 2)
  for seed, temperature, top_p in ((0, 1.0, 1.0), (1, 0.5, 0.9)):
    decoding.generate(
        step,
        jnp.zeros((4,)),
        prompts + seed,
        lengths,
        max_length=8,
        rng=jax.random.key(seed),
        temperature=temperature,
        top_p=top_p,
    )
  assert len(traces) == 1
  run = jax.jit(
      functools.partial(decoding.generate, fixed_step, max_length=24, top_k=3)
  )
  inner = run(
      jnp.zeros((4,)),
      jnp.zeros((4, 1), jnp.int32),
      jnp.ones((4,)),
      rng=jax.random.key(5),
      temperature=jnp.float32(0.7),
  )
  np.testing.assert_array_equal(
      inner.tokens, _fixed_generate(5, temperature=0.7, top_k=3)
  )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompts=jnp.zeros((3,), jnp.int32)), "prompts"),
        (dict(prompts=jnp.zeros((2, 3), jnp.float32)), "prompts"),
        (dict(prompt_lengths=jnp.array([1, 0])), "prompt_lengths"),
        (dict(prompt_lengths=jnp.array([1, 4])), "prompt_lengths"),
        (dict(prompt_lengths=jnp.array([1])), "prompt_lengths"),
        (dict(max_length=2), "max_length"),
        (dict(temperature=-0.5), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(eos_id=1.5), "eos_id"),
        (dict(prefill_length=1), "prefill_length"),
        (dict(prefill_fn=history_prefill), "prefill_length"),
        (dict(prefill_fn=history_prefill, prefill_length=2), "prefill_length"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
  args = dict(
      prompts=jnp.zeros((2, 3), jnp.int32),
      prompt_lengths=jnp.array([1, 3]),
      max_length=5,
      rng=jax.random.key(0),
  )
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    decoding.generate(successor_step, jnp.zeros((), jnp.int32), **args)
