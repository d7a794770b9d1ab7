# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Dry run: sizes and per-device memory of a config, allocating nothing.

  python -m routing_jax.dryrun --config=experiments/pg19.py
  python -m routing_jax.dryrun --config=experiments/shakespeare.py:tiny \
      --devices=4

Prints the parameter count by group, training FLOPs per token, and, for the
config's mesh, the per-device bytes of the sharded train state and of the
compiled train step (ahead-of-time lowering on abstract shapes). The last
line is for scripts:

  fits <hardware>: yes|no (X GiB of Y GiB per device)

for `config.hardware` (routing_jax/training/hardware.py) on the config's
mesh, where X = arguments + temporaries + outputs - donated (aliased) bytes. With fewer
devices than that hardware has (or `--devices` set), the dry run re-executes
itself on that many fake CPU devices, so a pod's mesh can be checked on a
laptop. CPU compilation differs from TPU/GPU compilation in fusion and
scheduling; the layers must be scanned (model.scan_layers) for remat's
saving to show: with a python loop of layers, XLA:CPU schedules the
recomputation early and keeps every layer's activations (measured).
"""

import math
import os
import re
import sys

from absl import flags
from ml_collections import config_flags

from routing_jax import cli
from routing_jax import errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file.", lock_config=True
)
_DEVICES = flags.DEFINE_integer(
    "devices",
    0,
    "Fake this many CPU devices (0: config.hardware's count, "
    "else the real devices).",
    lower_bound=0,
)
_COMPILE = flags.DEFINE_bool(
    "compile", True, "Also compile the train step for its memory analysis."
)
flags.mark_flags_as_required(["config"])

# Set in the re-executed process: how many fake devices it was started with.
_FAKED_ENV = "ROUTING_JAX_DRYRUN_FAKED"
_GIB = 2**30


def param_groups(params) -> dict[str, int]:
  """Parameter count by group (embed, local/routing attention, ffn, ...)."""
  import jax  # pylint: disable=g-import-not-at-top

  groups: dict[str, int] = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    if any(n in ("local", "routing") for n in names):
      group = "attention_local" if "local" in names else "attention_routing"
    elif "ffn" in names:
      group = "ffn"
    elif any("norm" in n for n in names):
      group = "norms"
    elif names[0] == "embed":
      group = "embedding"
    else:
      group = "output"
    groups[group] = groups.get(group, 0) + int(leaf.size)
  return groups


def _reexec_with_fake_devices(count: int) -> None:
  """Starts this dry run again with `count` fake CPU devices (no return)."""
  xla = re.sub(
      r"--xla_force_host_platform_device_count=\S+",
      "",
      os.environ.get("XLA_FLAGS", ""),
  )
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      **{_FAKED_ENV: str(count)},
      XLA_FLAGS=f"{xla} --xla_force_host_platform_device_count={count}",
  )
  sys.stdout.flush()
  os.execve(
      sys.executable,
      [sys.executable, "-m", "routing_jax.dryrun", *sys.argv[1:]],
      env,
  )


def _devices(count: int, kind):
  """`count` devices to compile for: real ones of `kind`, else fake CPUs."""
  import jax  # pylint: disable=g-import-not-at-top
  from routing_jax.training import hardware  # pylint: disable=g-import-not-at-top

  if not count:
    return jax.devices()
  devices = jax.devices()
  if os.environ.get(_FAKED_ENV) == str(count):
    return devices[:count]
  real_kind = hardware.kind_of_device(devices[0].device_kind)
  if kind is not None and real_kind == kind and len(devices) >= count:
    return devices[:count]
  _reexec_with_fake_devices(count)


def main(argv):
  del argv
  from routing_jax.training import hardware  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  cli.validate_config(config)
  hw = hardware.parse(config.hardware) if config.hardware else None
  count = _DEVICES.value
  if hw and count and count != hw.num_devices:
    raise errors.UserInputError(
        f"--devices={count} contradicts hardware={hw.name!r} "
        f"({hw.num_devices} devices); drop one of them."
    )
  devices = _devices(
      count or (hw.num_devices if hw else 0), hw.kind if hw else None
  )
  cli.check_mesh(config, len(devices))
  report(config, devices, compile_step=_COMPILE.value)


def report(config, devices, compile_step: bool = True, out=print) -> None:
  """Writes the dry run's lines for `config` on `devices` through `out`."""
  import functools  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from routing_jax.training import flops  # pylint: disable=g-import-not-at-top
  from routing_jax.training import hardware  # pylint: disable=g-import-not-at-top
  from routing_jax.training import optim  # pylint: disable=g-import-not-at-top
  from routing_jax.training import sharding  # pylint: disable=g-import-not-at-top
  from routing_jax.training import train  # pylint: disable=g-import-not-at-top
  from routing_jax.nn.model import TransformerLM  # pylint: disable=g-import-not-at-top

  cfg = train.validate_config(config)
  hw = hardware.parse(config.hardware) if config.hardware else None
  model = TransformerLM(cfg)
  tx = optim.create_optimizer(config.train)
  mesh = sharding.create_mesh(config.mesh, devices)
  rules = sharding.logical_rules()
  init = functools.partial(
      train.init_state, model, tx, seq_len=config.data.seq_len
  )
  abstract, shardings = sharding.abstract_sharded_state(
      init, mesh, rules, jax.random.PRNGKey(0)
  )
  groups = param_groups(abstract.params)
  total = sum(groups.values())
  out(
      f"config: {cfg.num_layers} layers, d_model {cfg.d_model}, "
      f"{cfg.num_heads} heads ({cfg.num_routing_heads} routing in "
      f"{sum(cfg.routing_mask())} layers), seq_len {config.data.seq_len}, "
      f"activations {cfg.dtype}"
  )
  out(f"parameters: {total:,}")
  for k in sorted(groups):
    out(f"  {k:20s} {groups[k]:>15,}")
  kmeans = sum(int(x.size) for x in jax.tree.leaves(abstract.kmeans))
  out(f"  {'kmeans (EMA state)':20s} {kmeans:>15,}  (not trainable)")
  fl = flops.flops_per_token(
      cfg, config.data.seq_len, flops.matmul_params(cfg, abstract.params)
  )
  out(f"FLOPs per token: forward {fl['forward']:.3e}, train {fl['train']:.3e}")
  out(
      f"layers: scan_layers={cfg.scan_layers}, remat={cfg.remat_policy}"
      + (
          "  (remat without scan_layers may not save memory: XLA can "
          "schedule the recomputation early)"
          if cfg.remat_policy != "none" and not cfg.scan_layers
          else ""
      )
  )
  out(
      f"mesh: {dict(mesh.shape)} over {mesh.size} devices "
      f"({devices[0].device_kind})"
  )
  try:
    sharding.assert_sufficiently_sharded(abstract, train.MAX_REPLICATED_BYTES)
    out("sharding check: no large tensor whole on every device")
  except ValueError as e:
    out(f"sharding check: {e}")

  def per_device(tree):
    return sum(
        math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(tree)
    )

  out(f"train state per device: {per_device(abstract) / _GIB:.3f} GiB")
  used = None
  if compile_step:
    b, n = config.data.batch_size, config.data.seq_len
    data_sh = sharding.data_sharding(mesh)
    batch = {
        k: jax.ShapeDtypeStruct((b, n), dt, sharding=data_sh)
        for k, dt in (
            ("inputs", jnp.int32),
            ("targets", jnp.int32),
            ("weights", jnp.float32),
            ("mask", jnp.bool_),
        )
    }
    phases = [("compiled train step", False)]
    if train.warmup_steps(cfg):
      # Compiled on its own: the routed step must not pay for it.
      phases.append(("compiled warm-up step", True))
    for label, warming_up in phases:
      step, _ = train.jit_steps(
          config, model, tx, mesh, shardings, warming_up=warming_up
      )
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        compiled = step.lower(abstract, batch).compile()
      mem = compiled.memory_analysis()
      if mem is None:
        continue
      step_used = (
          mem.argument_size_in_bytes
          + mem.temp_size_in_bytes
          + mem.output_size_in_bytes
          - mem.alias_size_in_bytes
      )
      used = step_used if used is None else max(used, step_used)
      out(
          f"{label} per device: "
          f"arguments {mem.argument_size_in_bytes / _GIB:.3f} GiB, "
          f"temporaries {mem.temp_size_in_bytes / _GIB:.3f} GiB, "
          f"outputs {mem.output_size_in_bytes / _GIB:.3f} GiB, "
          f"donated {mem.alias_size_in_bytes / _GIB:.3f} GiB"
      )
  name = hw.name if hw else "none"
  if used is None:
    out(f"fits {name}: unknown (train step not compiled)")
  elif hw is None:
    out(
        f"fits {name}: unknown ({used / _GIB:.2f} GiB per device; set "
        "config.hardware)"
    )
  else:
    cap = hw.kind.memory_bytes
    out(
        f"fits {name}: {'yes' if used <= cap else 'no'} "
        f"({used / _GIB:.2f} GiB of {cap / _GIB:.1f} GiB per device)"
    )


if __name__ == "__main__":
  cli.run(main)
