# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.nn.model: causality, scan layout, golden params,
config.

Compilation dominates the cost of these tests on a 2-core CPU, so each test
compiles at most one or two programs: k-means training and the checked
forward pass run in one jitted function, and the variables are filled with
numpy draws on top of `jax.eval_shape(init)` (the real `model.init` is traced
by the golden test, never compiled). Regenerate the golden file with
`REGEN_GOLDEN=1 python -m pytest tests/model_test.py -k golden`.
"""

import functools
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import routing_jax as rj
from routing_jax.nn import layers
from routing_jax.nn import model as M

from helpers import model_variables

GOLDEN = os.path.join(
    os.path.dirname(__file__), "testdata", "model_params_small.json"
)

TEXT = model_variables.SMALL_TEXT  # 3 layers, routing in layers 1 and 2
IMAGE = dict(
    TEXT,
    vocab_size=256,
    position="learned2d",
    image_shape=(4, 4, 3),
    max_len=48,
    ffn="relu",
)
GOLDEN_CFG = dict(TEXT, routing_layers="1", emb_dim=16)


def _cfg(base, **kw):
  return rj.ModelConfig(**model_variables.merged(base, **kw))


@functools.lru_cache(maxsize=None)
def _trained_forward(cfg):
  """jit(variables, tokens) -> logits after 3 k-means training steps."""
  model = rj.TransformerLM(cfg)

  def fn(variables, tokens):
    v = model_variables.train_kmeans(model, variables, length=tokens.shape[1])
    return model.apply(v, tokens)[0]

  return jax.jit(fn)


# --------------------------------------------------------------- causality


def _perturbed_batch(n, vocab, cuts, seed=0):
  """Row 0: a base sequence; row j+1: base with tokens after cuts[j] random."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, vocab, n)
  rows = [base]
  for i in cuts:
    row = base.copy()
    row[i + 1 :] = rng.integers(0, vocab, n - i - 1)
    rows.append(row)
  return jnp.asarray(np.stack(rows), jnp.int32)


