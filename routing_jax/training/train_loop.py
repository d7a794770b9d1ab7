# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The training loop: resume, train, evaluate, checkpoint.

Resume order: the newest restorable checkpoint in `<workdir>/checkpoints`
(a damaged newest one is moved aside with a warning), else a fresh start.
config.json is written, and metrics.jsonl cut to the resumed step, only once
the resume checks pass. A SIGTERM (preemption) saves the current step and
returns; a non-finite loss raises `NonFiniteLossError` before anything is
saved, so the last good checkpoint stays the newest; if it comes at the
first check after a restore, the restored step is suspect and the run
starts once more from the step before it. The host fetches step metrics
only at log and checkpoint points (step_metrics.py): a non-finite step
between them stops the run at the next such point, naming the step, and is
never saved.

What runs after the loop (final metric, sample, loss curve) is report.py.
"""

import dataclasses
import hashlib
import json
import time
from typing import Any, Optional

from absl import logging
import jax

from routing_jax import errors
from routing_jax import multihost
from routing_jax.data import input_pipeline
from routing_jax.training import batch_scaling
from routing_jax.training import checkpointing
from routing_jax.training import flops
from routing_jax.training import hardware
from routing_jax.training import metrics as metrics_lib
from routing_jax.training import optim
from routing_jax.training import profiling
from routing_jax.training import sharding
from routing_jax.training import step_metrics
from routing_jax.training import text_samples
from routing_jax.training import train
from routing_jax.training import workdir as workdir_lib

# Training stops when a step's loss or gradient norm is not finite.
FINITE_KEYS = ("loss", "grad_norm")


class NonFiniteLossError(FloatingPointError):
  """A step produced a non-finite loss or gradient norm; nothing was saved."""


class _NonFiniteAfterRestore(NonFiniteLossError):
  """The first metrics after restoring `step` are not finite.

  Then the restored state is the likely culprit (damage its checksums
  cannot show, e.g. in a step saved before they were recorded), so
  `train_and_evaluate` tries once more from the step before it.
  """

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


def _say(line: str) -> None:
  """Progress for the console (process 0 only) and the log."""
  logging.debug(line)
  if jax.process_index() == 0:
    print(line, flush=True)


# Fields that pick how the same function is computed: a run may resume
# under either value (and older checkpoints, saved before the field existed,
# keep their hash).
_HASH_EXEMPT = ("routing_implementation",)
# Fields added after checkpoints existed, with the value that computes what
# runs from before the field computed: left out of the hash at that value,
# so those runs still resume.
_HASH_NEUTRAL = {"routing_warmup": "dense"}


def config_hash(config: Any) -> str:
  """Hash of the model section: a checkpoint must match the architecture."""
  model = {
      key: value
      for key, value in config.model.to_dict().items()
      if key not in _HASH_EXEMPT
      and not (key in _HASH_NEUTRAL and value == _HASH_NEUTRAL[key])
  }
  text = json.dumps(model, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def evaluate(
    trainer: train.Trainer,
    state: train.TrainState,
    datasets,
    mesh,
    max_batches: int,
) -> dict[str, float]:
  """Per-token loss (nats) over up to `max_batches` eval batches."""
  sums = {"ce": 0.0, "weight": 0.0, "kmeans_loss": 0.0}
  n = 0
  eval_step = trainer.eval_step_at(train.host_step(state))
  for batch in datasets.eval:
    if n >= max_batches:
      break
    gb = sharding.make_global_batch(batch, mesh, trainer.data_sharding)
    out = jax.device_get(train.run_step(trainer, eval_step, state, gb))
    for k in sums:
      sums[k] += float(out[k])
    n += 1
  nats = sums["ce"] / max(sums["weight"], 1.0)
  name, value = metrics_lib.paper_metric(
      datasets.unit, nats, datasets.tokens_per_word
  )
  return {
      "eval/loss_nats": nats,
      f"eval/{name}": value,
      "eval/kmeans_loss": sums["kmeans_loss"] / max(n, 1),
      "eval/tokens": sums["weight"],
  }


def create_datasets(
    config: Any, mesh: Any, vocab_size: int
) -> input_pipeline.Datasets:
  """This process's batches: the rows its devices hold (see multihost).

  Raises:
    errors.DataError: the data cannot be opened (the message says why).
  """
  try:
    rows = multihost.process_rows(
        sharding.data_sharding(mesh), config.data.batch_size
    )
    return input_pipeline.create_datasets(
        config.data, vocab_size=vocab_size, rows=rows
    )
  except (ValueError, FileNotFoundError) as e:
    raise errors.DataError(str(e)) from e


@dataclasses.dataclass
class TrainResult:
  """What `train_and_evaluate` returns: the run's end and what it trained.

  Attributes:
    start_step: the step the run started (or resumed) from.
    step: the last step done and saved.
    preempted: a SIGTERM stopped the run at `step` (saved) before the end.
    state: the train state after `step`.
    trainer: the model, mesh and jitted steps the state belongs to.
    datasets: the run's data (the eval split, decode for samples).
    wall_s: seconds this run spent in its loop.
    last_eval: the metrics of the last evaluation (None if none ran).
  """

  start_step: int
  step: int
  preempted: bool
  state: train.TrainState
  trainer: train.Trainer
  datasets: input_pipeline.Datasets
  wall_s: float
  last_eval: Optional[dict[str, float]] = None


def train_and_evaluate(
    config: Any, workdir: str, profile_steps: int = 0
) -> TrainResult:
  """Trains config in workdir (resuming if possible).

  Args:
    config: the experiment config.
    workdir: local directory or URL (gs://...) for everything the run writes.
    profile_steps: trace this many steps with jax.profiler into
      `<workdir>/profile` (0: no trace).
  """
  try:
    return _train_and_evaluate(config, workdir, profile_steps)
  except _NonFiniteAfterRestore as e:
    logging.warning(
        "%s Falling back to the checkpoint before step %d (step %d is"
        " replaced when the run reaches it again).",
        e,
        e.step,
        e.step,
    )
    # Once only: if the older step diverges as fast, the error stands.
    return _train_and_evaluate(
        config, workdir, profile_steps, restore_before=e.step
    )


def _write_sample(writer, trainer, state, datasets, t, step: int) -> None:
  """A text sample to TensorBoard at an evaluation (every process samples:
  a collective), unless off, an image model, or still in the warm-up
  (whose dense attention the decoder cannot reproduce)."""
  length = t.get("eval_sample_length", 0)
  if not length or datasets.decode is None or trainer.warming_up(step):
    return
  text = text_samples.sample_text(
      trainer, state, datasets, t.sample_prompt, length, seed=t.seed + step
  )
  writer.write_text(step, "samples", text)


def _train_and_evaluate(
    config: Any,
    workdir: str,
    profile_steps: int = 0,
    restore_before: Optional[int] = None,
) -> TrainResult:
  """`train_and_evaluate`, resuming from a step before `restore_before`."""
  model_cfg = train.validate_config(config)  # before anything compiles
  t = config.train
  mesh = sharding.create_mesh(config.mesh)
  scaled = batch_scaling.resolve(config, sharding.batch_devices(mesh))
  if scaled:
    _say(scaled)
  rules = sharding.logical_rules()
  # config.json is written once the resume checks pass: a rejected run
  # must not replace the config of the run that owns the checkpoints.
  workdir = workdir_lib.create(workdir, primary=jax.process_index() == 0)
  datasets = create_datasets(config, mesh, model_cfg.vocab_size)
  trainer, state = train.build_trainer(config, mesh, rules, model_cfg)
  ckpt = checkpointing.Checkpointer(
      workdir / "checkpoints",
      keep=t.keep_checkpoints,
      save_every=t.checkpoint_every,
      async_save=t.async_checkpointing,
      metadata={"model_hash": config_hash(config)},
  )
  restored = ckpt.restore(state, before=restore_before)
  if restored is not None:
    state, data_state, start = restored
    saved = ckpt.read_meta(start).get("model_hash")
    if saved not in (None, config_hash(config)):
      # Same shapes do not mean the same model (e.g. routing="topk").
      ckpt.close()
      raise errors.ConfigError(
          f"{ckpt.directory}: checkpoint step {start} was trained with a "
          "different model config section (model hash "
          f"{saved} != {config_hash(config)}); use a new workdir."
      )
    try:
      datasets.train.set_state(data_state)
    except ValueError as e:  # e.g. another batch size
      ckpt.close()
      raise errors.ConfigError(
          f"{ckpt.directory}: checkpoint step {start} cannot resume with this"
          f" data config: {e}; rerun with the config it was saved with (the"
          " workdir's config.json), or use a new workdir."
      ) from e
    if start > t.steps:
      ckpt.close()
      raise errors.UserInputError(
          f"train.steps={t.steps} is below step {start} of the checkpoint"
          f" in {ckpt.directory} (a save would give the later state the"
          f" smaller step's name): give --config.train.steps={start} or more,"
          " or use a new workdir."
      )
    _say(f"resumed from step {start} ({ckpt.directory})")
  workdir_lib.create(workdir, config, primary=jax.process_index() == 0)
  params = sum(x.size for x in jax.tree.leaves(state.params))
  _say(
      f"model: {params:,} parameters; mesh {dict(mesh.shape)} over"
      f" {mesh.size} {jax.devices()[0].platform} device(s),"
      f" {jax.process_count()} process(es)"
  )
  start = int(jax.device_get(state.step))
  if jax.process_index() == 0:
    # Rows a killed run wrote past its last checkpoint are redone now.
    metrics_lib.truncate_jsonl(workdir / metrics_lib.JSONL_FILE, start)
  writer = metrics_lib.MetricWriter(workdir, enabled=jax.process_index() == 0)
  writer.write_hparams(config.to_dict())
  preempt = checkpointing.PreemptionHandler()
  profiler = profiling.StepProfiler(
      workdir, start, t.steps, profile_steps, enabled=jax.process_index() == 0
  )
  last_eval = None
  peak = hardware.kind_of_device(jax.devices()[0].device_kind)
  perf = step_metrics.StepMetrics(
      start,
      tokens_per_step=config.data.batch_size * config.data.seq_len,
      flops_per_step=flops.train_flops_per_step(
          model_cfg, state.params, config.data.batch_size, config.data.seq_len
      ),
      num_devices=mesh.size,
      peak_flops=peak.bf16_flops if peak else None,
      learning_rate=optim.learning_rate_schedule(t),
  )

  # The restored step, until the first metrics after it are found finite.
  suspect = [start] if restored is not None and restore_before is None else []

  def checked():
    """The latest metrics; raises on a non-finite step since the last."""
    m, bad = perf.fetch(FINITE_KEYS)
    if bad and suspect:
      raise _NonFiniteAfterRestore(
          f"non-finite {bad[1]}={bad[2]} at step {bad[0]}, the first"
          f" metrics after restoring step {suspect[0]} from {ckpt.directory}.",
          suspect[0],
      )
    if bad:
      raise NonFiniteLossError(
          f"non-finite {bad[1]}={bad[2]} at step {bad[0]}; stopping without "
          f"saving. The last good checkpoint (step {ckpt.latest_step()}) in "
          f"{ckpt.directory} is intact."
      )
    suspect.clear()
    return m

  t0 = time.time()

  def result(step: int, preempted: bool = False) -> TrainResult:
    return TrainResult(
        start_step=start,
        step=step,
        preempted=preempted,
        state=state,
        trainer=trainer,
        datasets=datasets,
        wall_s=time.time() - t0,
        last_eval=last_eval,
    )

  compiled = set()  # ids of the step functions run so far
  minutes = float(t.get("checkpoint_every_minutes", 0.0))
  last_save = time.monotonic()
  try:
    for step in range(start, t.steps):
      profiler.update(step, state)
      batch = sharding.make_global_batch(
          next(datasets.train), mesh, trainer.data_sharding
      )
      step_fn = trainer.train_step_at(step)
      compiling = id(step_fn) not in compiled
      if compiling:
        # The step that compiles stays out of step time and tokens/s.
        jax.block_until_ready(state)
        began = time.perf_counter()
        kind = "warm-up" if trainer.warming_up(step) else "train"
        _say(f"compiling the {kind} step...")
      state, m = train.run_step(trainer, step_fn, state, batch)
      if compiling:
        jax.block_until_ready(m)
        perf.exclude_step(time.perf_counter() - began)
        compiled.add(id(step_fn))
      perf.add(step + 1, m)  # fetched at log and save points only
      done = step + 1
      if done % t.log_every == 0 or done == t.steps:
        m = checked()
        rates = perf.rates(done)
        name, value = metrics_lib.paper_metric(
            datasets.unit, m["loss"], datasets.tokens_per_word
        )
        scalars = {"train/loss_nats": m["loss"], f"train/{name}": value}
        scalars.update({f"train/{k}": v for k, v in rates.items()})
        scalars.update({
            f"train/{k}": v for k, v in m.items() if k not in ("loss", "tokens")
        })
        writer.write(done, scalars)
        _say(
            metrics_lib.progress_line(
                done,
                t.steps,
                name,
                value,
                rates["tokens_per_s"],
                time.time() - t0,
                done - start,
                perf=rates,
            )
        )
      if done % t.eval_every == 0 or done == t.steps:
        checked()  # the queued steps finish before the clock starts
        began = time.perf_counter()
        ev = evaluate(trainer, state, datasets, mesh, t.eval_batches)
        writer.write(done, ev)
        _write_sample(writer, trainer, state, datasets, t, done)
        _say(
            f"eval at step {done}: "
            + ", ".join(
                f"{k[5:]} {v:.4f}" for k, v in ev.items() if k != "eval/tokens"
            )
        )
        last_eval = ev
        perf.exclude(time.perf_counter() - began)
      stop = preempt.should_stop(done)
      # Wall-clock saves, decided at log points by process 0's clock (the
      # processes must agree: a save is collective).
      timed = (
          minutes > 0
          and done % t.log_every == 0
          and multihost.agree(time.monotonic() - last_save >= minutes * 60)
      )
      if stop or timed or done % ckpt.save_every == 0:
        checked()  # nothing non-finite is ever saved
        began = time.perf_counter()
        ckpt.save(done, state, datasets.train.get_state(), force=stop or timed)
        last_save = time.monotonic()
        if stop:
          ckpt.wait()
          logging.warning("Preempted: saved step %d, exiting.", done)
          return result(done, preempted=True)
        perf.exclude(time.perf_counter() - began)
    checked()
    ckpt.save(t.steps, state, datasets.train.get_state(), force=True)
  finally:
    profiler.close(state)
    ckpt.close()
    preempt.close()
    writer.close()
  return result(t.steps)
