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
from routing_jax.training import resume
from routing_jax.training import sharding
from routing_jax.training import step_metrics
from routing_jax.training import text_samples
from routing_jax.training import train
from routing_jax.training import train_config
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
      datasets.unit, nats, datasets.tokens_per_unit
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


def _train_and_evaluate(
    config: Any,
    workdir: str,
    profile_steps: int = 0,
    restore_before: Optional[int] = None,
) -> TrainResult:
  """`train_and_evaluate`, resuming from a step before `restore_before`."""
  loop = _start(config, workdir, restore_before)
  t, primary = loop.t, jax.process_index() == 0
  preempt = checkpointing.PreemptionHandler()
  profiler = profiling.StepProfiler(
      loop.workdir, loop.start, t.steps, profile_steps, enabled=primary
  )
  try:
    for step in range(loop.start, t.steps):
      profiler.update(step, loop.state)
      loop.train_step(step)
      done = step + 1
      loop.maybe_log(done)
      loop.maybe_eval(done)
      if loop.maybe_save(done, stop=preempt.should_stop(done)):
        logging.warning("Preempted: saved step %d, exiting.", done)
        return loop.result(done, preempted=True)
    loop.final_save()
  finally:
    profiler.close(loop.state)
    loop.ckpt.close()
    preempt.close()
    loop.writer.close()
  return loop.result(t.steps)


def _start(config: Any, workdir: str, restore_before: Optional[int]) -> "_Loop":
  """Checks the config, builds data, model and checkpointer, resumes, and
  announces the run: its loop, ready for the first step."""
  model_cfg = train.validate_config(config)  # before anything compiles
  mesh = sharding.create_mesh(config.mesh)
  scaled = batch_scaling.resolve(config, sharding.batch_devices(mesh))
  if scaled:
    _say(scaled)
  t = train_config.TrainConfig.from_config(config.train)
  primary = jax.process_index() == 0
  # config.json is written once the resume checks pass: a rejected run
  # must not replace the config of the run that owns the checkpoints.
  workdir = workdir_lib.create(workdir, primary=primary)
  datasets = create_datasets(config, mesh, model_cfg.vocab_size)
  trainer, state = train.build_trainer(
      config, mesh, sharding.logical_rules(), model_cfg
  )
  model_hash = resume.config_hash(config)
  ckpt = checkpointing.Checkpointer(
      workdir / "checkpoints",
      keep=t.keep_checkpoints,
      save_every=t.checkpoint_every,
      async_save=t.async_checkpointing,
      metadata={"model_hash": model_hash},
  )
  try:
    restored = resume.restore(
        ckpt, state, datasets.train, model_hash, t.steps, restore_before
    )
  except Exception:
    ckpt.close()
    raise
  start = 0
  if restored is not None:
    state, start = restored
    _say(f"resumed from step {start} ({ckpt.directory})")
  workdir_lib.create(workdir, config, primary=primary)
  params = sum(x.size for x in jax.tree.leaves(state.params))
  _say(
      f"model: {params:,} parameters; mesh {dict(mesh.shape)} over"
      f" {mesh.size} {jax.devices()[0].platform} device(s),"
      f" {jax.process_count()} process(es)"
  )
  if primary:
    # Rows a killed run wrote past its last checkpoint are redone now.
    metrics_lib.truncate_jsonl(workdir / metrics_lib.JSONL_FILE, start)
  writer = metrics_lib.MetricWriter(workdir, enabled=primary)
  writer.write_hparams(config.to_dict())
  return _Loop(
      workdir=workdir,
      t=t,
      mesh=mesh,
      trainer=trainer,
      state=state,
      datasets=datasets,
      ckpt=ckpt,
      writer=writer,
      start=start,
      # The restored step, until the first metrics after it are finite.
      suspect=start
      if restored is not None and restore_before is None
      else None,
      perf=step_metrics.StepMetrics(
          start,
          tokens_per_step=config.data.batch_size * config.data.seq_len,
          flops_per_step=flops.train_flops_per_step(
              model_cfg,
              state.params,
              config.data.batch_size,
              config.data.seq_len,
          ),
          num_devices=mesh.size,
          peak_flops=_peak_flops(),
          learning_rate=optim.learning_rate_schedule(t),
      ),
  )


def _peak_flops() -> Optional[float]:
  peak = hardware.kind_of_device(jax.devices()[0].device_kind)
  return peak.bf16_flops if peak else None


