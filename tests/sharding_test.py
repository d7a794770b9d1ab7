# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.training.sharding on 8 fake CPU devices (see
conftest.py)."""

import types

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np
import optax
import pytest

from routing_jax.training import sharding

VOCAB, EMBED, MLP, HEADS, CLUSTERS, KV = 32, 16, 32, 2, 4, 8
BATCH, LENGTH = 8, 16
RULES = sharding.logical_rules()


def _mesh(data, fsdp, tensor):
  n = data * fsdp * tensor
  return sharding.create_mesh(
      dict(data=data, fsdp=fsdp, tensor=tensor), jax.devices()[:n]
  )


# ----------------------------------------------------------------- mesh


def test_create_mesh_fills_minus_one_and_uses_auto_axes():
  mesh = sharding.create_mesh(dict(data=-1, fsdp=2, tensor=2))
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert mesh.axis_types == (AxisType.Auto,) * 3
  # Every device exactly once.
  ids = sorted(d.id for d in mesh.devices.flat)
  assert ids == sorted(d.id for d in jax.devices())

  cfg = types.SimpleNamespace(data=1, fsdp=-1, tensor=1)  # attribute access
  assert dict(sharding.create_mesh(cfg).shape)["fsdp"] == 8
  four = sharding.create_mesh(
      dict(data=2, fsdp=1, tensor=-1), jax.devices()[:4]
  )
  assert four.devices.shape == (2, 1, 2)


@pytest.mark.parametrize(
    "cfg, message",
    [
        (dict(data=-1, fsdp=-1, tensor=2), "At most one of"),
        (dict(data=1, fsdp=3, tensor=-1), r"mesh.fsdp=3 does not divide 8"),
        (dict(data=0, fsdp=1, tensor=-1), r"mesh.data=0 must be >= 1"),
        (dict(data=1, fsdp=1, tensor=-2), r"mesh.tensor=-2 must be >= 1"),
        (dict(data=2, fsdp=2, tensor=1), r"must equal the device count 8"),
        (dict(data=4, fsdp=4, tensor=-1), r"= 16 does not divide 8"),
        (dict(data=1, fsdp=1), r"mesh.tensor is missing"),
        (dict(data=1.5, fsdp=1, tensor=-1), r"mesh.data=1.5 must be an int"),
    ],
)
def test_create_mesh_errors_name_the_field(cfg, message):
  with pytest.raises(ValueError, match=message):
    sharding.create_mesh(cfg)


# ---------------------------------------------------------------- rules


def test_rules_resolve_logical_names():
  to_mesh = lambda names: nn.logical_to_mesh_axes(names, RULES)
  assert to_mesh(("embed", "mlp")) == P("fsdp", "tensor")
  assert to_mesh(("vocab", "embed")) == P("tensor", "fsdp")
  assert to_mesh(("layers", "embed", "heads")) == P(None, "fsdp", "tensor")
  assert to_mesh(("heads", "clusters", "kv")) == P("tensor", None, None)
  # Batch wins fsdp over embed; the sequence axis is never sharded.
  assert to_mesh(("batch", "length", "embed")) == P(
      ("data", "fsdp"), None, None
  )
  assert to_mesh((
      "activation_batch",
      "activation_length",
      "activation_heads",
      "activation_kv",
  )) == P(("data", "fsdp"), None, "tensor", None)


def test_logical_rules_overrides():
  rules = sharding.logical_rules([("kv", "tensor"), ("experts", ["fsdp"])])
  names = [n for n, _ in rules]
  assert names.index("kv") == [n for n, _ in sharding.DEFAULT_RULES].index("kv")
  assert dict(rules)["kv"] == "tensor"
  assert rules[-1] == ("experts", ("fsdp",))
  with pytest.raises(ValueError, match="mesh axis 'model'"):
    sharding.logical_rules([("mlp", "model")])
  with pytest.raises(ValueError, match=r"overrides\[0\]"):
    sharding.logical_rules([("mlp",)])


# ----------------------------------------------------------- tiny model


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  kmeans: dict
  rng: jax.Array


def _dense(features, axes, name):
  return nn.Dense(
      features,
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), axes
      ),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), axes[-1:]
      ),
      name=name,
  )


class TinyLM(nn.Module):
  """Embedding, two residual MLP blocks, a kmeans-like EMA variable."""

  @nn.compact
  def __call__(self, tokens):
    emb = self.param(
        "embedding",
        nn.with_logical_partitioning(
            nn.initializers.normal(1.0), ("vocab", "embed")
        ),
        (VOCAB, EMBED),
    )
    x = jnp.take(emb, tokens, axis=0)  # [batch, length, embed]
    x = nn.with_logical_constraint(
        x, ("activation_batch", "activation_length", "activation_embed")
    )
    centroids = self.variable(
        "kmeans",
        "centroids",
        nn.with_logical_partitioning(
            lambda: jnp.zeros((HEADS, CLUSTERS, KV)),
            ("heads", "clusters", "kv"),
        ),
    )
    for i in range(2):
      h = nn.gelu(_dense(MLP, ("embed", "mlp"), f"up_{i}")(x))
      h = nn.with_logical_constraint(
          h, ("activation_batch", "activation_length", "activation_mlp")
      )
      x = x + _dense(EMBED, ("mlp", "embed"), f"down_{i}")(h)
    if not self.is_initializing():
      mean = jax.lax.stop_gradient(x.mean((0, 1)))  # [embed]
      new = jnp.broadcast_to(mean.reshape(HEADS, 1, KV), centroids.value.shape)
      centroids.value = 0.9 * centroids.value + 0.1 * new
    return _dense(VOCAB, ("embed", "vocab"), "out")(x)


def _optimizer(name):
  return {
      "sgd": optax.sgd(0.5),
      "adamw": optax.adamw(1e-2),
      "adafactor": optax.adafactor(1e-2, min_dim_size_to_factor=8),
  }[name]


def _init_fn(tx):
  def init(rng):
    variables = TinyLM().init(rng, jnp.zeros((BATCH, LENGTH), jnp.int32))
    params = variables["params"]  # boxed: tx.init inherits the names
    return TrainState(
        step=jnp.int32(0),
        params=params,
        opt_state=tx.init(params),
        kmeans=variables["kmeans"],
        rng=rng,
    )

  return init


def _train_step(tx):
  def step(state, batch):
    def loss_fn(params):
      logits, new_vars = TinyLM().apply(
          {"params": params, "kmeans": state.kmeans},
          batch["inputs"],
          mutable=["kmeans"],
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(
          logits, batch["targets"]
      ).mean()
      return loss, new_vars["kmeans"]

    (loss, kmeans), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return (
        state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            kmeans=kmeans,
        ),
        loss,
    )

  return step


def _batches():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, VOCAB, (3, BATCH, LENGTH + 1), dtype=np.int32)
  return [{"inputs": t[:, :-1], "targets": t[:, 1:]} for t in tokens]


def _train(mesh, opt_name, steps=3):
  tx = _optimizer(opt_name)
  state, state_sh = sharding.create_sharded_state(
      _init_fn(tx), mesh, RULES, jax.random.key(0)
  )
  batch_sh = sharding.data_sharding(mesh)
  step = jax.jit(
      _train_step(tx),
      in_shardings=(state_sh, batch_sh),
      out_shardings=(state_sh, sharding.replicated(mesh)),
      donate_argnums=0,
  )
  losses = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    for batch in _batches()[:steps]:
      state, loss = step(state, sharding.make_global_batch(batch, mesh))
      losses.append(float(loss))
  return state, state_sh, losses


def test_kernel_sharding_and_local_shard_shape():
  mesh = _mesh(2, 2, 2)
  state, state_sh = sharding.create_sharded_state(
      _init_fn(optax.adamw(1e-3)), mesh, RULES, jax.random.key(0)
  )
  kernel = state.params["up_0"]["kernel"]
  assert kernel.shape == (EMBED, MLP)
  assert state_sh.params["up_0"]["kernel"].spec == P("fsdp", "tensor")
  assert kernel.sharding.spec == P("fsdp", "tensor")
  for shard in kernel.addressable_shards:
    assert shard.data.shape == (EMBED // 2, MLP // 2)
  # adamw moments shard like the params; count, step and rng replicate.
  mu = state.opt_state[0].mu["up_0"]["kernel"]
  assert mu.sharding.spec == P("fsdp", "tensor")
  assert state.opt_state[0].count.sharding.is_fully_replicated
  assert state.step.sharding.is_fully_replicated
  assert state.rng.sharding.is_fully_replicated
  # kmeans shards like its heads.
  assert state.kmeans["centroids"].sharding.spec == P("tensor", None, None)
  sharding.assert_sufficiently_sharded(state.params, min_bytes=EMBED * MLP * 4)


@pytest.mark.parametrize("opt_name", ["sgd", "adamw", "adafactor"])
def test_sharded_training_matches_single_device(opt_name):
  state8, _, losses8 = _train(_mesh(2, 2, 2), opt_name)
  state1, _, losses1 = _train(_mesh(1, 1, 1), opt_name)
  assert np.all(np.isfinite(losses8))
  assert len(set(losses8)) == 3  # the parameters did move
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  assert int(state8.step) == int(state1.step) == 3
  np.testing.assert_allclose(
      np.asarray(state8.kmeans["centroids"]),
      np.asarray(state1.kmeans["centroids"]),
      rtol=1e-5,
      atol=1e-6,
  )
  assert np.abs(np.asarray(state8.kmeans["centroids"])).sum() > 0


def test_adafactor_state_shards():
  mesh = _mesh(2, 2, 2)
  abstract = jax.eval_shape(
      _init_fn(_optimizer("adafactor")), jax.random.key(0)
  )
  shardings = sharding.state_shardings(abstract, mesh, RULES)
  factored = shardings.opt_state[0]
  # Factored moments carry the kernel's 2 names over 1 dimension: they
  # shard like the kernel without the reduced axis (either name fits).
  assert factored.v_row["up_0"]["kernel"].spec in (P("fsdp"), P("tensor"))
  assert factored.v_col["up_0"]["kernel"].spec in (P("fsdp"), P("tensor"))
  assert shardings.params["up_0"]["kernel"].spec == P("fsdp", "tensor")
  # The jitted init accepts these shardings (training: see the test above).
  state, _ = sharding.create_sharded_state(
      _init_fn(_optimizer("adafactor")), mesh, RULES, jax.random.key(0)
  )
  assert state.params["up_0"]["kernel"].sharding.spec == P("fsdp", "tensor")
  assert state.opt_state[0].v_row["up_0"]["kernel"].shape == (EMBED,)


def test_every_logical_axis_needs_a_rule():
  """An axis name without a rule is an error, not a silent full copy."""
  mesh = _mesh(2, 2, 2)
  sds = jax.ShapeDtypeStruct((16, 32), jnp.float32)
  tree = {"w": nn.LogicallyPartitioned(sds, ("embed", "experts"))}
  with pytest.raises(
      ValueError, match=r"\['w'\] has logical axis 'experts'" " with no rule"
  ):
    sharding.state_shardings(tree, mesh, RULES)
  # The model's own names all have rules: emb, relpos and the image axes.
  to_mesh = lambda names: nn.logical_to_mesh_axes(names, RULES)
  assert to_mesh(("emb", "vocab")) == P("fsdp", "tensor")
  assert to_mesh(("vocab", "emb")) == P("tensor", "fsdp")
  assert to_mesh(("emb", "embed")) == P(None, "fsdp")
  for names in (("relpos", "kv"), ("image_rows", "channels", "embed")):
    sharding.state_shardings(
        {
            "t": nn.LogicallyPartitioned(
                jax.ShapeDtypeStruct((4,) * len(names), jnp.float32), names
            )
        },
        mesh,
        RULES,
    )


def test_state_shardings_fallbacks():
  mesh = _mesh(2, 2, 2)
  sds = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  tree = {
      "odd": nn.LogicallyPartitioned(sds((3, 16)), ("embed", "mlp")),
      "batch4": nn.LogicallyPartitioned(sds((2, 4)), ("batch", "kv")),
      "mesh_names": nn.Partitioned(sds((4, 4)), ("data", None)),
      "plain": sds((4, 4)),
      "key": jax.eval_shape(lambda: jax.random.key(0)),
  }
  out = sharding.state_shardings(tree, mesh, RULES)
  assert out["odd"].spec == P(None, "tensor")  # 3 not divisible by fsdp=2
  assert out["batch4"].spec == P("data", None)  # keeps the dividing prefix
  assert out["mesh_names"].spec == P("data", None)
  assert out["plain"].spec == P() and out["key"].spec == P()


def test_assert_sufficiently_sharded_flags_replicated_arrays():
  mesh = _mesh(2, 2, 2)
  big = jax.device_put(jnp.zeros((64, 64)), sharding.replicated(mesh))
  small = jax.device_put(jnp.zeros((4,)), sharding.replicated(mesh))
  sharding.assert_sufficiently_sharded({"small": small}, min_bytes=1024)
  with pytest.raises(ValueError, match=r"\['big'\] \(64, 64\)"):
    sharding.assert_sufficiently_sharded({"big": big}, min_bytes=1024)
  # Split over data only is still a whole copy per model shard.
  by_data = jax.device_put(
      jnp.zeros((64, 64)), NamedSharding(mesh, P("data", None))
  )
  with pytest.raises(ValueError, match="whole on every device"):
    sharding.assert_sufficiently_sharded({"x": by_data}, min_bytes=1024)
  # Pure data parallelism replicates by design: nothing to flag.
  dp = _mesh(8, 1, 1)
  sharding.assert_sufficiently_sharded(
      {"big": jax.device_put(jnp.zeros((64, 64)), sharding.replicated(dp))},
      min_bytes=1024,
  )


# ---------------------------------------------------------------- batch


def test_make_global_batch_round_trips():
  mesh = _mesh(2, 2, 2)
  local = {
      "inputs": (
          np.arange(BATCH * LENGTH, dtype=np.int32).reshape(BATCH, LENGTH)
      ),
      "weights": np.ones((BATCH,), np.float32),
  }
  out = sharding.make_global_batch(local, mesh)
  assert out["inputs"].sharding == sharding.data_sharding(mesh)
  np.testing.assert_array_equal(np.asarray(out["inputs"]), local["inputs"])
  np.testing.assert_array_equal(np.asarray(out["weights"]), local["weights"])
  # 4 batch shards (data * fsdp), replicated over tensor: 2 rows each.
  for shard in out["inputs"].addressable_shards:
    np.testing.assert_array_equal(
        np.asarray(shard.data), local["inputs"][shard.index]
    )
    assert shard.data.shape == (BATCH // 4, LENGTH)
  with pytest.raises(ValueError, match=r"local_batch\['inputs'\] has 6 rows"):
    sharding.make_global_batch({"inputs": local["inputs"][:6]}, mesh)


def test_attention_and_ffn_activations_follow_the_tensor_axis():
  """Head activations [batch, length, heads, head_dim] and the FFN hidden
  layer carry sharding constraints: batch over (data, fsdp), heads / mlp
  over tensor, as their kernels are (MaxText's activation rules)."""
  import re  # pylint: disable=g-import-not-at-top

  from experiments import shakespeare  # pylint: disable=g-import-not-at-top
  from routing_jax.nn.model import TransformerLM  # pylint: disable=g-import-not-at-top
  from routing_jax.training import train  # pylint: disable=g-import-not-at-top

  c = shakespeare.get_config("tiny")
  c.model.num_heads, c.model.num_routing_heads = 4, 2
  model = TransformerLM(train.validate_config(c))
  mesh = sharding.create_mesh(dict(data=4, fsdp=1, tensor=2))
  x = jnp.zeros((8, 64), jnp.int32)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.logical_rules()):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    text = (
        jax.jit(lambda v, x: model.apply(v, x)[0]).lower(variables, x).as_text()
    )
  constraints = re.findall(
      r"sharding_constraint \S+ <@mesh, (.*?)> : (\S+)", text
  )
  heads = '[{"data", "fsdp"}, {}, {"tensor"}, {}]'
  # Per layer: q, k, v of the 2 local heads and q, v of the 2 routing
  # heads (shared Q/K in this config).
  assert (
      sum(s == heads and t == "tensor<8x64x2x8xf32>" for s, t in constraints)
      == 10
  )
  ffn = '[{"data", "fsdp"}, {}, {"tensor"}]'
  assert (
      sum(s == ffn and t == "tensor<8x64x64xf32>" for s, t in constraints) == 2
  )
