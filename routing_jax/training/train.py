# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The train and eval steps: TrainState, the pure steps, their sharded jit.

`validate_config` checks a config before anything compiles; `build_trainer`
returns a `Trainer` (model, mesh, jitted steps) and the initial state. The
loop that runs the steps is train_loop.py.

The state (params, optimizer state, k-means EMA state, step, rng) is created
directly in its sharded layout and donated to a jitted step with explicit
in/out shardings over the (data, fsdp, tensor) mesh. Per-step randomness is
fold_in(rng, step), so a resumed run is bitwise the run that never stopped.
"""

import dataclasses
import functools
from typing import Any, Optional

from absl import logging
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from routing_jax.common_types import Array
from routing_jax.nn import kmeans as km
from routing_jax.nn import kmeans_ops
from routing_jax.nn import loss as loss_lib
from routing_jax.nn import model as model_lib
from routing_jax.nn.model import TransformerLM
from routing_jax.nn.model_config import ModelConfig
from routing_jax.training import batch_scaling
from routing_jax.training import grad_accum
from routing_jax.training import optim
from routing_jax.training import train_config

# A parameter or optimizer moment this large kept whole on every device of
# a model-parallel mesh is an error at start-up (smaller ones, such as
# relative-position tables, are not worth splitting).
MAX_REPLICATED_BYTES = 16 << 20


class TrainState(flax.struct.PyTreeNode):
  step: Array  # int32 scalar
  params: Any
  opt_state: Any
  kmeans: Any  # the "kmeans" collection (EMA state, no gradients)
  rng: Array  # raw uint32 key; per-step keys are fold_in(rng, step)


def validate_config(config: Any) -> ModelConfig:
  """Checks every section before anything compiles; returns ModelConfig.

  Raises:
    ValueError: naming the field and the rule.
  """
  model_cfg = ModelConfig.from_config(config.model)
  t, d = config.train, config.data

  def need(cond, field, value, rule):
    if not cond:
      raise ValueError(f"{field}={value!r}: {rule}")

  train_config.TrainConfig.from_config(t)
  need(
      d.batch_size % t.grad_accum_steps == 0,
      "data.batch_size",
      d.batch_size,
      f"must be divisible by train.grad_accum_steps={t.grad_accum_steps}",
  )
  need(d.seq_len >= 1, "data.seq_len", d.seq_len, "must be >= 1")
  need(d.batch_size >= 1, "data.batch_size", d.batch_size, "must be >= 1")
  tokenizer = d.get("tokenizer", "bytes")
  need(
      tokenizer in ("bytes", "sentencepiece"),
      "data.tokenizer",
      tokenizer,
      'must be "bytes" or "sentencepiece"',
  )
  need(
      tokenizer == "bytes" or d.name in ("text_files", "pg19"),
      "data.tokenizer",
      tokenizer,
      'applies to data.name="text_files" (pg19 always uses sentencepiece)',
  )
  need(
      not d.get("tokenizer_model", "") or tokenizer == "sentencepiece",
      "data.tokenizer_model",
      d.get("tokenizer_model", ""),
      'needs data.tokenizer="sentencepiece"',
  )
  batch_scaling.check(config)
  need(
      d.seq_len <= model_cfg.max_len,
      "data.seq_len",
      d.seq_len,
      f"must be <= model.max_len={model_cfg.max_len}",
  )
  if model_cfg.is_image:
    need(
        d.seq_len == model_cfg.max_len,
        "data.seq_len",
        d.seq_len,
        f"must equal model.max_len={model_cfg.max_len} (H·W·C)",
    )
  spec = config.get("hardware", "")
  if spec:
    from routing_jax.training import hardware  # pylint: disable=g-import-not-at-top
    from routing_jax.training import sharding  # pylint: disable=g-import-not-at-top

    hw = hardware.parse(spec)
    try:
      tensor = sharding.mesh_shape(config.mesh, hw.num_devices)[2]
    except ValueError as e:
      raise ValueError(
          f"mesh for hardware={spec!r} ({hw.num_devices} devices): {e}"
      ) from None
    # Without hardware, cli_checks.check_mesh checks it once the devices are known.
    check_tensor_divides_heads(model_cfg, tensor)
  if model_cfg.routing.mode == "topk" and model_cfg.routes:
    need(
        model_cfg.routing.window <= d.seq_len,
        "model.routing.window",
        model_cfg.routing.window,
        f'mode="topk" needs window <= data.seq_len={d.seq_len}',
    )
  return model_cfg


def check_tensor_divides_heads(model_cfg: ModelConfig, tensor: int) -> None:
  """`mesh.tensor` must divide the heads of every attention module.

  The "heads" axis of each module's kernels is split over `tensor`; a size
  that does not divide it is not refused by the sharding, which splits
  head_dim instead and all-reduces every attention product (measured on
  enwik8 at tensor=8 with 4 local + 4 routing heads: 3x the temporaries).

  Raises:
    ValueError: naming mesh.tensor and the head counts.
  """
  mask = model_cfg.routing_mask()
  h, r = model_cfg.num_heads, model_cfg.num_routing_heads
  parts, counts = [], []
  if any(mask) and r:
    parts.append(f"routing layers: {h - r} local + {r} routing heads")
    counts += [h - r, r]
  if not (all(mask) and r):
    parts.append(f"{'other' if any(mask) and r else 'all'} layers: {h} heads")
    counts.append(h)
  if any(c % tensor for c in counts if c):
    raise ValueError(
        f"mesh.tensor={tensor}: must divide the heads of every attention"
        f" module ({'; '.join(parts)}), else it splits head_dim"
    )


cross_entropy = loss_lib.cross_entropy


def token_loss(
    model: TransformerLM,
    variables: dict,
    batch: dict,
    *,
    chunk_len: int,
    **apply_kw,
) -> tuple[Array, Array, dict, Any]:
  """(sum of token nats, sum of weights, aux, mutated variables).

  The logits never exist whole: the model returns the features before the
  output projection and the loss applies it chunk by chunk.
  """
  (hidden, aux), new = model.apply(
      variables,
      batch["inputs"],
      mask=attention_mask(batch),
      return_hidden=True,
      mutable=apply_kw.pop("mutable", []),
      **apply_kw,
  )
  cfg = model.config
  project = lambda h: model_lib.output_logits(cfg, variables["params"], h)
  ce, w = loss_lib.chunked_cross_entropy(
      project,
      hidden,
      batch["targets"],
      batch["weights"],
      vocab_size=cfg.vocab_size,
      chunk_len=chunk_len,
  )
  return ce, w, aux, new


def attention_mask(batch: dict) -> Optional[Array]:
  """The batch's padding mask [batch, length] bool, or None (no padding).

  Loss weights never double as the mask: zero weight hides a target from
  the loss, not a token from attention.
  """
  mask = batch.get("mask")
  return None if mask is None else mask.astype(bool)


def init_length(model_cfg: ModelConfig, seq_len: int) -> int:
  """The input length a model is initialised with (images: all pixels)."""
  if model_cfg.is_image:
    return model_cfg.max_len
  return min(seq_len, model_cfg.max_len)


def init_state(
    model: TransformerLM,
    tx: optax.GradientTransformation,
    rng: Array,
    seq_len: int,
) -> TrainState:
  """Boxed initial state: optimizer state inherits the param annotations."""
  init_len = init_length(model.config, seq_len)
  variables = model.init({"params": rng}, jnp.zeros((1, init_len), jnp.int32))
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      kmeans=variables.get("kmeans", {}),
      rng=jax.random.fold_in(rng, 1),
  )


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model: TransformerLM,
    tx: optax.GradientTransformation,
    accum_steps: int,
    kmeans_weight: float,
    chunk_len: int = 0,
    replicas: int = 1,
    param_shardings: Any = None,
) -> tuple[TrainState, dict]:
  """One optimizer step over `accum_steps` microbatches.

  Gradients are summed over microbatches with each microbatch's loss divided
  by the whole batch's weight, so accumulation equals the full-batch
  gradient. Each of the `replicas` data replicas (mesh axis "data") sums
  its own partial gradients; they are reduced across replicas once, after
  the microbatch loop (see grad_accum.py). Every microbatch is routed with
  the step's centroids; the k-means statistics of all microbatches are
  summed and the state takes one update per step, so accumulation equals
  the full batch for k-means too (except for a head's very first update
  with data-initialised centroids, whose random picks depend on the split).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  total_w = jnp.maximum(jnp.sum(batch["weights"]), 1.0)

  def loss_fn(params, kmeans, mb, key):
    ce, w, aux, new = token_loss(
        model,
        {"params": params, "kmeans": kmeans},
        mb,
        chunk_len=chunk_len,
        train=True,
        mutable=[km.STATS_COLLECTION],
        rngs={"dropout": key},
    )
    # The k-means loss is already a whole-microbatch mean on every replica.
    loss = ce / total_w + kmeans_weight * aux["kmeans_loss"] / (
        accum_steps * replicas
    )
    return loss, (new.get(km.STATS_COLLECTION, {}), ce, w, aux)

  grad_fn = grad_accum.per_replica(jax.value_and_grad(loss_fn, has_aux=True))
  stats, grads, sums = _accumulate(
      grad_fn,
      state,
      grad_accum.split_microbatches(batch, accum_steps, replicas),
      rng,
      accum_steps,
      replicas,
      param_shardings,
  )
  settings = model_lib.kmeans_settings(model.config)
  kmeans = kmeans_ops.map_states(
      lambda st, s: kmeans_ops.apply_statistics(st, s, settings),
      state.kmeans,
      stats,
  )
  # The step's one cross-replica gradient reduction.
  grads = jax.tree.map(lambda g: jnp.sum(g, 0), grads)
  if param_shardings is not None:
    grads = jax.lax.with_sharding_constraint(grads, param_shardings)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, kmeans=kmeans
  )
  return new_state, _train_metrics(sums, grads, params, accum_steps)