def _causality_gaps(cfg, n):
  cuts = sorted({0, 1, 3, n // 4, n // 2 - 1, n // 2 + 3, 3 * n // 4, n - 2})
  tokens = _perturbed_batch(n, cfg.vocab_size, cuts)
  model = rj.TransformerLM(cfg)
  logits = np.asarray(
      _trained_forward(cfg)(model_variables.random_variables(model), tokens)
  )
  past, future = [], []
  for j, i in enumerate(cuts):
    diff = np.abs(logits[j + 1] - logits[0]).max(-1)  # [n]
    past.append(diff[: i + 1].max())
    future.append(diff[i + 1 :].max())
  return np.array(past), np.array(future)


@pytest.mark.parametrize(
    "name,kw,n",
    [
        ("mixed_relative", dict(TEXT), 32),
        # Both layer layouts: python loop above, nn.scan segments here.
        pytest.param(
            "mixed_rope_scan",
            dict(TEXT, position="rope", scan_layers=True),
            32,
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "image_learned2d_scan",
            dict(IMAGE, scan_layers=True),
            48,
            marks=pytest.mark.slow,
        ),
    ],
)
def test_causal_whole_model(name, kw, n):
  """Logits at positions <= i do not move when tokens after i change."""
  del name
  past, future = _causality_gaps(rj.ModelConfig(**kw), n)
  assert past.max() <= 1e-5, past
  # The perturbation is felt after i: the check is not vacuous.
  assert future.min() > 1e-3, future


@pytest.mark.slow
def test_topk_routing_leaks_the_future():
  """The paper's balanced routing is not causal (docs/paper.md §4.2).

  The same probe as above must see it, so it would also catch a leak in the
  causal mode.
  """
  cfg = _cfg(TEXT, routing=dict(mode="topk", num_clusters=2, window=8))
  past, _ = _causality_gaps(cfg, 32)
  assert past.max() > 1e-3, past


# ---------------------------------------------------------- scan vs loop


SCAN_CFG = dict(TEXT, routing_layers="1")  # three segments: F, T, F


@functools.lru_cache(maxsize=None)
def _eval_and_train(cfg):
  """jit(variables, tokens) -> (eval logits, eval aux, train logits, kmeans)."""
  model = rj.TransformerLM(cfg)

  def fn(variables, tokens):
    logits, aux = model.apply(variables, tokens)
    (tlogits, _), new = model.apply(
        variables,
        tokens,
        train=True,
        mutable=["kmeans"],
        rngs={"dropout": jax.random.key(0)},
    )
    return logits, aux, tlogits, new["kmeans"]

  return jax.jit(fn)


def _assert_trees_close(a, b, atol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


@pytest.mark.parametrize(
    "remat",
    [
        "none",
        pytest.param("full", marks=pytest.mark.slow),
        pytest.param("dots_saveable", marks=pytest.mark.slow),
    ],
)
def test_scan_matches_python_loop(remat):
  loop_cfg = _cfg(SCAN_CFG)
  scan_cfg = _cfg(SCAN_CFG, scan_layers=True, remat_policy=remat)
  assert [s[1:] for s in M.segments(loop_cfg.routing_mask())] == [
      (0, 1),
      (1, 1),
      (2, 1),
  ]
  loop_vars = model_variables.random_variables(rj.TransformerLM(loop_cfg))
  scan_vars = {c: M.loop_to_scan(t, scan_cfg) for c, t in loop_vars.items()}
  # The converted tree has exactly the scanned model's structure.
  scan_abstract = jax.eval_shape(
      lambda: nn.unbox(
          M.init_variables(rj.TransformerLM(scan_cfg), jax.random.key(0), 1, 16)
      )
  )
  assert jax.tree.map(lambda a: a.shape, scan_abstract) == jax.tree.map(
      lambda a: a.shape, scan_vars
  )
  tokens = _perturbed_batch(32, 32, [5])
  ref = _eval_and_train(loop_cfg)(loop_vars, tokens)
  got = _eval_and_train(scan_cfg)(scan_vars, tokens)
  _assert_trees_close(ref[:3], got[:3], atol=1e-5)
  # Same k-means update, once converted back to the loop layout.
  _assert_trees_close(ref[3], M.scan_to_loop(got[3], scan_cfg), atol=1e-6)
  assert not np.allclose(
      ref[3]["layer_1"]["routing"]["kmeans"]["centroids"],
      loop_vars["kmeans"]["layer_1"]["routing"]["kmeans"]["centroids"],
  )


def test_loop_scan_conversion_round_trips():
  cfg = _cfg(SCAN_CFG, scan_layers=True)
  v = model_variables.random_variables(rj.TransformerLM(_cfg(SCAN_CFG)))
  back = {c: M.scan_to_loop(M.loop_to_scan(t, cfg), cfg) for c, t in v.items()}
  _assert_trees_close(v, back, atol=0)


@pytest.mark.slow
def test_scan_remat_gradients_match_python_loop():
  """Remat changes what the backward pass stores, never the gradient."""
  loop_cfg = _cfg(SCAN_CFG)
  scan_cfg = _cfg(SCAN_CFG, scan_layers=True, remat_policy="dots_saveable")
  loop_vars = model_variables.random_variables(rj.TransformerLM(loop_cfg))
  scan_vars = {c: M.loop_to_scan(t, scan_cfg) for c, t in loop_vars.items()}
  tokens = _perturbed_batch(32, 32, [5])

  def grads(cfg, variables):
    model = rj.TransformerLM(cfg)

    def loss(params):
      logits, aux = model.apply(dict(variables, params=params), tokens)
      lp = jax.nn.log_softmax(logits[:, :-1])
      nll = -jnp.take_along_axis(lp, tokens[:, 1:, None], -1).mean()
      return nll + aux["kmeans_loss"]

    return jax.jit(jax.grad(loss))(variables["params"])

  ref = grads(loop_cfg, loop_vars)
  got = M.scan_to_loop(grads(scan_cfg, scan_vars), scan_cfg)
  _assert_trees_close(ref, got, atol=1e-5)


# ------------------------------------------------------------------ golden


def _param_table(cfg):
  """path -> {shape, dtype, axes} of the boxed init tree (params, kmeans)."""
  model = rj.TransformerLM(cfg)
  boxed = jax.eval_shape(
      lambda: M.init_variables(model, jax.random.key(0), 1, 16)
  )
  table = {}
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned)
  )[0]
  for path, leaf in leaves:
    value = leaf.value if isinstance(leaf, nn.Partitioned) else leaf
    names = leaf.names if isinstance(leaf, nn.Partitioned) else None
    key = "/".join(str(p.key) for p in path)
    table[key] = {
        "shape": list(value.shape),
        "dtype": str(value.dtype),
        "axes": None if names is None else list(names),
    }
  return table


def _golden_tables():
  return {
      "loop": _param_table(_cfg(GOLDEN_CFG)),
      "scan": _param_table(_cfg(GOLDEN_CFG, scan_layers=True)),
  }


def _dump_golden():
  """Rewrites the golden file from the current model (review the diff!)."""
  os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
  config = {
      k: list(v) if isinstance(v, tuple) else v
      for k, v in sorted(GOLDEN_CFG.items())
  }
  lines = ["{", f' "config": {json.dumps(config)},']
  tables = _golden_tables()
  for i, (layout, table) in enumerate(sorted(tables.items())):
    lines.append(f" {json.dumps(layout)}: {{")
    rows = [
        f"  {json.dumps(path)}: {json.dumps(table[path], sort_keys=True)}"
        for path in sorted(table)
    ]
    lines.append(",\n".join(rows))
    lines.append(" }" + ("," if i < len(tables) - 1 else ""))
  lines.append("}")
  with open(GOLDEN, "w") as f:
    f.write("\n".join(lines) + "\n")


def test_golden_param_shapes_dtypes_and_axes():
  if os.environ.get("REGEN_GOLDEN") == "1":
    _dump_golden()
  with open(GOLDEN) as f:
    golden = json.load(f)
  assert golden["config"] == {
      k: list(v) if isinstance(v, tuple) else v for k, v in GOLDEN_CFG.items()
  }
  got = _golden_tables()
  for layout in ("loop", "scan"):
    assert got[layout] == golden[layout], layout
    for path, entry in got[layout].items():
      # Every variable carries one logical axis name per dimension.
      assert entry["axes"] is not None, path
      assert len(entry["axes"]) == len(entry["shape"]), path
      assert all(isinstance(a, str) and a for a in entry["axes"]), path
      # Float32 everywhere but the k-means update counter (an integer).
      want = "int32" if path.endswith("/num_updates") else "float32"
      assert entry["dtype"] == want, path
  assert all(
      e["axes"][0] == "layers"
      for p, e in got["scan"].items()
      if p.split("/")[1].startswith("layers_")
  )


def test_each_logical_axis_name_has_one_size():
  sizes = {}
  for path, entry in _param_table(_cfg(GOLDEN_CFG)).items():
    for name, size in zip(entry["axes"], entry["shape"]):
      if name in ("embed", "emb", "vocab", "mlp", "kv", "clusters"):
        sizes.setdefault(name, {})[path] = size
  for name, by_path in sizes.items():
    assert len(set(by_path.values())) == 1, (name, by_path)


# ------------------------------------------------------------------- image


def test_image_model_runs_and_embeds_previous_subpixel_channel():
  cfg = _cfg(IMAGE)
  model = rj.TransformerLM(cfg)
  variables = model_variables.random_variables(model, seed=3)
  tokens = jnp.asarray(
      np.random.default_rng(1).integers(0, 256, (2, 48)), jnp.int32
  )

  @jax.jit
  def run(variables, tokens):
    (logits, _), inter = model.apply(
        variables,
        tokens,
        capture_intermediates=lambda m, _: m.name == "embed",
        mutable=["intermediates"],
    )
    return logits, inter["intermediates"]["embed"]["__call__"][0]

  logits, emb = run(variables, tokens)
  assert logits.shape == (2, 48, 256) and np.isfinite(logits).all()
  # Hand computation: position i (row r, column c, channel ch) embeds the
  # previous sub-pixel's value with the previous channel's table block,
  # scaled by √d, plus the row and column embeddings of its own channel.
  p = jax.tree.map(np.asarray, variables["params"]["embed"])
  table, rows, cols = (
      p["subpixel_embedding"],
      p["row_embedding"],
      p["col_embedding"],
  )
  h, w, c = cfg.image_shape
  tok = np.asarray(tokens)
  want = np.zeros((2, 48, cfg.d_model))
  for b in range(2):
    for i in range(48):
      r, col, ch = i // (w * c), (i // c) % w, i % c
      want[b, i] = rows[r, ch] + cols[col, ch]
      if i > 0:
        prev_ch = (i - 1) % c
        want[b, i] += table[prev_ch * 256 + tok[b, i]] * math.sqrt(cfg.d_model)
  np.testing.assert_allclose(np.asarray(emb), want, atol=1e-5, rtol=1e-5)
  # And the standalone module agrees with the model's embedding.
  direct = layers.ImageEmbed(cfg.image_shape, cfg.d_model).apply(
      {"params": p}, tokens, jnp.arange(48)
  )
  np.testing.assert_allclose(np.asarray(direct), want, atol=1e-5, rtol=1e-5)


def test_image_size_mismatch_is_an_error():
  with pytest.raises(ValueError, match=r"image_shape.*max_len=40"):
    _cfg(IMAGE, max_len=40)


# ------------------------------------------------------------- bad config


@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(d_model=30, num_heads=4), "num_heads"),
        (dict(num_routing_heads=5), "num_routing_heads"),
        (dict(routing_layers="0,7"), "routing_layers"),
        (dict(routing_layers="last:9"), "routing_layers"),
        (dict(routing_layers="1;2"), "routing_layers"),
        (dict(routing=dict(window=0)), r"routing\.window"),
        (dict(routing=dict(num_clusters=0)), r"routing\.num_clusters"),
        (dict(routing=dict(kmeans=dict(decay=1.0))), r"routing\.kmeans\.decay"),
        (dict(ffn="swiglu"), "ffn"),
        (dict(norm="sandwich"), "norm"),
        (dict(position="alibi"), "position"),
        (dict(routing=dict(mode="lsh")), r"routing\.mode"),
        (dict(routing=dict(mode="causal"), causal=False), r"routing\.mode"),
        (dict(memory_flange=12), "memory_flange"),
        (dict(image_shape=(4, 4, 2)), "image_shape"),
        (dict(IMAGE, image_shape=(4, 4, 2)), "image_shape"),
        (dict(residual_dropout=1.0), "residual_dropout"),
        (dict(init_scale=0.0), "init_scale"),
        (dict(init_mode="lecun"), "init_mode"),
    ],
)
def test_bad_config_names_the_field(kw, field):
  with pytest.raises(ValueError, match=rf"model\.{field}\b"):
    _cfg(TEXT, **kw)


