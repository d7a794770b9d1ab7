# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Device mesh, logical axis rules and shardings for the train state.

Model code names array axes logically (batch, length, embed, emb, heads, kv,
mlp, vocab, clusters, relpos, layers, image axes, activation_*); this module
maps those names onto a three-axis mesh ("data", "fsdp", "tensor") and builds
the shardings that the train step is jitted with. A state leaf whose axis
name has no rule is an error, not a silent full copy on every device.

Typical use (what train.py does):

  mesh = sharding.create_mesh(config.mesh)          # e.g. data=-1, fsdp=2
  rules = sharding.logical_rules(config.get("axis_rules", ()))
  state, state_sh = sharding.create_sharded_state(init_fn, mesh, rules, rng)
  batch_sh = sharding.data_sharding(mesh)
  step = jax.jit(train_step, in_shardings=(state_sh, batch_sh),
                 out_shardings=(state_sh, sharding.replicated(mesh)))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, metrics = step(state, sharding.make_global_batch(batch, mesh))

The mesh always uses AxisType.Auto axes: jax 0.10 defaults to Explicit, which
breaks Flax Linen's logical constraints.
"""

from collections.abc import Callable, Mapping, Sequence
import math
import operator
from typing import Any

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from routing_jax import multihost

MESH_AXES = ("data", "fsdp", "tensor")
# The mesh axes a global batch is split over (data parallel + FSDP).
BATCH_AXES = ("data", "fsdp")


def batch_devices(mesh: Mesh) -> int:
  """How many ways a global batch is split: the size of BATCH_AXES."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


# Rules are matched in order and a mesh axis is used at most once per array,
# so "batch" must come before "embed": activations [batch, length, embed] get
# batch on (data, fsdp) and leave embed replicated.
DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("activation_batch", BATCH_AXES),
    ("cache_batch", BATCH_AXES),
    # Routing sorts tokens along the sequence, so length is never sharded.
    ("length", None),
    ("activation_length", None),
    ("cache_length", None),
    ("embed", "fsdp"),
    ("activation_embed", None),
    ("mlp", "tensor"),
    ("activation_mlp", "tensor"),
    ("heads", "tensor"),
    ("activation_heads", "tensor"),
    ("cache_heads", "tensor"),
    ("vocab", "tensor"),
    ("activation_vocab", "tensor"),
    # The factorised embedding size E: after "embed", so an [E, H] kernel
    # shards H and a [V, E] table or [E, V] logits kernel shards E.
    ("emb", "fsdp"),
    ("kv", None),
    ("activation_kv", None),
    ("cache_kv", None),
    ("clusters", None),
    ("window", None),
    ("layers", None),
    # Small tables, replicated on purpose: relative positions [2R+1, d]
    # and the image row/column tables [rows|cols, channels, embed] (whose
    # embed axis is sharded).
    ("relpos", None),
    ("image_rows", None),
    ("image_cols", None),
    ("channels", None),
)
# Mesh axes that split the model (rather than the batch): a large tensor
# replicated over all of them is a copy per device that sharding could save.
MODEL_AXES = ("fsdp", "tensor")


def _mesh_field(mesh_config: Any, name: str) -> int:
  """Reads mesh_config.name or mesh_config[name] as an int."""
  if isinstance(mesh_config, Mapping):
    if name not in mesh_config:
      raise ValueError(f"mesh.{name} is missing from the mesh config.")
    value = mesh_config[name]
  elif hasattr(mesh_config, name):
    value = getattr(mesh_config, name)
  else:
    raise ValueError(f"mesh.{name} is missing from the mesh config.")
  if isinstance(value, bool):
    raise ValueError(f"mesh.{name}={value!r} must be an int.")
  try:
    value = operator.index(value)
  except TypeError:
    raise ValueError(f"mesh.{name}={value!r} must be an int.") from None
  if value == 0 or value < -1:
    raise ValueError(
        f"mesh.{name}={value} must be >= 1, or -1 to use the remaining devices."
    )
  return value


