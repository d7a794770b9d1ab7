"""The training loop: resume, train, evaluate, checkpoint, sample.

Resume order: the newest restorable checkpoint in `<workdir>/checkpoints`
(a damaged newest one is skipped with a warning), else a fresh start. A
SIGTERM (preemption) saves the current step and returns; a non-finite loss
raises `NonFiniteLossError` before anything is saved, so the last good
checkpoint stays the newest. The host fetches step metrics only at log and
checkpoint points (step_metrics.py): a non-finite step between them stops
the run at the next such point, naming the step, and is never saved.
"""

import hashlib
import io
import json
import math
import time
from typing import Any, Optional

from absl import logging
import jax
import numpy as np

from routing_jax.training import checkpointing
from routing_jax import errors
from routing_jax.training import flops
from routing_jax.training import hardware
from routing_jax.data import input_pipeline
from routing_jax.training import metrics as metrics_lib
from routing_jax import multihost
from routing_jax.training import optim
from routing_jax.training import profiling
from routing_jax.training import sharding
from routing_jax.training import step_metrics
from routing_jax.training import train
from routing_jax.training import workdir as workdir_lib

# Training stops when a step's loss or gradient norm is not finite.
FINITE_KEYS = ("loss", "grad_norm")


class NonFiniteLossError(FloatingPointError):
  """A step produced a non-finite loss or gradient norm; nothing was saved."""


def _say(line: str) -> None:
  """Progress for the console (process 0 only) and the log."""
  logging.debug(line)
  if jax.process_index() == 0:
    print(line, flush=True)


# Fields that pick how the same function is computed: a run may resume
# under either value (and older checkpoints, saved before the field existed,
# keep their hash).
_HASH_EXEMPT = ("routing_implementation",)


