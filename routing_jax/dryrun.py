# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Dry run: sizes and per-device memory of a config, allocating nothing.

  python -m routing_jax.dryrun --config=experiments/pg19.py
  python -m routing_jax.dryrun --config=experiments/shakespeare.py:tiny \
      --devices=4

Prints the parameter count by group, training FLOPs per token, and, for the
config's mesh, the per-device bytes of the sharded train state and of the
compiled train (and warm-up), eval and decode steps (ahead-of-time
lowering on abstract shapes). The last line is for scripts:

  fits <hardware>: yes|no (X GiB of Y GiB per device)

for `config.hardware` (routing_jax/training/hardware.py) on the config's
mesh, where X is the largest step's arguments + temporaries + outputs -
donated (aliased) bytes + code, and Y the usable memory (nominal less a
runtime reserve on TPU; JAX's 75% preallocation on GPU).

Which compiler measures it, printed on the `compiler:` line:
- TPU hardware with libtpu installed (`pip install -e ".[tpu]"`): the TPU
  compiler itself, for a compile-only slice of that hardware's topology
  (libtpu builds it without a TPU), so the figures are the TPU's own.
- Otherwise the dry run re-executes itself on that many fake CPU devices
  and the figures are XLA:CPU's estimate: it fuses, schedules and pads
  differently (no (8, 128) tiling; measured against the TPU compiler in
  docs/sharding.md). Compiling for a GPU needs a GPU, so GPU fit is always
  this estimate unless the dry run runs on the GPUs themselves.
The layers must be scanned (model.scan_layers) for remat's saving to show:
with a python loop of layers, XLA:CPU schedules the recomputation early and
keeps every layer's activations (measured).
"""

import math
import os
import re
import sys
from typing import Optional

from absl import flags
from ml_collections import config_flags

from routing_jax import cli
from routing_jax import cli_checks
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


def libtpu_version() -> Optional[str]:
  """The installed libtpu's version, or None without libtpu."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top

  if importlib.util.find_spec("libtpu") is None:
    return None
  try:
    return importlib.metadata.version("libtpu")
  except importlib.metadata.PackageNotFoundError:
    return "of unknown version"


def _tpu_chips_attached() -> bool:
  try:
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top

    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  except (ImportError, AttributeError, OSError):  # private API: moved?
    return False


def tpu_devices(hw) -> list:
  """Compile-only devices of `hw`'s TPU slice, built by libtpu (no TPU
  needed): jit(...).lower(...).compile() for them runs the TPU compiler."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  from routing_jax.training import hardware  # pylint: disable=g-import-not-at-top

  topology = hardware.tpu_topology(hw)
  if not _tpu_chips_attached():
    # Everything but the compile (PRNG keys, abstract evaluation) runs on
    # the CPU: jax would otherwise start the TPU backend, fail and log.
    if os.environ.get("JAX_PLATFORMS") != "cpu":  # (tests: set, started)
      jax.config.update("jax_platforms", "cpu")
    # libtpu's start-up looks for this host's TPU and logs errors about
    # its accelerator type and worker names when there is none; the slice
    # is named explicitly below, so these values only quiet it.
    os.environ.setdefault(
        "TPU_ACCELERATOR_TYPE", hardware.tpu_accelerator_type(hw)
    )
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # Without TPU chips there is nothing to share: libtpu's lockfile
    # (/tmp/libtpu_lockfile) would only stop two dry runs at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  # Compile-only executables cannot be read back from the persistent
  # compilation cache (no client to load them: "PjRtCompiler must be
  # constructed with a Client"), so a second dry run with
  # JAX_COMPILATION_CACHE_DIR set failed on its own cache entries; nothing
  # runs them, so they are not cached.
  jax.config.update("jax_enable_compilation_cache", False)
  kw = {"chip_config_name": "megacore"} if hw.kind.torus_dims == 3 else {}
  return list(
      topologies.get_topology_desc(
          platform="tpu", topology_name=topology, **kw
      ).devices
  )


def main(argv):
  del argv
  from routing_jax.training import hardware  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  cli_checks.validate_config(config)
  hw = hardware.parse(config.hardware) if config.hardware else None
  count = _DEVICES.value
  if hw and count and count != hw.num_devices:
    raise errors.UserInputError(
        f"--devices={count} contradicts hardware={hw.name!r} "
        f"({hw.num_devices} devices); drop one of them."
    )
  devices = None
  if (
      hw
      and hw.kind.is_tpu
      and libtpu_version()
      and not os.environ.get(_FAKED_ENV)
  ):
    try:
      devices = tpu_devices(hw)
    except RuntimeError as e:  # e.g. a libtpu that does not suit this jax
      print(f"libtpu could not describe {hw.name}: {e}".splitlines()[0])
  if devices is None:
    devices = _devices(
        count or (hw.num_devices if hw else 0), hw.kind if hw else None
    )
  cli_checks.check_mesh(config, len(devices))
  report(config, devices, compile_step=_COMPILE.value)


def _memory_line(label: str, mem) -> tuple[str, int]:
  """(printed line, bytes the step holds at its peak) of memory_analysis()."""
  used = (
      mem.argument_size_in_bytes
      + mem.temp_size_in_bytes
      + mem.output_size_in_bytes
      - mem.alias_size_in_bytes
      + mem.generated_code_size_in_bytes
  )
  return (
      f"{label} per device: "
      f"arguments {mem.argument_size_in_bytes / _GIB:.3f} GiB, "
      f"temporaries {mem.temp_size_in_bytes / _GIB:.3f} GiB, "
      f"outputs {mem.output_size_in_bytes / _GIB:.3f} GiB, "
      f"donated {mem.alias_size_in_bytes / _GIB:.3f} GiB"
  ), used


def _flops(compiled) -> Optional[float]:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  return cost.get("flops") if cost else None


def compiler_line(devices, hw) -> str:
  """Which compiler the figures come from, and whether they are estimates."""
  d = devices[0]
  if d.platform == "tpu":
    version = libtpu_version() or "built in"
    return (
        f"compiler: {d.device_kind} ({len(devices)} devices, libtpu {version})"
    )
  if d.platform == "cpu" and hw is not None:
    how = (
        'install libtpu (pip install -e ".[tpu]") for the TPU compiler\'s'
        if hw.kind.is_tpu
        else "compiling for a GPU needs the GPUs (benchmarks/gpu_all.sh)"
    )
    return (
        f"compiler: XLA:CPU ({len(devices)} fake devices): the memory figures"
        f" are a CPU estimate for {hw.kind.name}, not its compiler's; {how}"
    )
  return f"compiler: {d.device_kind} ({len(devices)} devices, {d.platform})"


def report(config, devices, compile_step: bool = True, out=print) -> None:
  """Writes the dry run's lines for `config` on `devices` through `out`."""
  import functools  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from routing_jax.training import batch_scaling  # pylint: disable=g-import-not-at-top
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
  scaled = batch_scaling.resolve(config, sharding.batch_devices(mesh))
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
  if scaled:
    out(scaled)
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
  out(compiler_line(devices, hw))
  steps = {}  # label -> (compiled, bytes at peak); in the order compiled
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
      step, ev = train.jit_steps(
          config, model, tx, mesh, shardings, warming_up=warming_up
      )
      todo = [(label, step)]
      if not warming_up:  # the routed eval step; evaluation follows warm-up
        todo.append(("compiled eval step", ev))
      for name, fn in todo:
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
          steps[name] = _compile(lambda: fn.lower(abstract, batch))
    steps["compiled decode step"] = _compile(
        lambda: _lower_decode(model, abstract, devices)
    )
  used, refused = None, None
  for label, compiled in steps.items():
    if isinstance(compiled, str):  # the TPU compiler's out-of-memory error
      refused = refused or compiled
      out(f"{label} per device: does not fit: {compiled}")
      continue
    mem = compiled.memory_analysis()
    if mem is None:
      continue
    line, step_used = _memory_line(label, mem)
    used = step_used if used is None else max(used, step_used)
    out(line)
  if not isinstance(steps.get("compiled train step", ""), str):
    xla = _flops(steps["compiled train step"])
    model_flops = flops.train_flops_per_step(
        cfg, abstract.params, config.data.batch_size, config.data.seq_len
    )
    out(
        f"train step FLOPs per device: compiler {xla or 0:.3e}, analytic"
        f" {model_flops / mesh.size:.3e} (the compiler's cost analysis"
        " counts a loop body once, so scanned layers count as one, and"
        " includes remat's recomputation; flops.py counts masked entries of"
        " attention blocks but not the Shaw relative-position terms)"
    )
  name = hw.name if hw else "none"
  if refused:
    out(f"fits {name}: no (the compiler ran out of memory: {refused})")
  elif used is None:
    out(f"fits {name}: unknown (train step not compiled)")
  elif hw is None:
    out(
        f"fits {name}: unknown ({used / _GIB:.2f} GiB per device; set "
        "config.hardware)"
    )
  else:
    cap, why = hardware.usable_bytes(hw.kind)
    out(f"usable per device: {cap / _GIB:.2f} GiB ({why})")
    out(
        f"fits {name}: {'yes' if used <= cap else 'no'} "
        f"({used / _GIB:.2f} GiB of {cap / _GIB:.1f} GiB per device)"
    )


def _compile(lower):
  """lower().compile(), or the compiler's message when the program does
  not fit (the TPU compiler refuses one that exceeds HBM; XLA:CPU never)."""
  import jax  # pylint: disable=g-import-not-at-top

  try:
    return lower().compile()
  except jax.errors.JaxRuntimeError as e:
    text = str(e)
    if not text.startswith("RESOURCE_EXHAUSTED"):
      raise
    return text.splitlines()[0].removeprefix("RESOURCE_EXHAUSTED: ")


def _lower_decode(model, abstract, devices):
  """One cached decoding step for one sequence, compiled for one device
  (`python -m routing_jax.sample` decodes on one device, with the float32
  parameters and k-means state whole and the cache for max_len tokens)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from routing_jax.nn import generation  # pylint: disable=g-import-not-at-top

  one = jax.sharding.NamedSharding(
      jax.sharding.Mesh(np.array(devices[:1]), ("one",)),
      jax.sharding.PartitionSpec(),
  )
  whole = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one)
  variables = jax.tree.map(
      whole, {"params": abstract.params, "kmeans": abstract.kmeans}
  )
  cache = jax.eval_shape(
      lambda: model.init(
          {"params": jax.random.key(0)},
          jnp.zeros((1, 1), jnp.int32),
          decode=True,
          positions=jnp.zeros((1,), jnp.int32),
      )["cache"]
  )
  step = jax.jit(generation.decode_step(model), donate_argnums=1)
  return step.lower(
      variables,
      jax.tree.map(whole, cache),
      whole(jax.ShapeDtypeStruct((1,), jnp.int32)),
      whole(jax.ShapeDtypeStruct((), jnp.int32)),
  )


def run():
  """The `routing-jax-dryrun` console script."""
  cli.run(main)


if __name__ == "__main__":
  run()