def mesh_shape(mesh_config: Any, num_devices: int) -> tuple[int, int, int]:
  """Resolves (data, fsdp, tensor) sizes, filling a -1 entry.

  Args:
    mesh_config: object or mapping with int fields data, fsdp, tensor; at most
      one may be -1, meaning "all remaining devices".
    num_devices: the number of devices the mesh must cover exactly.

  Returns:
    The three mesh axis sizes; their product is num_devices.

  Raises:
    ValueError: naming the offending field when the sizes are invalid.
  """
  sizes = {name: _mesh_field(mesh_config, name) for name in MESH_AXES}
  fill = [name for name, size in sizes.items() if size == -1]
  if len(fill) > 1:
    raise ValueError(
        "At most one of mesh.data, mesh.fsdp, mesh.tensor may be -1; got "
        + ", ".join(f"mesh.{n}=-1" for n in fill)
        + "."
    )
  for name, size in sizes.items():
    if size != -1 and num_devices % size:
      raise ValueError(
          f"mesh.{name}={size} does not divide {num_devices} devices."
      )
  fixed = math.prod(s for s in sizes.values() if s != -1)
  desc = " * ".join(f"mesh.{n}={s}" for n, s in sizes.items() if s != -1)
  if fill:
    if num_devices % fixed:
      raise ValueError(
          f"{desc} = {fixed} does not divide {num_devices} devices, so"
          f" mesh.{fill[0]}=-1 cannot fill the rest."
      )
    sizes[fill[0]] = num_devices // fixed
  elif fixed != num_devices:
    raise ValueError(
        f"{desc} = {fixed} must equal the device count {num_devices}"
        " (or set one of them to -1 to fill the remaining devices)."
    )
  return tuple(sizes[n] for n in MESH_AXES)