@dataclasses.dataclass
class _Loop:
  """The state of a run's loop and its steps: train, log, eval, save."""

  workdir: Any
  t: train_config.TrainConfig
  mesh: Any
  trainer: train.Trainer
  state: train.TrainState
  datasets: input_pipeline.Datasets
  ckpt: checkpointing.Checkpointer
  writer: metrics_lib.MetricWriter
  perf: step_metrics.StepMetrics
  start: int
  suspect: Optional[int] = None
  last_eval: Optional[dict[str, float]] = None
  compiled: set = dataclasses.field(default_factory=set)
  t0: float = dataclasses.field(default_factory=time.time)
  last_save: float = dataclasses.field(default_factory=time.monotonic)

  def train_step(self, step: int) -> None:
    """Runs step `step` (metrics stay on device until a log or save)."""
    batch = sharding.make_global_batch(
        next(self.datasets.train), self.mesh, self.trainer.data_sharding
    )
    step_fn = self.trainer.train_step_at(step)
    compiling = id(step_fn) not in self.compiled
    if compiling:
      # The step that compiles stays out of step time and tokens/s.
      jax.block_until_ready(self.state)
      began = time.perf_counter()
      kind = "warm-up" if self.trainer.warming_up(step) else "train"
      _say(f"compiling the {kind} step...")
    self.state, m = train.run_step(self.trainer, step_fn, self.state, batch)
    if compiling:
      jax.block_until_ready(m)
      self.perf.exclude_step(time.perf_counter() - began)
      self.compiled.add(id(step_fn))
    self.perf.add(step + 1, m)

  def checked(self) -> dict[str, float]:
    """The latest metrics; raises on a non-finite step since the last."""
    m, bad = self.perf.fetch(FINITE_KEYS)
    if bad and self.suspect is not None:
      raise _NonFiniteAfterRestore(
          f"non-finite {bad[1]}={bad[2]} at step {bad[0]}, the first"
          f" metrics after restoring step {self.suspect} from"
          f" {self.ckpt.directory}.",
          self.suspect,
      )
    if bad:
      raise NonFiniteLossError(
          f"non-finite {bad[1]}={bad[2]} at step {bad[0]}; stopping without "
          f"saving. The last good checkpoint (step {self.ckpt.latest_step()})"
          f" in {self.ckpt.directory} is intact."
      )
    self.suspect = None
    return m

  def maybe_log(self, done: int) -> None:
    t = self.t
    if done % t.log_every and done != t.steps:
      return
    m = self.checked()
    rates = self.perf.rates(done)
    name, value = metrics_lib.paper_metric(
        self.datasets.unit, m["loss"], self.datasets.tokens_per_unit
    )
    scalars = {"train/loss_nats": m["loss"], f"train/{name}": value}
    scalars.update({f"train/{k}": v for k, v in rates.items()})
    scalars.update(
        {f"train/{k}": v for k, v in m.items() if k not in ("loss", "tokens")}
    )
    self.writer.write(done, scalars)
    _say(
        metrics_lib.progress_line(
            done,
            t.steps,
            name,
            value,
            rates["tokens_per_s"],
            time.time() - self.t0,
            done - self.start,
            perf=rates,
        )
    )

  def maybe_eval(self, done: int) -> None:
    t = self.t
    if done % t.eval_every and done != t.steps:
      return
    self.checked()  # the queued steps finish before the clock starts
    began = time.perf_counter()
    ev = evaluate(
        self.trainer, self.state, self.datasets, self.mesh, t.eval_batches
    )
    self.writer.write(done, ev)
    self._write_sample(done)
    _say(
        f"eval at step {done}: "
        + ", ".join(
            f"{k[5:]} {v:.4f}" for k, v in ev.items() if k != "eval/tokens"
        )
    )
    self.last_eval = ev
    self.perf.exclude(time.perf_counter() - began)

  def _write_sample(self, step: int) -> None:
    """A text sample to TensorBoard at an evaluation (every process
    samples: a collective), unless off, an image model, or still in the
    warm-up (whose dense attention the decoder cannot reproduce)."""
    t, data = self.t, self.datasets
    if (
        not t.eval_sample_length
        or data.decode is None
        or self.trainer.warming_up(step)
    ):
      return
    text = text_samples.sample_text(
        self.trainer,
        self.state,
        data,
        t.sample_prompt,
        t.eval_sample_length,
        seed=t.seed + step,
    )
    self.writer.write_text(step, "samples", text)

  def maybe_save(self, done: int, stop: bool) -> bool:
    """Saves at the interval, after `checkpoint_every_minutes`, or when
    `stop` (preempted); True when the run must end (saved)."""
    minutes = self.t.checkpoint_every_minutes
    # Wall-clock saves, decided at log points by process 0's clock (the
    # processes must agree: a save is collective).
    timed = (
        minutes > 0
        and done % self.t.log_every == 0
        and multihost.agree(time.monotonic() - self.last_save >= minutes * 60)
    )
    if not (stop or timed or done % self.ckpt.save_every == 0):
      return False
    self.checked()  # nothing non-finite is ever saved
    began = time.perf_counter()
    self.ckpt.save(
        done, self.state, self.datasets.train.get_state(), force=stop or timed
    )
    self.last_save = time.monotonic()
    if stop:
      self.ckpt.wait()
      return True
    self.perf.exclude(time.perf_counter() - began)
    return False

  def final_save(self) -> None:
    self.checked()
    self.ckpt.save(
        self.t.steps, self.state, self.datasets.train.get_state(), force=True
    )

  def result(self, step: int, preempted: bool = False) -> TrainResult:
    return TrainResult(
        start_step=self.start,
        step=step,
        preempted=preempted,
        state=self.state,
        trainer=self.trainer,
        datasets=self.datasets,
        wall_s=time.time() - self.t0,
        last_eval=self.last_eval,
    )