@pytest.mark.parametrize(
    "scale,mode,fan",
    [
        (0.2, "fan_avg", lambda i, o: (i + o) / 2),
        (1 / 3, "fan_in", lambda i, o: i),
    ],
)
def test_kernel_init_follows_init_scale_and_init_mode(scale, mode, fan):
  # Uniform variance scaling: every dense kernel's variance is scale / fan
  # (fan_in with 1/3 is torch's nn.Linear default), checked on the largest
  # kernels, whose sample variance is within 3% of the target.
  cfg = _cfg(TEXT, d_model=64, d_ff=256, init_scale=scale, init_mode=mode)
  params = nn.unbox(
      jax.jit(rj.TransformerLM(cfg).init)(
          jax.random.key(0), jnp.zeros((1, 8), jnp.int32)
      )["params"]
  )
  ffn = params["layer_0"]["ffn"]
  for name in ("wi_gate", "wi_linear", "wo"):
    k = np.asarray(ffn[name]["kernel"])
    fan_in, fan_out = k.shape
    np.testing.assert_allclose(k.var(), scale / fan(fan_in, fan_out), rtol=0.03)


def test_routing_fields_under_their_old_names_say_where_they_went():
  with pytest.raises(ValueError, match=r"window -> model\.routing\.window"):
    rj.ModelConfig.from_config(dict(TEXT, window=8))
  with pytest.raises(ValueError, match=r"kmeans_decay -> model\.routing"):
    rj.ModelConfig.from_config(dict(TEXT, kmeans_decay=0.9))


