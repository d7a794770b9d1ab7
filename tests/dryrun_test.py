# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for the dry run's memory verdict, the hardware table and remat.

The dry run itself runs in-process here on the test's fake CPU devices
(its re-execution on the hardware's device count is tested in
paper_configs_test.py).
"""

import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from experiments import pg19
from routing_jax import dryrun
from routing_jax.nn.model import TransformerLM
from routing_jax.training import hardware
from routing_jax.training import optim
from routing_jax.training import sharding
from routing_jax.training import train

ROOT = pathlib.Path(__file__).parents[1]


def test_hardware_specs_parse_and_device_kinds_match():
  hw = hardware.parse("tpu_v3_32")
  assert (hw.kind.name, hw.num_devices) == ("tpu_v3", 32)
  assert hw.kind.memory_bytes == 16 * 2**30
  hw = hardware.parse("8xh100_80gb")
  assert (hw.kind.name, hw.num_devices) == ("h100_80gb", 8)
  for bad in ("tpu_v3", "h100_80gb", "8xtpu_v9", "tpu_v3_0", ""):
    with pytest.raises(ValueError, match=f"hardware='{bad}': must be"):
      hardware.parse(bad)
  kind = lambda s: getattr(hardware.kind_of_device(s), "name", None)
  assert kind("TPU v3") == "tpu_v3"
  assert kind("TPU v5 lite") == "tpu_v5e"
  assert kind("TPU v5") == "tpu_v5p"
  assert kind("NVIDIA H100 80GB HBM3") == "h100_80gb"
  assert kind("NVIDIA H100 PCIe") == "h100_pcie"
  assert kind("NVIDIA H200") == "h200"
  assert kind("NVIDIA A100-SXM4-40GB") == "a100_40gb"
  assert kind("cpu") is None


def test_tpu_slices_and_usable_memory():
  """libtpu's topology names for the hardware specs (2-D for v2/v3/v5e/v6e,
  3-D for v4/v5p; v2/v3 count two devices per chip), and what a step may
  use: the TPU compiler's available HBM, JAX's 75% on GPUs."""
  topo = lambda s: hardware.tpu_topology(hardware.parse(s))
  assert topo("tpu_v3_32") == "v3:4x4"
  assert topo("tpu_v3_8") == "v3:2x2"
  assert topo("tpu_v4_8") == "v4:2x2x2"
  assert topo("tpu_v4_4") == "v4:2x2x1"
  assert topo("tpu_v5p_256") == "v5p:4x8x8"
  assert topo("tpu_v6e_256") == "v6e:16x16"
  assert topo("tpu_v5e_32") == "v5e:4x8"
  acc = lambda s: hardware.tpu_accelerator_type(hardware.parse(s))
  assert acc("tpu_v3_32") == "v3-32" and acc("tpu_v5p_256") == "v5p-512"
  assert acc("tpu_v5e_32") == "v5litepod-32" and acc("tpu_v6e_256") == "v6e-256"
  for bad in ("tpu_v3_12", "tpu_v3_1", "8xh100_80gb"):
    with pytest.raises(ValueError, match=f"hardware='{bad}': not a TPU slice"):
      topo(bad)
  kinds = hardware.DEVICE_KINDS
  usable, why = hardware.usable_bytes(kinds["tpu_v3"])
  assert usable == int(15.48 * 2**30) and "0.52 GiB for the runtime" in why
  usable, _ = hardware.usable_bytes(kinds["tpu_v5p"])  # not measured: 5%
  assert usable == int(0.95 * 95 * 2**30)
  usable, why = hardware.usable_bytes(kinds["h100_80gb"], environ={})
  assert usable == int(0.75 * kinds["h100_80gb"].memory_bytes)
  assert why.startswith("75% of 79.6 GiB, what JAX preallocates")
  env = {"XLA_PYTHON_CLIENT_MEM_FRACTION": ".9"}
  usable, _ = hardware.usable_bytes(kinds["h100_80gb"], environ=env)
  assert usable == int(0.9 * kinds["h100_80gb"].memory_bytes)


def test_tensor_axis_must_divide_every_modules_heads():
  """enwik8 has 4 local + 4 routing heads per layer: tensor=8 would split
  head_dim; refused in one line naming mesh.tensor, as set, as resolved
  from the hardware, and as resolved from the devices (-1)."""
  from routing_jax import cli_checks  # pylint: disable=g-import-not-at-top
  from routing_jax import errors  # pylint: disable=g-import-not-at-top
  from experiments import enwik8  # pylint: disable=g-import-not-at-top

  want = (
      r"^mesh.tensor=8: must divide the heads of every attention module"
      r" \(routing layers: 4 local \+ 4 routing heads\), else it splits"
      r" head_dim$"
  )
  config = enwik8.get_config("variant=8k")
  config.mesh.data, config.mesh.tensor = 4, 8
  with pytest.raises(ValueError, match=want):
    train.validate_config(config)  # hardware tpu_v3_32
  config.hardware = ""  # checked once the devices are known
  with pytest.raises(errors.ConfigError, match=want):
    cli_checks.check_mesh(config, 32)
  config.mesh.data, config.mesh.tensor = 1, -1
  with pytest.raises(errors.ConfigError, match=want):
    cli_checks.check_mesh(config, 8)
  config.mesh.data, config.mesh.tensor = 8, 4
  train.validate_config(config)
  cli_checks.check_mesh(config, 32)
  # Layers without routing: all heads in one module.
  local = enwik8.get_config("variant=local8k")
  local.mesh.data, local.mesh.tensor = 2, 16
  with pytest.raises(ValueError, match=r"\(all layers: 8 heads\)"):
    train.validate_config(local)


def test_sharding_doc_states_the_codes_replication_threshold():
  doc = (ROOT / "docs" / "sharding.md").read_text()
  assert f"{train.MAX_REPLICATED_BYTES // 2**20} MiB or more" in doc


def test_config_hardware_and_mesh_are_checked_together():
  config = pg19.get_config(None)
  config.hardware = "tpu_v3_8"
  config.mesh.fsdp = 16
  with pytest.raises(
      ValueError,
      match=r"mesh for hardware='tpu_v3_8' \(8 "
      r"devices\): mesh.fsdp=16 does not divide 8",
  ):
    train.validate_config(config)
  config.hardware = "tpu_v3"
  with pytest.raises(ValueError, match="hardware='tpu_v3': must be"):
    train.validate_config(config)


def test_a_step_that_cannot_fit_says_no():
  """pg19:small with 8192 sequences per device on 8 GiB TPU v2 cores."""
  config = pg19.get_config("small")
  config.hardware = "tpu_v2_8"
  config.data.per_device_batch_size = 8192
  lines = []
  dryrun.report(config, jax.devices()[:8], out=lines.append)
  assert f"global batch {8 * 8192} (8192 per device x 8;" in "\n".join(lines)
  assert lines[-1].startswith("fits tpu_v2_8: no (")
  assert lines[-1].endswith(" GiB of 7.5 GiB per device)")
  used = float(lines[-1].split("(")[1].split(" GiB")[0])
  assert used > 7.48  # the "yes" case: paper_configs_test.py
  # On CPU devices the figure is XLA:CPU's, and the line says so.
  compiler = next(l for l in lines if l.startswith("compiler: "))
  assert compiler.startswith(
      "compiler: XLA:CPU (8 fake devices): the memory figures are a CPU"
      " estimate for tpu_v2, not its compiler's; install libtpu"
  ), compiler
  assert any(l.startswith("compiled eval step per device: ") for l in lines)
  assert any(l.startswith("compiled decode step per device: ") for l in lines)


def _compile(config):
  """(ModelConfig, abstract state, batch size, compiled train step) on 1
  device."""
  cfg = train.validate_config(config)
  model = TransformerLM(cfg)
  tx = optim.create_optimizer(config.train)
  mesh = sharding.create_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  rules = sharding.logical_rules()
  init = functools.partial(
      train.init_state, model, tx, seq_len=config.data.seq_len
  )
  abstract, shardings = sharding.abstract_sharded_state(
      init, mesh, rules, jax.random.PRNGKey(0)
  )
  b, n = config.data.batch_size, config.data.seq_len
  batch = {
      k: jax.ShapeDtypeStruct((b, n), dt, sharding=sharding.data_sharding(mesh))
      for k, dt in (
          ("inputs", jnp.int32),
          ("targets", jnp.int32),
          ("weights", jnp.float32),
          ("mask", jnp.bool_),
      )
  }
  step, _ = train.jit_steps(config, model, tx, mesh, shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    return cfg, abstract, step.lower(abstract, batch).compile()


def _compiled_temp_bytes(remat_policy: str) -> int:
  config = pg19.get_config("small")
  config.model.num_layers = 6
  config.model.routing_layers = "skip_first:5"
  config.model.scan_layers = True
  config.model.remat_policy = remat_policy
  config.data.batch_size = 4
  compiled = _compile(config)[2]
  return compiled.memory_analysis().temp_size_in_bytes


def test_remat_shows_in_the_compiled_memory():
  """Scanned layers with remat keep one layer's activations, not six."""
  full, none = _compiled_temp_bytes("full"), _compiled_temp_bytes("none")
  print(
      f"\n6 scanned layers, temporaries: remat full {full / 2**20:.1f} MiB,"
      f" none {none / 2**20:.1f} MiB"
  )
  assert full < 0.5 * none


def test_model_flops_match_xla_count():
  """The analytic FLOPs behind MFU against XLA's count of the compiled step
  (no remat, no loops, so XLA counts every op once; its count also has the
  elementwise work, hence a few percent more)."""
  from experiments import shakespeare  # pylint: disable=g-import-not-at-top
  from routing_jax.training import flops  # pylint: disable=g-import-not-at-top

  config = shakespeare.get_config("small")
  config.model.d_model, config.model.d_ff = 128, 512
  cfg, abstract, compiled = _compile(config)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  model_flops = flops.train_flops_per_step(
      cfg, abstract.params, config.data.batch_size, config.data.seq_len
  )
  ratio = cost["flops"] / model_flops
  print(f"\nXLA / model FLOPs: {ratio:.3f}")
  assert 1.0 <= ratio < 1.1