# What a step sums over its microbatches (loss terms, cluster statistics).
_SUM_KEYS = (
    "ce",
    "weight",
    "kmeans_loss",
    "entropy",
    "empty_fraction",
    "max_share",
)


def _accumulate(
    grad_fn, state, micro, rng, accum_steps, replicas, param_shardings
):
  """Scans the microbatches: (summed k-means statistics, per-replica
  gradient sums [replicas, ...], sums of the loss terms and cluster
  statistics)."""
  constrain = (
      lambda g: g
      if param_shardings is None
      else (
          jax.lax.with_sharding_constraint(
              g, grad_accum.replica_shardings(param_shardings)
          )
      )
  )

  def body(carry, xs):
    stats, grads, sums = carry
    mb, i = xs
    (_, (new_stats, ce, w, aux)), g = grad_fn(
        state.params, state.kmeans, mb, jax.random.fold_in(rng, i)
    )
    # Identical on every replica (whole-microbatch statistics).
    new_stats = jax.tree.map(lambda a: a[0], new_stats)
    stats = kmeans_ops.map_states(kmeans_ops.merge_statistics, stats, new_stats)
    grads = constrain(jax.tree.map(jnp.add, grads, g))
    sums = jax.tree.map(
        jnp.add,
        sums,
        dict(
            jax.tree.map(lambda a: jnp.mean(a, 0), aux),
            ce=jnp.sum(ce),
            weight=jnp.sum(w),
        ),
    )
    return (stats, grads, sums), None

  zeros = constrain(
      jax.tree.map(
          lambda p: jnp.zeros((replicas,) + p.shape, p.dtype), state.params
      )
  )
  zero_sums = {k: jnp.zeros((), jnp.float32) for k in _SUM_KEYS}
  first = jax.tree.map(lambda a: a[0], micro)
  stats_shape = jax.eval_shape(
      lambda: jax.tree.map(
          lambda a: a[0],
          grad_fn(state.params, state.kmeans, first, rng)[0][1][0],
      )
  )
  carry, _ = jax.lax.scan(
      body,
      (_empty_statistics(stats_shape), zeros, zero_sums),
      (micro, jnp.arange(accum_steps)),
  )
  return carry


