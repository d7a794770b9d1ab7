# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.training.batch_scaling: batch and lr for N devices."""

import json
import math

import pytest

from experiments import enwik8
from experiments import shakespeare
from routing_jax.training import batch_scaling
from routing_jax.training import train
from routing_jax.training import train_loop


@pytest.mark.parametrize(
    "rule, factor", [("none", 1.0), ("sqrt", math.sqrt(8)), ("linear", 8.0)]
)
def test_per_device_batch_sets_the_global_batch_and_scales_lr(rule, factor):
  c = enwik8.get_config("variant=8k")  # the paper's batch 32, lr 0.01
  c.data.per_device_batch_size = 1
  c.train.lr_batch_scaling = rule
  line = batch_scaling.resolve(c, 256)  # e.g. a v6e-256 slice, tensor=1
  assert c.data.batch_size == 256
  assert c.train.lr == pytest.approx(0.01 * factor)
  assert line.startswith("global batch 256 (1 per device x 256; configured 32)")
  # Resolving the resolved config (what config.json holds) changes nothing.
  assert batch_scaling.resolve(c, 256) == "" and c.data.batch_size == 256
  assert c.train.lr == pytest.approx(0.01 * factor)


def test_the_default_keeps_the_papers_global_batch():
  c = enwik8.get_config("variant=8k")
  assert batch_scaling.resolve(c, 256) == ""
  assert (c.data.batch_size, c.train.lr) == (32, 0.01)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("data.per_device_batch_size", -1, "must be >= 0"),
        ("train.lr_batch_scaling", "cubic", "must be one of"),
    ],
)
def test_bad_values_are_refused_naming_the_field(field, value, message):
  c = shakespeare.get_config("tiny")
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(ValueError, match=f"{field}={value!r}: {message}"):
    train.validate_config(c)


def test_a_run_trains_with_the_resolved_batch_and_records_it(tmp_path):
  """8 fake devices, mesh data=4 x fsdp=2: 2 rows each is a batch of 16."""
  c = shakespeare.get_config("tiny")
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 4, 2, 1
  c.data.per_device_batch_size = 2
  c.train.lr_batch_scaling = "linear"
  c.train.steps, c.train.eval_every = 1, 100
  base_lr, base_batch = c.train.lr, c.data.batch_size
  assert base_batch != 16
  result = train_loop.train_and_evaluate(c, str(tmp_path))
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["data"]["batch_size"] == 16
  assert saved["train"]["lr"] == pytest.approx(base_lr * 16 / base_batch)
  assert result.step == 1