def test_from_config_rejects_unknown_fields_and_accepts_configdict():
  cd = ml_collections.ConfigDict(dict(TEXT))
  assert rj.ModelConfig.from_config(cd) == _cfg(TEXT)
  cd.num_head = 4  # a typo
  with pytest.raises(ValueError, match=r"unknown field.*num_head"):
    rj.ModelConfig.from_config(cd)
  with pytest.raises(ValueError, match=r"model\.num_heads"):
    rj.ModelConfig.from_config(dict(TEXT, num_heads=5))


def test_config_is_frozen_and_routing_mask_parses():
  cfg = _cfg(TEXT)
  with pytest.raises(AttributeError):
    cfg.num_layers = 4  # pytype: disable=not-writable
  assert cfg.routing_mask() == (False, True, True)
  assert _cfg(TEXT, routing_layers="last:1").routing_mask() == (
      False,
      False,
      True,
  )
  assert _cfg(TEXT, routing_layers="skip_first:1").routing_mask() == (
      False,
      True,
      True,
  )
  # The routing section is a RoutingConfig, validated on its own.
  assert isinstance(cfg.routing, rj.RoutingConfig)
  assert cfg.routing.kmeans == rj.KMeansConfig(decay=0.9)
  with pytest.raises(ValueError, match=r"model\.routing\.window=0"):
    _cfg(TEXT, routing_layers="none", routing=dict(window=0))