def create_mesh(
    mesh_config: Any, devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """Builds the ("data", "fsdp", "tensor") mesh with AxisType.Auto axes.

  Device order comes from mesh_utils, which knows TPU/GPU topologies: the
  "tensor" axis (most communication) is innermost, "data" outermost. With
  several TPU slices the slices are laid along "data" (only gradient
  all-reduces cross the slow inter-slice network).

  Args:
    mesh_config: object or mapping with int fields data, fsdp, tensor (one may
      be -1 to fill the remaining devices).
    devices: devices to use; default all devices, jax.devices().

  Returns:
    A jax.sharding.Mesh of shape (data, fsdp, tensor).

  Raises:
    ValueError: if the sizes do not fit the devices (message names the field).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  num_slices = len({getattr(d, "slice_index", 0) for d in devices})
  if num_slices > 1:
    if shape[0] % num_slices:
      raise ValueError(
          f"mesh.data={shape[0]} must be a multiple of the number of slices"
          f" ({num_slices}): slices are laid out along the data axis."
      )
    ici_shape = (shape[0] // num_slices, shape[1], shape[2])
    device_array = mesh_utils.create_hybrid_device_mesh(
        ici_shape, (num_slices, 1, 1), devices, allow_split_physical_axes=True
    )
  else:
    try:
      device_array = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, NotImplementedError):
      # Shapes that do not follow the physical TPU torus are still valid,
      # just with slower collectives.
      device_array = mesh_utils.create_device_mesh(
          shape, devices, allow_split_physical_axes=True
      )
  return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def _as_tuple(axes: Any) -> tuple[Any, ...]:
  return tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)


def _check_mesh_axes(name: str, axes: Any) -> None:
  for axis in _as_tuple(axes):
    if axis is not None and axis not in MESH_AXES:
      raise ValueError(
          f"Axis rule for {name!r} uses mesh axis {axis!r}; mesh axes are"
          f" {MESH_AXES}."
      )


def logical_rules(
    overrides: Sequence[tuple[str, Any]] = (),
) -> tuple[tuple[str, Any], ...]:
  """Returns DEFAULT_RULES with some logical names remapped.

  Args:
    overrides: (logical_name, mesh_axes) pairs; mesh_axes is None, a mesh axis
      name or a tuple of them. A known name keeps its position in the rule
      order (order decides which dimension gets a contested mesh axis); a new
      name is appended.

  Returns:
    The rules, a tuple of (logical_name, mesh_axes) pairs, for
    nn.logical_axis_rules and state_shardings.
  """
  rules = dict(DEFAULT_RULES)
  order = [name for name, _ in DEFAULT_RULES]
  for i, pair in enumerate(overrides):
    if len(pair) != 2 or not isinstance(pair[0], str):
      raise ValueError(
          f"overrides[{i}]={pair!r} must be a (logical_name, mesh_axes) pair."
      )
    name, axes = pair
    axes = tuple(axes) if isinstance(axes, list) else axes
    _check_mesh_axes(name, axes)
    if name not in rules:
      order.append(name)
    rules[name] = axes
  return tuple((name, rules[name]) for name in order)


def _fit_to_shape(
    spec: P,
    shape: tuple[int, ...],
    mesh: Mesh,
    notes: list[str],
    where: str,
) -> P:
  """Drops mesh axes from dimensions they do not divide evenly."""
  entries = list(spec) + [None] * (len(shape) - len(spec))
  fitted = []
  for dim, entry in zip(shape, entries):
    wanted = [a for a in _as_tuple(entry) if a is not None]
    axes = list(wanted)
    # Keep the longest prefix that divides (e.g. batch 4 on data=2, fsdp=4
    # keeps "data").
    while axes and dim % math.prod(mesh.shape[a] for a in axes):
      axes.pop()
    if axes != wanted and dim > 1:  # Size 1: a placeholder, nothing lost.
      notes.append(f"{where} dim {dim} not divisible by {entry}")
    fitted.append(tuple(axes) if len(axes) > 1 else (axes[0] if axes else None))
  return P(*fitted)


def _shards(spec: P, mesh: Mesh) -> int:
  """How many pieces a spec cuts an array into."""
  return math.prod(
      mesh.shape[a] for e in spec for a in _as_tuple(e) if a is not None
  )


def _check_names(names: tuple[str, ...], rules: Any, where: str) -> None:
  known = {name for name, _ in rules}
  for name in names:
    if name is not None and name not in known:
      raise ValueError(
          f"sharding: {where} has logical axis {name!r} with no rule; add"
          f" ({name!r}, mesh_axes) to sharding.DEFAULT_RULES or the"
          " config's axis rules."
      )


def _leaf_spec(
    leaf: Any, mesh: Mesh, rules: Any, where: str, notes: list[str]
) -> P:
  """The mesh PartitionSpec of one (possibly boxed) abstract leaf."""
  if not isinstance(leaf, nn.meta.Partitioned):
    return P()
  shape = tuple(leaf.value.shape)
  names = tuple(leaf.names)
  logical = isinstance(leaf, nn.LogicallyPartitioned)
  leaf_rules = (leaf.rules or rules) if logical else None
  if logical:
    _check_names(names, leaf_rules, where)
  to_spec = lambda n: (
      nn.logical_to_mesh_axes(n, leaf_rules) if logical else P(*n)
  )  # nn.Partitioned: already mesh axes.
  if len(names) == len(shape):
    return _fit_to_shape(to_spec(names), shape, mesh, notes, where)
  if len(names) == len(shape) + 1:
    # A factored optimizer moment (Adafactor's row/column statistics) keeps
    # its parameter's names with one dimension reduced away. Which one is
    # not recorded; any choice is a valid layout, so take the one that
    # shards the moment most.
    ignore: list[str] = []
    options = [
        _fit_to_shape(
            to_spec(names[:i] + names[i + 1 :]), shape, mesh, ignore, where
        )
        for i in range(len(names))
    ]
    return max(options, key=lambda spec: _shards(spec, mesh))
  notes.append(f"{where} shape {shape} vs axis names {names}")
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Any) -> Any:
  """NamedShardings for every leaf of an abstract (boxed) state.

  Args:
    abstract_state: pytree from jax.eval_shape; leaves are ShapeDtypeStructs,
      possibly wrapped in nn.LogicallyPartitioned / nn.Partitioned boxes.
    mesh: the device mesh.
    rules: logical axis rules, e.g. logical_rules().

  Returns:
    A pytree shaped like the *unboxed* state whose leaves are NamedShardings.
    Unannotated leaves are replicated; factored moments (one name more than
    dimensions) shard like their parameter minus the reduced axis; mesh
    axes that do not divide a dimension are dropped for that dimension. One
    log line summarises the exceptions.

  Raises:
    ValueError: a logical axis name without a rule (naming leaf and axis).
  """
  is_box = lambda x: isinstance(x, nn.meta.Partitioned)
  notes: list[str] = []

  def one(path, leaf):
    where = jax.tree_util.keystr(path)
    return NamedSharding(mesh, _leaf_spec(leaf, mesh, rules, where, notes))

  out = jax.tree_util.tree_map_with_path(one, abstract_state, is_leaf=is_box)
  if notes:
    logging.info(
        "sharding: %d leaves kept a dimension whole (first: %s).",
        len(notes),
        notes[0],
    )
  return out


def abstract_sharded_state(
    init_fn: Callable[..., Any], mesh: Mesh, rules: Any, *args: Any
) -> tuple[Any, Any]:
  """(ShapeDtypeStructs with shardings, shardings) of init_fn(*args).

  Nothing is allocated: for checks and ahead-of-time compilation.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init_fn, *args)
    shardings = state_shardings(abstract, mesh, rules)
  shaped = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      unbox(abstract),
      shardings,
  )
  return shaped, shardings


def unbox(tree: Any) -> Any:
  """Removes Partitioned boxes without adding sharding constraints."""
  return jax.tree.map(
      lambda x: x.unbox(apply_constraint=False)
      if isinstance(x, nn.meta.AxisMetadata)
      else x,
      tree,
      is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata),
  )


def replicated(mesh: Mesh) -> NamedSharding:
  """A sharding that keeps a full copy on every device (scalars, metrics)."""
  return NamedSharding(mesh, P())