def _train_metrics(sums, grads, params, accum_steps) -> dict:
  metrics = {
      "loss": sums["ce"] / jnp.maximum(sums["weight"], 1.0),
      "kmeans_loss": sums["kmeans_loss"] / accum_steps,
      "grad_norm": optax.global_norm(grads),
      "param_norm": optax.global_norm(params),
      "tokens": sums["weight"],
  }
  for k in ("entropy", "empty_fraction", "max_share"):
    metrics[f"kmeans/{k}"] = sums[k] / accum_steps
  return metrics


def _empty_statistics(shapes: Any) -> Any:
  """Statistics of no tokens, shaped like `shapes` (ShapeDtypeStructs):
  zero counts and sums, candidates that lose every comparison."""

  def empty(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    fill = -jnp.inf if "score" in name else 0
    return jnp.full(leaf.shape, fill, leaf.dtype)

  return jax.tree_util.tree_map_with_path(empty, shapes)


def eval_step(
    state: TrainState, batch: dict, *, model: TransformerLM, chunk_len: int = 0
) -> dict:
  """Sums for a dataset-level average: (nats, weights, k-means loss)."""
  ce, w, aux, _ = token_loss(
      model,
      {"params": state.params, "kmeans": state.kmeans},
      batch,
      chunk_len=chunk_len,
  )
  return {"ce": ce, "weight": w, "kmeans_loss": aux["kmeans_loss"]}


def warmup_steps(model_cfg: ModelConfig) -> int:
  """Steps of the routing heads' dense warm-up (0: none, or no routing)."""
  if not model_cfg.causal or not model_cfg.num_routing_heads:
    return 0
  if model_cfg.dense_routing_heads:
    return 0
  if not model_cfg.routes:
    return 0
  return model_cfg.routing.warmup_steps


@dataclasses.dataclass
class Trainer:
  """The model, optimizer, mesh and jitted steps of one configuration.

  With a routing warm-up (`model.routing.warmup_steps`) there are two
  compiled steps of each kind: `warmup_train_step` / `warmup_eval_step`
  (routing heads dense, in chunks) for a state that has taken fewer than
  `warmup_steps` updates, and `train_step` / `eval_step` (routed) after.
  The host picks with `train_step_at(step)`, `step` being the updates the
  state has taken (its `state.step`); the routed step then holds no memory
  for the dense branch. Without a warm-up the two are the same.
  """

  model: TransformerLM
  tx: optax.GradientTransformation
  mesh: Any
  rules: Any
  state_shardings: Any
  train_step: Any
  eval_step: Any
  data_sharding: Any
  warmup_steps: int = 0
  warmup_train_step: Any = None
  warmup_eval_step: Any = None

  def warming_up(self, step: int) -> bool:
    """Whether a state that has taken `step` updates is still dense."""
    return int(step) < self.warmup_steps

  def train_step_at(self, step: int):
    """The jitted train step for a state at `step` (its updates so far)."""
    return self.warmup_train_step if self.warming_up(step) else self.train_step

  def eval_step_at(self, step: int):
    """The jitted eval step for a state at `step`."""
    return self.warmup_eval_step if self.warming_up(step) else self.eval_step


def build_trainer(
    config: Any, mesh: Any, rules: Any, model_cfg: ModelConfig
) -> tuple[Trainer, TrainState]:
  """Creates the sharded initial state and the jitted steps."""
  from routing_jax.training import sharding  # pylint: disable=g-import-not-at-top

  model = TransformerLM(model_cfg)
  tx = optim.create_optimizer(config.train)
  rng = jax.random.PRNGKey(config.train.seed)
  init = functools.partial(init_state, model, tx, seq_len=config.data.seq_len)
  # A tensor this large kept whole on every device of a model-parallel
  # mesh is a missing axis name or rule: fail before allocating it.
  state, shardings = sharding.create_sharded_state(
      init, mesh, rules, rng, max_replicated_bytes=MAX_REPLICATED_BYTES
  )
  step, ev = jit_steps(config, model, tx, mesh, shardings)
  warm = warmup_steps(model_cfg)
  warm_step, warm_ev = (
      jit_steps(config, model, tx, mesh, shardings, warming_up=True)
      if warm
      else (step, ev)
  )
  logging.info(
      "Parameters: %d", sum(x.size for x in jax.tree.leaves(state.params))
  )
  return (
      Trainer(
          model,
          tx,
          mesh,
          rules,
          shardings,
          step,
          ev,
          sharding.data_sharding(mesh),
          warmup_steps=warm,
          warmup_train_step=warm_step,
          warmup_eval_step=warm_ev,
      ),
      state,
  )


def jit_steps(
    config: Any,
    model: TransformerLM,
    tx: optax.GradientTransformation,
    mesh: Any,
    shardings: Any,
    warming_up: bool = False,
) -> tuple[Any, Any]:
  """The jitted (train_step, eval_step) for state shardings `shardings`.

  warming_up: compile the routing warm-up's dense attention (True) or the
  routed attention (False) only; see `Trainer`. The training loop and the
  dry run compile exactly these.
  """
  from routing_jax.training import sharding  # pylint: disable=g-import-not-at-top

  model = model.clone(warming_up=bool(warming_up))
  t = config.train
  replicas = mesh.shape[grad_accum.DATA_AXIS]
  rows = config.data.batch_size
  if rows % (replicas * t.grad_accum_steps):
    raise ValueError(
        f"data.batch_size={rows}: must be divisible by mesh.data={replicas} "
        f"x train.grad_accum_steps={t.grad_accum_steps}"
    )
  data_sh = sharding.data_sharding(mesh)
  repl = sharding.replicated(mesh)
  step = jax.jit(
      functools.partial(
          train_step,
          model=model,
          tx=tx,
          accum_steps=t.grad_accum_steps,
          kmeans_weight=t.kmeans_loss_weight,
          chunk_len=t.loss_chunk_len,
          replicas=replicas,
          param_shardings=shardings.params,
      ),
      in_shardings=(shardings, data_sh),
      out_shardings=(shardings, repl),
      donate_argnums=(0,),
  )
  ev = jax.jit(
      functools.partial(eval_step, model=model, chunk_len=t.loss_chunk_len),
      in_shardings=(shardings, data_sh),
      out_shardings=repl,
  )
  return step, ev


def run_step(trainer: Trainer, fn, *args):
  """Runs a jitted step under the mesh and the logical axis rules."""
  with jax.set_mesh(trainer.mesh), nn.logical_axis_rules(trainer.rules):
    return fn(*args)


def host_step(state: TrainState) -> int:
  """`state.step` on the host (read from this process's first shard, so it
  works when the state spans processes)."""
  step = state.step
  if isinstance(step, jax.Array):
    return int(np.asarray(step.addressable_shards[0].data))
  return int(step)