# -------------------------------------------------------------- aux losses


def _layer_norm(x):
  x = x.astype(np.float64)
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6)


def test_kmeans_loss_is_the_sum_of_per_layer_losses():
  """Recomputes every routing layer's commitment loss and cluster stats."""
  cfg = _cfg(TEXT)
  model = rj.TransformerLM(cfg)
  variables = model_variables.random_variables(model, seed=1)
  tokens = _perturbed_batch(32, 32, [3, 20])

  @jax.jit
  def run(variables, tokens):
    (_, aux), inter = model.apply(
        variables,
        tokens,
        mutable=["intermediates"],
        capture_intermediates=lambda m, _: m.name == "query",
    )
    return aux, inter["intermediates"]

  aux, inter = run(variables, tokens)
  h, k, d = cfg.num_routing_heads, cfg.routing.num_clusters, cfg.head_dim
  losses, stats = [], []
  for layer in ("layer_1", "layer_2"):
    q = np.asarray(inter[layer]["routing"]["query"]["__call__"][0])
    x = _layer_norm(q.reshape(q.shape[:2] + (h, d)))  # [b, n, h, d]
    mu = np.asarray(
        variables["kmeans"][layer]["routing"]["kmeans"]["centroids"], np.float64
    )  # [h, k, d]
    assign = np.einsum("bnhd,hkd->bnhk", x, mu).argmax(-1)  # [b, n, h]
    picked = mu[np.arange(h)[None, None], assign]
    losses.append(
        cfg.routing.kmeans.commitment_weight * np.mean((x - picked) ** 2)
    )
    counts = np.stack(
        [(assign[..., i, None] == np.arange(k)).sum((0, 1)) for i in range(h)]
    )  # [h, k]
    share = counts / counts.sum(-1, keepdims=True)
    ent = -np.sum(
        np.where(share > 0, share * np.log(np.maximum(share, 1e-30)), 0), -1
    )
    stats.append({
        "entropy": ent.mean(),
        "empty_fraction": (counts == 0).mean(),
        "max_share": share.max(-1).mean(),
    })
  assert "layer_0" not in inter or "routing" not in inter["layer_0"]
  np.testing.assert_allclose(aux["kmeans_loss"], sum(losses), rtol=1e-4)
  assert aux["kmeans_loss"] > 0
  for key in ("entropy", "empty_fraction", "max_share"):
    np.testing.assert_allclose(
        aux[key], np.mean([s[key] for s in stats]), rtol=1e-5, atol=1e-6
    )
  assert 0 <= aux["entropy"] <= math.log(k) + 1e-6
  assert 0 <= aux["empty_fraction"] <= 1
  assert 1 / k - 1e-6 <= aux["max_share"] <= 1