def config_hash(config: Any) -> str:
  """Hash of the model section: a checkpoint must match the architecture."""
  model = {key: value for key, value in config.model.to_dict().items()
           if key not in _HASH_EXEMPT}
  text = json.dumps(model, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def evaluate(trainer: train.Trainer, state: train.TrainState, datasets,
             mesh, max_batches: int) -> dict[str, float]:
  """Per-token loss (nats) over up to `max_batches` eval batches."""
  sums = {"ce": 0.0, "weight": 0.0, "kmeans_loss": 0.0}
  n = 0
  for batch in datasets.eval:
    if n >= max_batches:
      break
    gb = sharding.make_global_batch(batch, mesh, trainer.data_sharding)
    out = jax.device_get(train.run_step(trainer, trainer.eval_step, state,
                                        gb))
    for k in sums:
      sums[k] += float(out[k])
    n += 1
  nats = sums["ce"] / max(sums["weight"], 1.0)
  name, value = metrics_lib.paper_metric(datasets.unit, nats,
                                         datasets.tokens_per_word)
  return {"eval/loss_nats": nats, f"eval/{name}": value,
          "eval/kmeans_loss": sums["kmeans_loss"] / max(n, 1),
          "eval/tokens": sums["weight"]}


def sample_text(trainer: train.Trainer, state: train.TrainState, datasets,
                prompt: str, length: int, seed: int = 0,
                temperature: float = 0.8, top_p: float = 0.95) -> str:
  """Cached sampling from the trained model (text datasets only)."""
  from routing_jax.nn import generation  # pylint: disable=g-import-not-at-top
  ids = np.asarray(datasets.encode(prompt), np.int32) if prompt else (
      np.zeros((0,), np.int32))
  # Position 0 holds the start token 0, as in training.
  prompt_ids = np.concatenate([[0], ids]).astype(np.int32)[None]
  total = prompt_ids.shape[1] + length
  variables = {"params": state.params, "kmeans": state.kmeans}
  with jax.set_mesh(trainer.mesh):
    out = generation.sample(
        trainer.model, variables, prompt_ids, total,
        rng=jax.random.PRNGKey(seed), temperature=temperature, top_p=top_p)
  tokens = np.asarray(jax.device_get(out.tokens)[0, 1:])
  # Every process decodes; a difference would mean diverged collectives.
  multihost.check_same(tokens.tobytes(), "the sampled text")
  return datasets.decode(tokens)


def plot_losses(workdir: str) -> Optional[str]:
  """Writes loss_curve.png from metrics.jsonl; returns its path."""
  workdir = workdir_lib.resolve(workdir)
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue  # A line cut short by a killed run.
  fig, ax = plt.subplots(figsize=(6, 4))
  for key, label in (("train/loss_nats", "train"), ("eval/loss_nats",
                                                     "validation")):
    # A resumed run repeats the steps after its checkpoint: the last wins.
    pts = sorted({r["step"]: r[key] / math.log(2) for r in rows
                  if key in r}.items())
    if pts:
      ax.plot(*zip(*pts), label=label, marker="." if "eval" in key else None)
  ax.set_xlabel("step")
  ax.set_ylabel("loss (bits per token)")
  ax.legend()
  ax.grid(alpha=0.3)
  out = workdir / "loss_curve.png"
  fig.tight_layout()
  png = io.BytesIO()  # matplotlib cannot write to a URL
  fig.savefig(png, format="png", dpi=100)
  plt.close(fig)
  out.write_bytes(png.getvalue())
  return str(out)


def create_datasets(config: Any, mesh: Any,
                    vocab_size: int) -> input_pipeline.Datasets:
  """This process's batches: the rows its devices hold (see multihost).

  Raises:
    errors.DataError: the data cannot be opened (the message says why).
  """
  try:
    rows = multihost.process_rows(sharding.data_sharding(mesh),
                                  config.data.batch_size)
    return input_pipeline.create_datasets(config.data, vocab_size=vocab_size,
                                          rows=rows)
  except (ValueError, FileNotFoundError) as e:
    raise errors.DataError(str(e)) from e


def train_and_evaluate(config: Any, workdir: str,
                       profile_steps: int = 0) -> dict[str, Any]:
  """Trains config in workdir (resuming if possible); returns a summary.

  Args:
    config: the experiment config.
    workdir: local directory or URL (gs://...) for everything the run writes.
    profile_steps: trace this many steps with jax.profiler into
      `<workdir>/profile` (0: no trace).
  """
  model_cfg = train.validate_config(config)  # before anything compiles
  t = config.train
  mesh = sharding.create_mesh(config.mesh)
  rules = sharding.logical_rules()
  workdir = workdir_lib.create(workdir, config,
                               primary=jax.process_index() == 0)
  datasets = create_datasets(config, mesh, model_cfg.vocab_size)
  trainer, state = train.build_trainer(config, mesh, rules, model_cfg)
  ckpt = checkpointing.Checkpointer(
      workdir / "checkpoints",
      keep=t.keep_checkpoints, save_every=t.checkpoint_every,
      async_save=t.async_checkpointing,
      metadata={"model_hash": config_hash(config)})
  restored = ckpt.restore(state)
  if restored is not None:
    state, data_state, start = restored
    saved = ckpt.read_meta(start).get("model_hash")
    if saved not in (None, config_hash(config)):
      # Same shapes do not mean the same model (e.g. routing="topk").
      ckpt.close()
      raise ValueError(
          f"{ckpt.directory}: checkpoint step {start} was trained with a "
          "different model config section (model hash "
          f"{saved} != {config_hash(config)}); use a new workdir.")
    datasets.train.set_state(data_state)
    logging.info("Resumed from step %d", start)
  start = int(jax.device_get(state.step))
  writer = metrics_lib.MetricWriter(workdir, enabled=jax.process_index() == 0)
  preempt = checkpointing.PreemptionHandler()
  profiler = profiling.StepProfiler(workdir, start, t.steps, profile_steps,
                                    enabled=jax.process_index() == 0)
  summary: dict[str, Any] = {"start_step": start, "preempted": False}
  peak = hardware.kind_of_device(jax.devices()[0].device_kind)
  perf = step_metrics.StepMetrics(
      start, tokens_per_step=config.data.batch_size * config.data.seq_len,
      flops_per_step=flops.train_flops_per_step(
          model_cfg, state.params, config.data.batch_size,
          config.data.seq_len),
      num_devices=mesh.size, peak_flops=peak.bf16_flops if peak else None,
      learning_rate=optim.learning_rate_schedule(t))

  def checked():
    """The latest metrics; raises on a non-finite step since the last."""
    m, bad = perf.fetch(FINITE_KEYS)
    if bad:
      raise NonFiniteLossError(
          f"non-finite {bad[1]}={bad[2]} at step {bad[0]}; stopping without "
          f"saving. The last good checkpoint (step {ckpt.latest_step()}) in "
          f"{ckpt.directory} is intact.")
    return m

  t0 = time.time()
  try:
    for step in range(start, t.steps):
      profiler.update(step)
      batch = sharding.make_global_batch(next(datasets.train), mesh,
                                         trainer.data_sharding)
      state, m = train.run_step(trainer, trainer.train_step, state, batch)
      perf.add(step + 1, m)  # fetched at log and save points only
      done = step + 1
      if done % t.log_every == 0 or done == t.steps:
        m = checked()
        rates = perf.rates(done)
        name, value = metrics_lib.paper_metric(
            datasets.unit, m["loss"], datasets.tokens_per_word)
        scalars = {"train/loss_nats": m["loss"], f"train/{name}": value}
        scalars.update({f"train/{k}": v for k, v in rates.items()})
        scalars.update({f"train/{k}": v for k, v in m.items()
                        if k not in ("loss", "tokens")})
        writer.write(done, scalars)
        _say(metrics_lib.progress_line(
            done, t.steps, name, value, rates["tokens_per_s"],
            time.time() - t0, done - start, perf=rates))
      if done % t.eval_every == 0 or done == t.steps:
        checked()  # the queued steps finish before the clock starts
        began = time.perf_counter()
        ev = evaluate(trainer, state, datasets, mesh, t.eval_batches)
        writer.write(done, ev)
        _say(f"eval at step {done}: " + ", ".join(
            f"{k[5:]} {v:.4f}" for k, v in ev.items() if k != "eval/tokens"))
        summary["eval"] = ev
        perf.exclude(time.perf_counter() - began)
      stop = preempt.should_stop(done)
      if stop or done % ckpt.save_every == 0:
        checked()  # nothing non-finite is ever saved
        began = time.perf_counter()
        ckpt.save(done, state, datasets.train.get_state(), force=stop)
        if stop:
          ckpt.wait()
          logging.warning("Preempted: saved step %d, exiting.", done)
          summary["preempted"] = True
          summary["step"] = done
          return summary
        perf.exclude(time.perf_counter() - began)
    checked()
    ckpt.save(t.steps, state, datasets.train.get_state(), force=True)
  finally:
    profiler.close()
    ckpt.close()
    preempt.close()
    writer.close()
  summary["step"] = t.steps
  summary["state"] = state
  summary["trainer"] = trainer
  summary["datasets"] = datasets
  summary["wall_s"] = time.time() - t0
  return summary


def final_report(config: Any, workdir: str, summary: dict[str, Any],
                 sample: bool = True) -> str:
  """Validation metric (with the unigram baseline for bytes), a text sample
  and the loss-curve PNG, as printed at the end of the main job."""
  trainer, state, datasets = (summary["trainer"], summary["state"],
                              summary["datasets"])
  ev = summary.get("eval") or evaluate(trainer, state, datasets,
                                       trainer.mesh, config.train.eval_batches)
  name = next(k for k in ev if k.startswith("eval/") and k not in (
      "eval/loss_nats", "eval/kmeans_loss", "eval/tokens"))
  lines = [f"final {config.data.eval_split} {name[5:]}: {ev[name]:.4f} "
           f"(over {int(ev['eval/tokens'])} tokens)"]
  if config.data.name == "shakespeare":
    from routing_jax.data import corpus  # pylint: disable=g-import-not-at-top
    base = corpus.unigram_bits_per_byte(config.data.eval_split)
    lines.append(f"unigram baseline {config.data.eval_split} bits_per_byte: "
                 f"{base:.4f}")
  if "wall_s" in summary:
    lines.append(f"training wall time: {summary['wall_s']:.0f} s")
  png = plot_losses(workdir) if jax.process_index() == 0 else None
  if png:
    lines.append(f"loss curve: {png}")
  if sample and datasets.decode is not None:
    text = sample_text(trainer, state, datasets, config.train.sample_prompt,
                       config.train.sample_length, seed=config.train.seed)
    lines.append("sample:\n" + text)
  return "\n".join(lines)
