# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.training.metrics: JSON lines, TensorBoard files, units.

Event files are written by tensorboardX; here their TFRecord framing is read
back with both CRCs checked and each record parsed as an `Event` proto.
"""

import json
import math
import pathlib
import re
import struct
import sys
import time

import numpy as np
import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from experiments import shakespeare
from routing_jax.training import metrics
from routing_jax.training import plots
from routing_jax.training import train_loop


def read_event_records(data: bytes) -> list[dict]:
  """TFRecord bytes -> [dict(wall_time, step, file_version, scalars)]."""
  events, i = [], 0
  while i < len(data):
    header = data[i : i + 8]
    (length,) = struct.unpack("<Q", header)
    assert struct.unpack("<I", data[i + 8 : i + 12])[0] == masked_crc32c(header)
    record = data[i + 12 : i + 12 + length]
    crc = data[i + 12 + length : i + 16 + length]
    assert struct.unpack("<I", crc)[0] == masked_crc32c(record)
    i += 16 + length
    ev = event_pb2.Event.FromString(record)
    events.append({
        "wall_time": ev.wall_time,
        "step": ev.step,
        "file_version": ev.file_version,
        "scalars": {
            v.tag: v.simple_value
            for v in ev.summary.value
            if v.WhichOneof("value") == "simple_value"
        },
        "texts": {
            v.tag: v.tensor.string_val[0].decode()
            for v in ev.summary.value
            if v.metadata.plugin_data.plugin_name == "text"
        },
        "hparams": b"".join(
            v.metadata.plugin_data.content
            for v in ev.summary.value
            if v.metadata.plugin_data.plugin_name == "hparams"
        ),
    })
  return events


def _scalars(events):
  """(step, tag, value) of every scalar, in the order written."""
  return [
      (e["step"], tag, value)
      for e in events
      for tag, value in e["scalars"].items()
  ]


def _read_events(workdir):
  files = list((pathlib.Path(workdir) / "tensorboard").iterdir())
  assert len(files) == 1 and files[0].name.startswith("events.out.tfevents.")
  return read_event_records(files[0].read_bytes())


def test_writer_jsonl_and_event_file(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write(10, {"train/loss_nats": 2.5, "train/bits_per_byte": 3.6})
  writer.write(20, {"eval/loss_nats": np.float32(1.25)})
  writer.close()
  rows = [
      json.loads(line)
      for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
  ]
  assert rows == [
      {"step": 10, "train/loss_nats": 2.5, "train/bits_per_byte": 3.6},
      {"step": 20, "eval/loss_nats": 1.25},
  ]
  events = _read_events(tmp_path)
  assert events[0]["file_version"] == "brain.Event:2"
  assert _scalars(events) == [
      (10, "train/loss_nats", 2.5),
      (10, "train/bits_per_byte", np.float32(3.6)),
      (20, "eval/loss_nats", 1.25),
  ]
  assert all(abs(e["wall_time"] - events[0]["wall_time"]) < 60 for e in events)


def test_writer_appends_and_disabled_writer_writes_nothing(tmp_path):
  for step in (1, 2):  # A resumed run appends to metrics.jsonl.
    w = metrics.MetricWriter(str(tmp_path))
    w.write(step, {"x": float(step)})
    w.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(x)["step"] for x in lines] == [1, 2]
  off = tmp_path / "other"
  w = metrics.MetricWriter(str(off), enabled=False)
  w.write(1, {"x": 1.0})
  w.close()
  assert not off.exists()


@pytest.mark.parametrize(
    "unit, nats, tpw, name, value",
    [
        ("byte", math.log(2) * 1.5, None, "bits_per_byte", 1.5),
        ("subpixel", math.log(2) * 3.0, None, "bits_per_dim", 3.0),
        ("word", math.log(20.0), None, "perplexity", 20.0),
        ("token", 0.0, None, "perplexity", 1.0),
        ("subword", math.log(10.0), 1.5, "word_perplexity", 10.0**1.5),
        ("byte", 0.0, None, "bits_per_byte", 0.0),
    ],
)
def test_paper_metric(unit, nats, tpw, name, value):
  got_name, got = metrics.paper_metric(unit, nats, tpw)
  assert got_name == name
  assert got == pytest.approx(value, rel=1e-12)


def test_paper_metric_perplexity_does_not_overflow():
  assert math.isfinite(metrics.paper_metric("word", 1e6)[1])


def test_progress_line():
  line = metrics.progress_line(
      120, 1500, "bits_per_byte", 2.31449, 5123.0, elapsed=60.0, done_steps=20
  )
  # 1380 steps left at 3 s/step.
  assert line == "step 120/1500 | bits_per_byte 2.3145 | 5.1k tok/s | ETA 1h09m"
  line = metrics.progress_line(
      10, 12, "perplexity", 30.0, 900.0, elapsed=50.0, done_steps=10
  )
  assert line == "step 10/12 | perplexity 30.0000 | 0.9k tok/s | ETA 0m10s"
  perf = {
      "step_time_s": 0.4123,
      "tflops_per_device": 12.34,
      "mfu": 0.3125,
      "lr": 0.01,
  }
  line = metrics.progress_line(
      10, 12, "perplexity", 30.0, 900.0, elapsed=50.0, done_steps=10, perf=perf
  )
  assert line == (
      "step 10/12 | perplexity 30.0000 | 0.9k tok/s | 0.412 "
      "s/step | 12.3 TFLOP/s/device | MFU 31.2% | lr 1.00e-02 | "
      "ETA 0m10s"
  )


def test_training_loop_writes_metrics(tmp_path, capsys):
  """A 2-step run: jsonl rows, matching TensorBoard scalars, progress."""
  config = shakespeare.get_config("tiny")
  config.train.schedule = "rsqrt"  # As in the resume tests (shared compile).
  config.train.warmup_steps = 2
  config.train.steps = 2
  config.train.eval_every = 2
  config.train.checkpoint_every = 8
  config.train.eval_sample_length = 8
  config.train.sample_prompt = "KING"
  train_loop.train_and_evaluate(config, str(tmp_path))
  rows = [
      json.loads(line)
      for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
  ]
  assert [r["step"] for r in rows] == [1, 2, 2]
  # No MFU on CPU: its peak FLOP/s is not in the hardware table.
  train_keys = {
      "step",
      "train/loss_nats",
      "train/bits_per_byte",
      "train/tokens_per_s",
      "train/grad_norm",
      "train/param_norm",
      "train/kmeans_loss",
      "train/kmeans/entropy",
      "train/kmeans/empty_fraction",
      "train/kmeans/max_share",
      "train/step_time_s",
      "train/lr",
      "train/tflops_per_device",
  }
  assert set(rows[0]) == train_keys and set(rows[1]) == train_keys
  assert set(rows[2]) == {
      "step",
      "eval/loss_nats",
      "eval/bits_per_byte",
      "eval/kmeans_loss",
      "eval/tokens",
  }
  for r in rows[:2]:
    assert r["train/bits_per_byte"] == pytest.approx(
        r["train/loss_nats"] / math.log(2)
    )
    # Cluster entropy is at most log(num_clusters = 2).
    assert 0.0 <= r["train/kmeans/entropy"] <= math.log(2) + 1e-6
  assert rows[2]["eval/tokens"] == 512  # eval_batches=1 of 8 x 64 bytes.

  events = _read_events(tmp_path)
  # A sample at the evaluation (TensorBoard's Text tab) and the config as
  # hparams.
  texts = [(e["step"], t) for e in events for t in e["texts"].items()]
  assert len(texts) == 1 and texts[0][0] == 2
  tag, text = texts[0][1]
  assert tag.startswith("samples") and text.startswith("```\nKING")
  assert len(text) >= len("```\nKING") + 8
  hparams = b"".join(e["hparams"] for e in events)
  assert b"model.d_model" in hparams and b"train.lr" in hparams
  assert _scalars(events) == [
      (r["step"], k, np.float32(v))
      for r in rows
      for k, v in r.items()
      if k != "step"
  ]
  out = capsys.readouterr().out
  # What a user sees by default: the model size and the mesh.
  assert re.search(
      r"^model: [\d,]+ parameters; mesh \{.*\} over \d+ cpu device\(s\),"
      r" 1 process\(es\)$",
      out,
      re.M,
  )
  assert re.findall(
      r"^step (\d)/2 \| bits_per_byte \d\.\d{4} \| [\d.]+k "
      r"tok/s \| [\d.]+ s/step \| \S+ TFLOP/s/device \| lr "
      r"\d\.\d\de-\d\d \| ETA",
      out,
      re.M,
  ) == ["1", "2"]
  assert re.search(
      r"^eval at step 2: loss_nats \d\.\d{4}, bits_per_byte "
      r"\d\.\d{4}, kmeans_loss \d\.\d{4}$",
      out,
      re.M,
  )


def test_step_time_mfu_and_lr_exclude_eval_and_checkpoints(
    tmp_path, monkeypatch, capsys
):
  """A device kind with a known peak gets MFU; evaluation time is not
  training time; the host fetches metrics at log points only."""
  import jax  # pylint: disable=g-import-not-at-top
  from routing_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  from routing_jax.training import hardware  # pylint: disable=g-import-not-at-top
  from routing_jax.training import optim  # pylint: disable=g-import-not-at-top
  from routing_jax.training import train  # pylint: disable=g-import-not-at-top

  fake = hardware.DeviceKind("fake", 2**30, 1e12, ("cpu",))
  monkeypatch.setattr(hardware, "kind_of_device", lambda _: fake)
  # The clock jumps 60 s during each compiling step (run_step's first call
  # of a program; evaluation's own is inside the evaluation), each
  # evaluation and each checkpoint save. A real step takes well under a
  # second even on a loaded machine, so a step time under 5 s shows all of
  # them were left out (one counted would add at least 20 s per step).
  jumps = []
  perf_counter = time.perf_counter
  monkeypatch.setattr(
      time, "perf_counter", lambda: perf_counter() + 60.0 * len(jumps)
  )
  programs = set()

  def slow(kind, fn):
    def wrapped(*args, **kwargs):
      if kind != "compile":
        jumps.append(kind)
      elif id(args[1]) not in programs:  # run_step(trainer, fn, ...)
        programs.add(id(args[1]))
        jumps.append(kind)
      return fn(*args, **kwargs)

    return wrapped

  monkeypatch.setattr(train, "run_step", slow("compile", train.run_step))
  monkeypatch.setattr(train_loop, "evaluate", slow("eval", train_loop.evaluate))
  monkeypatch.setattr(
      checkpointing.Checkpointer,
      "save",
      slow("save", checkpointing.Checkpointer.save),
  )
  fetches = []
  device_get = jax.device_get

  def counting_device_get(tree):
    caller = sys._getframe(1).f_globals["__name__"]  # pylint: disable=protected-access
    if caller.endswith("step_metrics"):
      fetches.append(len(tree))
    return device_get(tree)

  monkeypatch.setattr(jax, "device_get", counting_device_get)
  config = shakespeare.get_config("tiny")
  config.train.schedule = "rsqrt"  # As in the resume tests (shared compile).
  config.train.warmup_steps = 2
  config.train.steps = 6
  config.train.log_every = 3
  config.train.eval_every = 3
  config.train.checkpoint_every = 3
  train_loop.train_and_evaluate(config, str(tmp_path))
  assert fetches == [3, 3]  # steps 1-3 and 4-6, once each
  rows = [
      json.loads(line)
      for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
  ]
  train_rows = [r for r in rows if "train/loss_nats" in r]
  assert [r["step"] for r in train_rows] == [3, 6]
  lr = optim.learning_rate_schedule(config.train)
  for r in train_rows:
    assert r["train/lr"] == pytest.approx(float(lr(r["step"] - 1)))
    assert r["train/mfu"] == pytest.approx(
        r["train/tflops_per_device"] * 1e12 / 1e12
    )
    assert r["train/tokens_per_s"] == pytest.approx(
        8 * 64 / r["train/step_time_s"]
    )
  # Steps 4-6 ran after an evaluation and a checkpoint at step 3; neither
  # counts as step time. Nor does the first step, which compiled.
  assert "compile" in jumps
  assert jumps.count("eval") == 2 and jumps.count("save") >= 2
  assert train_rows[1]["train/step_time_s"] < 5.0
  assert train_rows[0]["train/step_time_s"] < 5.0
  out = capsys.readouterr().out
  assert out.count("compiling the train step...") == 1
  assert re.search(
      r"^step 6/6 \| .* TFLOP/s/device \| MFU \d+\.\d% \| lr ", out, re.M
  )


def test_loss_curve_after_a_resume(tmp_path, monkeypatch):
  """Repeated steps (a resumed run) and a cut last line (a killed one)."""
  import matplotlib.axes  # pylint: disable=g-import-not-at-top

  calls = {}
  real_plot = matplotlib.axes.Axes.plot

  def plot(self, xs, ys, **kwargs):
    calls[kwargs["label"]] = (list(xs), list(ys))
    return real_plot(self, xs, ys, **kwargs)

  monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
  ln2 = math.log(2)
  rows = [
      {"step": s, "train/loss_nats": v}
      for s, v in ((1, 5.0), (2, 4.0), (3, 3.5))
  ]  # Killed after step 3 ...
  rows += [
      {"step": s, "train/loss_nats": v} for s, v in ((3, 3.0), (4, 2.0))
  ]  # ... resumed from step 2.
  rows.append({"step": 4, "eval/loss_nats": 2.5})
  text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "tr'
  (tmp_path / "metrics.jsonl").write_text(text)
  png = plots.plot_losses(str(tmp_path))
  assert pathlib.Path(png).read_bytes()[:4] == b"\x89PNG"
  assert calls["train"] == (
      [1, 2, 3, 4],
      [5.0 / ln2, 4.0 / ln2, 3.0 / ln2, 2.0 / ln2],
  )
  assert calls["validation"] == ([4], [2.5 / ln2])


def test_a_step_that_compiled_is_left_out_of_the_rates(monkeypatch):
  from routing_jax.training import step_metrics  # pylint: disable=g-import-not-at-top

  clock = iter([0.0, 13.0])  # construction, rates()
  monkeypatch.setattr(step_metrics.time, "perf_counter", lambda: next(clock))
  perf = step_metrics.StepMetrics(0, 100, 1e9, 1, None, lambda s: 0.1)
  perf.exclude_step(10.0)  # step 1 compiled for 10 s
  perf.exclude(1.0)  # an evaluation
  rates = perf.rates(3)  # steps 2 and 3 took the other 2 s
  assert rates["step_time_s"] == pytest.approx(1.0)
  assert rates["tokens_per_s"] == pytest.approx(100.0)


def test_profiler_waits_for_the_dispatched_steps(tmp_path, monkeypatch):
  """Steps are dispatched ahead of the device: the trace starts and stops
  only once the previous step's state is ready, so it holds exactly the
  steps it names."""
  import jax  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from routing_jax.training import profiling  # pylint: disable=g-import-not-at-top

  events = []
  monkeypatch.setattr(
      profiling.jax, "block_until_ready", lambda s: events.append(("wait", s))
  )
  monkeypatch.setattr(
      jax.profiler, "start_trace", lambda d: events.append(("start",))
  )
  monkeypatch.setattr(
      jax.profiler, "stop_trace", lambda: events.append(("stop",))
  )
  prof = profiling.StepProfiler(epath.Path(tmp_path), 0, 10, num_steps=2)
  for step in range(5):
    prof.update(step, f"state after {step} steps")
  prof.close("end")
  assert events == [
      ("wait", "state after 1 steps"),
      ("start",),
      ("wait", "state after 3 steps"),
      ("stop",),
  ]