# ------------------------------------------------- embeddings and norms


def test_tied_factorised_prenorm_model_without_routing():
  """Tied output through the factorised table; no routing: zero aux."""
  cfg = _cfg(
      TEXT, tie_embeddings=True, emb_dim=16, norm="pre", routing_layers="none"
  )
  model = rj.TransformerLM(cfg)
  variables = model_variables.random_variables(model, seed=2)
  assert "kmeans" not in variables
  tokens = _perturbed_batch(32, 32, [7])

  @jax.jit
  def run(variables, tokens):
    (logits, aux), inter = model.apply(
        variables,
        tokens,
        mutable=["intermediates"],
        capture_intermediates=lambda m, _: m.name == "out_emb",
    )
    return logits, aux, inter["intermediates"]["out_emb"]["__call__"][0]

  logits, aux, hidden = run(variables, tokens)
  table = np.asarray(variables["params"]["embed"]["embedding"])  # [V, E]
  assert hidden.shape == (2, 32, 16)
  np.testing.assert_allclose(
      np.asarray(logits),
      np.einsum("bne,ve->bnv", hidden, table),
      atol=1e-4,
      rtol=1e-4,
  )
  assert {k: float(v) for k, v in aux.items()} == {
      "kmeans_loss": 0.0,
      "entropy": 0.0,
      "empty_fraction": 0.0,
      "max_share": 0.0,
  }


def _tree_shapes(cfg):
  model = rj.TransformerLM(cfg)
  return jax.tree.map(
      lambda a: a.shape,
      jax.eval_shape(
          lambda: nn.unbox(M.init_variables(model, jax.random.key(0), 1, 16))
      ),
  )


def test_embedding_and_norm_options_shape_the_param_tree():
  base = _tree_shapes(_cfg(TEXT))["params"]
  assert base["embed"] == {"embedding": (32, 32)}
  assert base["logits"]["kernel"] == (32, 32)
  assert "out_emb" not in base and "final_norm" not in base

  tied = _tree_shapes(_cfg(TEXT, tie_embeddings=True))["params"]
  assert "logits" not in tied
  assert jax.tree.structure(dict(tied, logits=base["logits"])) == (
      jax.tree.structure(base)
  )

  fact = _tree_shapes(_cfg(TEXT, emb_dim=16))["params"]
  assert fact["embed"]["embedding"] == (32, 16)
  assert fact["embed"]["emb_dense"] == {"kernel": (16, 32), "bias": (32,)}
  assert fact["out_emb"] == {"kernel": (32, 16), "bias": (16,)}
  assert fact["logits"]["kernel"] == (16, 32)

  pre = _tree_shapes(_cfg(TEXT, norm="pre"))["params"]
  assert pre["final_norm"] == {"scale": (32,), "bias": (32,)}
  assert {k: v for k, v in pre.items() if k != "final_norm"} == base

  relu = _tree_shapes(_cfg(TEXT, ffn="relu"))["params"]["layer_0"]["ffn"]
  assert relu == {
      "wi": {"kernel": (32, 64), "bias": (64,)},
      "wo": {"kernel": (64, 32), "bias": (32,)},
  }
  geglu = _tree_shapes(_cfg(TEXT))["params"]["layer_0"]["ffn"]
  assert all(set(p) == {"kernel"} for p in geglu.values())
  biased = _tree_shapes(_cfg(TEXT, ffn_bias=True))["params"]["layer_0"]["ffn"]
  assert biased == {
      "wi_gate": {"kernel": (32, 64), "bias": (64,)},
      "wi_linear": {"kernel": (32, 64), "bias": (64,)},
      "wo": {"kernel": (64, 32), "bias": (32,)},
  }
  no_bias = _tree_shapes(_cfg(TEXT, ffn="relu", ffn_bias=False))["params"]
  assert set(no_bias["layer_0"]["ffn"]["wi"]) == {"kernel"}


