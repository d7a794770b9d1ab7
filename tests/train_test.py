# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.training.train: config validation, sharded steps,
accumulation.

The model is tiny (2 layers, d_model 32, 2 local + 2 routing heads, 64
bytes x 8 sequences of Shakespeare) and the steps run through
`build_trainer` + `run_step`, exactly as the training loop runs them.
"""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import shakespeare
from routing_jax.data import input_pipeline
from routing_jax.training import sharding
from routing_jax.training import train


def _config(**train_overrides):
  """The tiny Shakespeare config with 4 heads (2 routing) and no warmup.

  A constant schedule without warmup makes the first step's update depend
  on the gradient (a warmup ramp gives lr 0 at step 0).
  """
  c = shakespeare.get_config("tiny")
  c.model.num_heads = 4
  c.model.num_routing_heads = 2
  c.train.schedule = "constant"
  c.train.warmup_steps = 0
  for k, v in train_overrides.items():
    c.train[k] = v
  return c


def _mesh(data, fsdp, tensor):
  n = data * fsdp * tensor
  return sharding.create_mesh(
      dict(data=data, fsdp=fsdp, tensor=tensor), devices=jax.devices()[:n]
  )


def _batches(config, n):
  ds = input_pipeline.create_datasets(config.data, vocab_size=256)
  return [next(ds.train) for _ in range(n)]


def _train(config, mesh, batches):
  """Runs one step per batch.

  Returns:
    (host copy of the initial state, final state, metrics per step,
    seconds per step).
  """
  model_cfg = train.validate_config(config)
  trainer, state = train.build_trainer(
      config, mesh, sharding.logical_rules(), model_cfg
  )
  initial = jax.device_get(state)  # The state is donated to the step.
  metrics, times = [], []
  for batch in batches:
    gb = sharding.make_global_batch(batch, mesh, trainer.data_sharding)
    start = time.perf_counter()
    state, m = train.run_step(trainer, trainer.train_step, state, gb)
    metrics.append(jax.device_get(m))
    times.append(time.perf_counter() - start)
  return initial, state, metrics, times


def _assert_trees_close(a, b, rtol, atol):
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for (path, x), y in zip(la, lb):
    np.testing.assert_allclose(
        np.asarray(x),
        np.asarray(y),
        rtol=rtol,
        atol=atol,
        err_msg=jax.tree_util.keystr(path),
    )


def _shard_shape(x):
  return x.sharding.shard_shape(x.shape)


def test_sharded_mesh_matches_one_device():
  config = _config()
  batches = _batches(config, 4)
  _, one, m1, t1 = _train(config, _mesh(1, 1, 1), batches)
  _, eight, m8, t8 = _train(config, _mesh(2, 2, 2), batches)
  # Step times after compilation, for the record (pytest -s shows them).
  print(
      f"\ntiny model step: 1 device {np.median(t1[1:]) * 1e3:.1f} ms, "
      f"(2,2,2) mesh {np.median(t8[1:]) * 1e3:.1f} ms"
  )
  losses1 = [float(m["loss"]) for m in m1]
  losses8 = [float(m["loss"]) for m in m8]
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  assert losses1[-1] < losses1[0]  # It trains.
  for k in ("grad_norm", "kmeans_loss", "kmeans/entropy"):
    np.testing.assert_allclose(
        [m[k] for m in m8], [m[k] for m in m1], rtol=1e-4, atol=1e-7, err_msg=k
    )
  _assert_trees_close(eight.kmeans, one.kmeans, rtol=1e-5, atol=1e-6)
  # Adam turns float32 noise in tiny gradients into lr-sized steps, so a
  # few parameters differ by much more than the losses do.
  _assert_trees_close(eight.params, one.params, rtol=1e-5, atol=2e-5)
  assert int(eight.step) == int(one.step) == 4
  # The 8-device state really is sharded: a kernel over (fsdp, tensor),
  # Adam's moments like their parameter, the centroids over their heads.
  wo = eight.params["layer_0"]["local"]["out"]["kernel"]  # [heads, embed]
  assert wo.shape == (16, 32) and _shard_shape(wo) == (8, 16)
  mu = eight.opt_state[-1][0].mu["layer_0"]["local"]["out"]["kernel"]
  assert mu.sharding == wo.sharding
  cent = eight.kmeans["layer_0"]["routing"]["kmeans"]["centroids"]
  assert _shard_shape(cent)[0] == cent.shape[0] // 2
  assert _shard_shape(one.params["layer_0"]["local"]["out"]["kernel"]) == (
      16,
      32,
  )


def test_eval_step_sums_token_losses():
  config = _config()
  mesh = _mesh(1, 1, 1)
  model_cfg = train.validate_config(config)
  trainer, state = train.build_trainer(
      config, mesh, sharding.logical_rules(), model_cfg
  )
  batch = _batches(config, 1)[0]
  batch["weights"][:, 40:] = 0.0  # Padding must not count.
  batch["mask"][:, 40:] = False
  out = jax.device_get(
      train.run_step(
          trainer,
          trainer.eval_step,
          state,
          sharding.make_global_batch(batch, mesh, trainer.data_sharding),
      )
  )
  assert float(out["weight"]) == 8 * 40
  logits, _ = jax.jit(trainer.model.apply)(
      {"params": state.params, "kmeans": state.kmeans},
      jnp.asarray(batch["inputs"]),
      mask=jnp.asarray(batch["mask"]),
  )
  logp = jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1)
  nll = -np.take_along_axis(
      np.asarray(logp), batch["targets"][..., None], axis=-1
  )[..., 0]
  np.testing.assert_allclose(
      float(out["ce"]), (nll * batch["weights"]).sum(), rtol=1e-5
  )
  # An untrained byte model is close to uniform over 256 values.
  assert abs(float(out["ce"]) / float(out["weight"]) - np.log(256)) < 0.3


def test_zero_loss_weights_do_not_hide_tokens_from_attention():
  """Loss weights are for the loss alone; the batch's mask is the padding.

  Zeroing the weights of positions 10..29 (a prompt, say) leaves the loss
  of positions 30.. unchanged; marking them as padding changes it.
  """
  config = _config()
  mesh = _mesh(1, 1, 1)
  trainer, state = train.build_trainer(
      config, mesh, sharding.logical_rules(), train.validate_config(config)
  )
  batch = _batches(config, 1)[0]
  assert batch["mask"].all()  # whole windows: no padding

  def later_loss(weights_zero, mask_zero):
    b = {k: v.copy() for k, v in batch.items()}
    b["weights"][:, :30] = 0.0  # score only positions 30..
    if weights_zero:
      b["weights"][:, 10:30] = 0.0
    if mask_zero:
      b["mask"][:, 10:30] = False
    out = train.run_step(
        trainer,
        trainer.eval_step,
        state,
        sharding.make_global_batch(b, mesh, trainer.data_sharding),
    )
    return float(out["ce"])

  base = later_loss(False, False)
  assert later_loss(True, False) == base
  assert abs(later_loss(False, True) - base) > 1e-3


def test_cross_entropy_is_weighted():
  logits = jnp.log(jnp.asarray([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
  targets = jnp.asarray([[0, 1]])
  ce, w = train.cross_entropy(logits, targets, jnp.asarray([[1.0, 0.0]]))
  np.testing.assert_allclose(float(ce), -np.log(0.5), rtol=1e-6)
  assert float(w) == 1.0
  ce, w = train.cross_entropy(logits, targets, jnp.asarray([[1.0, 1.0]]))
  np.testing.assert_allclose(float(ce), -np.log(0.5) - np.log(0.8), rtol=1e-6)


def test_valid_configs_pass():
  for arg in ("tiny", "small", None, "variant=local", "routing=topk"):
    model_cfg = train.validate_config(shakespeare.get_config(arg))
    assert model_cfg.vocab_size == 256


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("train", "steps", 0, "train.steps=0: must be >= 1"),
        ("train", "lr", 0.0, "train.lr=0.0: must be > 0"),
        ("train", "optimizer", "sgd", "train.optimizer='sgd': must be one of"),
        ("train", "schedule", "linear", "train.schedule='linear'"),
        ("train", "warmup_steps", -1, "train.warmup_steps=-1"),
        ("train", "grad_clip", -1.0, "train.grad_clip=-1.0"),
        ("train", "weight_decay", -0.1, "train.weight_decay=-0.1"),
        ("train", "grad_accum_steps", 0, "train.grad_accum_steps=0"),
        (
            "train",
            "grad_accum_steps",
            3,
            "data.batch_size=8: must be divisible by train.grad_accum_steps=3",
        ),
        ("train", "log_every", 0, "train.log_every=0: must be >= 1"),
        ("train", "eval_batches", 0, "train.eval_batches=0"),
        ("train", "keep_checkpoints", 0, "train.keep_checkpoints=0"),
        (
            "data",
            "seq_len",
            128,
            "data.seq_len=128: must be <= model.max_len=64",
        ),
        ("data", "batch_size", 0, "data.batch_size=0"),
        (
            "model",
            "num_heads",
            3,
            "model.num_heads=3: must divide model.d_model=32",
        ),
        ("model", "num_routing_heads", 5, "model.num_routing_heads=5"),
        ("model", "residual_dropout", 1.0, "model.residual_dropout=1.0"),
        ("model", "routing_layers", "last:9", "model.routing_layers='last:9'"),
    ],
)
def test_invalid_config_names_the_field(section, key, value, message):
  config = shakespeare.get_config("tiny")
  config[section][key] = value
  with pytest.raises(ValueError) as e:
    train.validate_config(config)
  assert message in str(e.value)


def test_topk_window_must_fit_the_sequence():
  config = shakespeare.get_config("tiny,routing=topk")
  config.data.seq_len = 8
  with pytest.raises(
      ValueError, match="model.routing.window=16: .*data.seq_len=8"
  ):
    train.validate_config(config)


def test_unknown_model_field_is_named():
  config = shakespeare.get_config("tiny")
  config.unlock()
  config.model.num_head = 4
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['num_head'\]"):
    train.validate_config(config)


def test_a_large_replicated_tensor_fails_at_start_up():
  """An odd vocabulary cannot split over tensor=2: the 17 MB logits kernel
  and table would sit whole on every device, and build_trainer says so."""
  config = _config()
  config.model.vocab_size = 131_073
  config.model.vocab_multiple = 1
  with pytest.raises(
      ValueError,
      match=r"whole on every device .*"
      r"\['logits'\]\['kernel'\] \(32, 131073\)",
  ):
    train.build_trainer(
        config,
        _mesh(4, 1, 2),
        sharding.logical_rules(),
        train.validate_config(config),
    )
  # Padded to a multiple of 128, the vocabulary splits over tensor.
  config.model.vocab_multiple = 128
  _, state = train.build_trainer(
      config,
      _mesh(4, 1, 2),
      sharding.logical_rules(),
      train.validate_config(config),
  )
  kernel = state.params["logits"]["kernel"]
  assert kernel.shape == (32, 131_200)
  assert _shard_shape(kernel) == (32, 65_600)


def _primitive_dtypes(jaxpr, names, out=False):
  """{(primitive, input dtypes[, output aval])} of `names` in a jaxpr."""
  found = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in names:
      found.add(
          (eqn.primitive.name, tuple(str(v.aval.dtype) for v in eqn.invars))
          + ((eqn.outvars[0].aval,) if out else ())
      )
    for p in eqn.params.values():
      for sub in p if isinstance(p, (list, tuple)) else (p,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          found |= _primitive_dtypes(sub.jaxpr, names, out)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          found |= _primitive_dtypes(sub, names, out)
  return found


def test_bfloat16_policy_stays_close_to_float32():
  """model.dtype="bfloat16": bf16 matmuls, float32 softmax and state.

  Two steps track the float32 run's losses and gradient norms to bf16
  precision; params, optimizer state and k-means state stay float32.
  """
  import jax.extend  # pylint: disable=g-import-not-at-top

  config = _config()
  batches = _batches(config, 2)
  _, f32, m32, _ = _train(config, _mesh(1, 1, 1), batches)
  config.model.dtype = "bfloat16"
  _, b16, m16, _ = _train(config, _mesh(1, 1, 1), batches)
  for k in ("loss", "grad_norm"):
    np.testing.assert_allclose(
        [m[k] for m in m16], [m[k] for m in m32], rtol=1e-2, err_msg=k
    )
  assert m32[1]["loss"] != m16[1]["loss"]  # bf16 really ran
  for tree in (b16.params, b16.opt_state, b16.kmeans):
    assert {str(x.dtype) for x in jax.tree.leaves(tree)} <= {"float32", "int32"}
  _assert_trees_close(b16.params, f32.params, rtol=0.0, atol=2e-2)
  # Where the policy puts each piece, read from the step's jaxpr.
  trainer, state = train.build_trainer(
      config,
      _mesh(1, 1, 1),
      sharding.logical_rules(),
      train.validate_config(config),
  )
  batch = {k: jnp.asarray(v) for k, v in batches[0].items()}
  with jax.set_mesh(trainer.mesh), nn.logical_axis_rules(trainer.rules):
    jaxpr = jax.make_jaxpr(trainer.train_step)(state, batch).jaxpr
  dots = _primitive_dtypes(jaxpr, ("dot_general",), out=True)
  assert any(d[1] == ("bfloat16", "bfloat16") for d in dots)
  # The logits (last axis: the 256-entry vocabulary) come out float32.
  vocab_out = {str(d[2].dtype) for d in dots if d[2].shape[-1:] == (256,)}
  assert vocab_out == {"float32"}
  # Softmax (exp, max, log), routing scores (argmax) and k-means
  # normalisation (rsqrt): float32 only.
  for name, dtypes in _primitive_dtypes(
      jaxpr, ("exp", "log", "reduce_max", "argmax", "rsqrt")
  ):
    assert set(dtypes) == {"float32"}, name


def test_step_warmup_steps_is_the_first_routed_step():
  """With model.routing.warmup_steps=W the trainer runs its dense warm-up
  step for states that have taken < W updates and its routed step from
  state W on; the k-means count agrees with the host's step, and the
  routed step holds no memory for the dense branch."""
  warm = 2
  config = _config()
  config.model.routing.warmup_steps = warm
  mesh = _mesh(1, 1, 1)
  model_cfg = train.validate_config(config)
  trainer, state = train.build_trainer(
      config, mesh, sharding.logical_rules(), model_cfg
  )
  assert trainer.warmup_steps == warm
  copy = lambda s: jax.tree.map(jnp.copy, s)
  for step, batch in enumerate(_batches(config, warm + 2)):
    gb = sharding.make_global_batch(batch, mesh, trainer.data_sharding)
    counts = [
        np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.kmeans)
        if "num_updates" in jax.tree_util.keystr(path)
    ]
    assert all((c == step).all() for c in counts), (step, counts)
    _, dense = train.run_step(
        trainer, trainer.warmup_train_step, copy(state), gb
    )
    _, routed = train.run_step(trainer, trainer.train_step, copy(state), gb)
    assert abs(float(dense["loss"]) - float(routed["loss"])) > 1e-6
    chosen = trainer.train_step_at(step)
    state, m = train.run_step(trainer, chosen, state, gb)
    expected = dense if step < warm else routed
    assert float(m["loss"]) == float(expected["loss"]), step
    assert trainer.eval_step_at(step) is (
        trainer.warmup_eval_step if step < warm else trainer.eval_step
    )
  # Without a warm-up configured, both names are the one routed step.
  plain, _ = train.build_trainer(
      _config(),
      mesh,
      sharding.logical_rules(),
      train.validate_config(_config()),
  )
  assert plain.train_step_at(0) is plain.train_step