def data_sharding(mesh: Mesh, rank: int = 2) -> NamedSharding:
  """Sharding for a [batch, length, ...] input: batch over (data, fsdp)."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (rank - 1))))


def create_sharded_state(
    init_fn: Callable[..., Any],
    mesh: Mesh,
    rules: Any,
    *args: Any,
    max_replicated_bytes: int | None = None,
) -> tuple[Any, Any]:
  """Initialises a state directly in its sharded layout.

  The state is never materialised on one device: shapes come from
  jax.eval_shape, and the jitted init writes each shard where it belongs.

  Args:
    init_fn: function of *args returning the state, possibly with
      nn.LogicallyPartitioned boxes (e.g. from Module.init). Build optimizer
      states from the *boxed* params so they inherit the annotations.
    mesh: the device mesh.
    rules: logical axis rules.
    *args: arguments of init_fn (e.g. a PRNG key). Arrays are passed as they
      are; give them replicated shardings if they are large.
    max_replicated_bytes: if set, `assert_sufficiently_sharded` with this
      bound runs before anything is allocated.

  Returns:
    (state, shardings): the unboxed state, and a matching pytree of
    NamedShardings to use as in/out shardings of the train step.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init_fn, *args)
    shardings = state_shardings(abstract, mesh, rules)
    if max_replicated_bytes is not None:
      assert_sufficiently_sharded(
          jax.tree.map(
              lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
              unbox(abstract),
              shardings,
          ),
          min_bytes=max_replicated_bytes,
      )
    state = jax.jit(lambda *a: unbox(init_fn(*a)), out_shardings=shardings)(
        *args
    )
  return state, shardings


def make_global_batch(
    local_batch: Mapping[str, np.ndarray],
    mesh: Mesh,
    sharding: jax.sharding.Sharding | Mapping[str, Any] | None = None,
) -> dict[str, jax.Array]:
  """Assembles per-process numpy arrays into global jax.Arrays.

  Each process passes the rows its own devices hold, in ascending order
  (`multihost.process_rows`): a 1/process_count slice when every process
  holds distinct rows, the same rows on processes whose devices share a
  "tensor" group.

  Args:
    local_batch: dict of arrays [local_batch, ...] for this process.
    mesh: the device mesh.
    sharding: a Sharding for every entry, a dict of them per key, or None for
      data_sharding(mesh) of each array's rank.

  Returns:
    Dict of global jax.Arrays with the same keys.
  """
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    if isinstance(sharding, Mapping):
      sh = sharding[key]
    elif sharding is None:
      sh = data_sharding(mesh, max(value.ndim, 1))
    else:
      sh = sharding
    if not value.ndim:
      out[key] = jax.make_array_from_process_local_data(sh, value)
      continue
    blocks, mine = multihost.batch_blocks(sh, value.ndim)
    if value.shape[0] % len(mine):
      raise ValueError(
          f"local_batch[{key!r}] has {value.shape[0]} rows per process, not"
          f" divisible by the {len(mine)} of {blocks} batch shards"
          " (mesh.data * mesh.fsdp) this process holds."
      )
    global_shape = (value.shape[0] // len(mine) * blocks,) + value.shape[1:]
    out[key] = jax.make_array_from_process_local_data(sh, value, global_shape)
  return out


def assert_sufficiently_sharded(tree: Any, min_bytes: int = 1 << 20) -> None:
  """Raises if an array of at least min_bytes is whole on every device.

  Whole means replicated over every model axis (fsdp, tensor) of size > 1;
  on a mesh without such axes (pure data parallelism) copies are the plan,
  and nothing is checked. Catches a missing logical annotation or rule
  before it costs a full copy of a big tensor on every device. An array
  none of whose dimensions any model axis divides is skipped: no rule
  could split it (padding could).

  Args:
    tree: pytree of jax.Arrays or ShapeDtypeStructs with shardings.
    min_bytes: arrays smaller than this may be replicated.

  Raises:
    ValueError: one line naming the offending arrays.
  """
  offenders = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    sh = getattr(leaf, "sharding", None)
    if not isinstance(sh, NamedSharding):
      continue
    model_axes = [a for a in MODEL_AXES if sh.mesh.shape.get(a, 1) > 1]
    if not model_axes:
      continue
    used = {a for e in sh.spec for a in _as_tuple(e) if a is not None}
    nbytes = math.prod(leaf.shape) * getattr(leaf.dtype, "itemsize", 0)
    splittable = any(
        dim % sh.mesh.shape[a] == 0 for dim in leaf.shape for a in model_axes
    )
    if nbytes >= min_bytes and splittable and not used & set(model_axes):
      offenders.append(
          f"{jax.tree_util.keystr(path)} {tuple(leaf.shape)}"
          f" ({nbytes / 2**20:.1f} MiB)"
      )
  if offenders:
    raise ValueError(
        f"{len(offenders)} arrays of >= {min_bytes} bytes are whole on every"
        f" device of the {dict(sh.mesh.shape)} mesh (add logical axis names"
        " or rules that shard them over fsdp/tensor): "
        + "; ".join(offenders)
    )