def test_embedding_dropout_acts_before_the_projection():
  """Dropout zeroes E-dimensional table rows, not H-dimensional outputs.

  With a zero bias on the E -> H projection, dropout after the projection
  would zero about half of the outputs exactly; before it, an output is 0
  only if all 8 inputs to it were dropped (probability 2^-8).
  """
  embed = layers.TextEmbed(vocab_size=32, emb_dim=8, d_model=64, dropout=0.5)
  tokens = jnp.arange(32)[None]
  variables = nn.unbox(embed.init(jax.random.key(0), tokens))
  x = np.asarray(
      embed.apply(
          variables, tokens, train=True, rngs={"dropout": jax.random.key(1)}
      )
  )
  assert (x == 0).mean() < 0.05
  rows = np.asarray(variables["params"]["embedding"])[:32]
  # Each output row is the projection of the table row with some of its 8
  # entries zeroed and the rest scaled by 2.
  kernel = np.asarray(variables["params"]["emb_dense"]["kernel"])
  dropped = x @ np.linalg.pinv(kernel)  # [1, 32, 8] back in E space
  kept = np.isclose(dropped[0], 2 * rows, atol=1e-4)
  zeroed = np.isclose(dropped[0], 0.0, atol=1e-4)
  assert (kept | zeroed).all() and 0.3 < zeroed.mean() < 0.7
  np.testing.assert_array_equal(embed.apply(variables, tokens)[0] != 0, True)


def test_routing_heads_positions_and_logit_scale_are_their_own():
  """routing.position gives the routing heads another position encoding
  than the local heads (e.g. RoPE, which rotates by token position, with
  Shaw tables for the local heads); routing.logit_scale multiplies their
  LN(q)·LN(k) logits."""
  cfg = rj.ModelConfig(
      vocab_size=32,
      d_model=32,
      num_heads=4,
      num_routing_heads=2,
      num_layers=1,
      routing=rj.RoutingConfig(num_clusters=2, window=8, position="rope"),
      query_block=8,
      memory_flange=8,
      max_len=32,
      position="relative",
  )
  assert M.routing_attention(cfg).position_kind == "rope"
  follow = cfg.replace(routing=cfg.routing.replace(position=None))
  assert M.routing_attention(follow).position_kind == "relative"
  tokens = jnp.arange(24, dtype=jnp.int32)[None] % 32
  model = M.TransformerLM(cfg)
  variables = model.init(jax.random.key(0), tokens)
  # RoPE routing heads have no relative tables; the local heads keep theirs.
  layer = variables["params"]["layer_0"]
  assert "rel_key" not in layer["routing"] and "rel_key" in layer["local"]
  logits = lambda c: M.TransformerLM(c).apply(variables, tokens)[0]
  scaled = logits(cfg.replace(routing=cfg.routing.replace(logit_scale=4.0)))
  assert np.abs(np.asarray(scaled) - np.asarray(logits(cfg))).max() > 1e-4
