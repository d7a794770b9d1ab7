# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for experiments/*.py: they load, use only known fields, obey the
rules a model needs, and reproduce the reference hyperparameter tables.

The expected paper values below were written from docs/paper.md §5.4, not
from the experiment files. No jax is needed here.
"""

import ast
import importlib
import math
import pathlib
import re
import shlex
import sys

from absl import flags
from ml_collections import config_dict
from ml_collections import config_flags
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from experiments import common  # pylint: disable=g-import-not-at-top
from routing_jax.nn import modes  # pylint: disable=g-import-not-at-top

# Every experiment file and every arg it declares (default first).
ARGS = {
    "cifar10": [
        None,
        "variant=routing_all",
        "variant=routing_last2",
        "variant=local",
        "variant=full",
        "window=1024",
        "window=256",
        "variant=local,window=1024",
        "clusters=12",
        "routing=topk",
        "small",
        "small,variant=routing_last2",
        "small,variant=local",
        "small,variant=full",
        "small,window=64",
        "small,routing=topk",
    ],
    "imagenet64": [
        None,
        "variant=routing",
        "variant=local",
        "routing=topk",
        "small",
        "small,variant=local",
    ],
    "wikitext103": [
        None,
        "variant=routing",
        "variant=local",
        "variant=1k",
        "routing=topk",
        "small",
        "small,variant=local",
        "small,variant=1k",
    ],
    "enwik8": [
        None,
        "variant=8k",
        "variant=12k",
        "variant=local8k",
        "variant=local12k",
        "routing=topk",
        "small",
        "small,variant=12k",
        "small,variant=local8k",
        "small,variant=local12k",
    ],
    "pg19": [
        None,
        "variant=routing",
        "variant=local",
        "routing=topk",
        "small",
        "small,variant=local",
    ],
    "fashion_mnist": [
        None,
        "variant=routing",
        "variant=local",
        "variant=full",
        "routing=topk",
        "small",
        "small,variant=local",
        "small,variant=full",
    ],
    "shakespeare": [
        None,
        "variant=routing",
        "variant=local",
        "routing=topk",
        "small",
        "tiny",
        "tiny,variant=local",
        "small,variant=local",
        "tiny,routing=topk",
    ],
}
CASES = [(name, arg) for name, args in ARGS.items() for arg in args]
CASE_IDS = [f"{name}:{arg or ''}" for name, arg in CASES]

DATA_NAMES = {
    "shakespeare",
    "synthetic",
    "text_files",
    "enwik8",
    "wikitext103",
    "pg19",
    "cifar10",
    "imagenet_resized/64x64",
    "fashion_mnist",
}
OFFLINE_DATA = {"shakespeare", "synthetic", "fashion_mnist"}


def load(name, arg):
  return importlib.import_module(f"experiments.{name}").get_config(arg)


def routing_layer_set(spec, num_layers):
  """Layers that route for a `routing_layers` spec; raises on a bad spec."""
  if spec == "all":
    return set(range(num_layers))
  if spec == "none":
    return set()
  kind, sep, count = spec.partition(":")
  if sep:
    n = int(count)
    if kind == "last" and 1 <= n <= num_layers:
      return set(range(num_layers - n, num_layers))
    if kind == "skip_first" and 0 <= n < num_layers:
      return set(range(n, num_layers))
    raise ValueError(f"bad routing_layers {spec!r} for {num_layers} layers")
  layers = [int(s) for s in spec.split(",")]
  if sorted(set(layers)) != layers or not 0 <= layers[0] <= layers[-1] < (
      num_layers
  ):
    raise ValueError(f"bad routing_layers {spec!r} for {num_layers} layers")
  return set(layers)


def test_routing_layer_set_parser():
  assert routing_layer_set("all", 3) == {0, 1, 2}
  assert routing_layer_set("none", 3) == set()
  assert routing_layer_set("last:2", 12) == {10, 11}
  assert routing_layer_set("skip_first:21", 22) == {21}
  assert routing_layer_set("0,3,5", 6) == {0, 3, 5}
  for bad in ("last:0", "last:4", "skip_first:3", "0,9", "3,1", "some"):
    with pytest.raises(ValueError):
      routing_layer_set(bad, 3)


def test_every_experiment_file_is_covered():
  files = {p.stem for p in (ROOT / "experiments").glob("*.py")}
  assert files - {"common", "__init__"} == set(ARGS)


@pytest.mark.parametrize("name", sorted(ARGS))
def test_experiment_files_import_nothing_heavy(name):
  tree = ast.parse((ROOT / "experiments" / f"{name}.py").read_text())
  imported = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      imported.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      imported.update(f"{node.module}.{a.name}" for a in node.names)
  assert imported <= {"ml_collections", "experiments.common"}


def _fields(cfg, prefix=""):
  """{dotted name: value} of every leaf field."""
  out = {}
  for key, value in cfg.items():
    if isinstance(value, config_dict.ConfigDict):
      out.update(_fields(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


BASE_FIELDS = _fields(common.base_config())


@pytest.mark.parametrize("name,arg", CASES, ids=CASE_IDS)
def test_fields_are_base_fields_with_base_types(name, arg):
  fields = _fields(load(name, arg))
  assert set(fields) == set(BASE_FIELDS)
  for key, value in fields.items():
    base_type = type(BASE_FIELDS[key])
    if base_type is float:
      assert isinstance(value, (int, float)), key
    else:
      # pylint: disable-next=unidiomatic-typecheck
      assert type(value) is base_type, key


@pytest.mark.parametrize("name,arg", CASES, ids=CASE_IDS)
def test_config_obeys_model_rules(name, arg):
  c = load(name, arg)
  m, d, t = c.model, c.data, c.train
  routing = routing_layer_set(m.routing_layers, m.num_layers)
  assert 0 <= m.num_routing_heads <= m.num_heads
  assert bool(routing) == (m.num_routing_heads > 0)
  assert m.d_model % m.num_heads == 0
  assert m.num_layers >= 1 and m.d_ff >= 1
  assert 0 <= m.emb_dim <= m.d_model
  # Local attention: whole query blocks, a flange no longer than the text.
  assert m.query_block >= 1 and d.seq_len % m.query_block == 0
  assert 0 <= m.memory_flange <= d.seq_len
  # Routing: the window fits in the sequence.
  assert 1 <= m.routing.window <= d.seq_len
  assert m.routing.num_clusters >= 1
  assert m.max_len == d.seq_len
  assert m.ffn in modes.FFNS and m.norm in modes.NORMS
  assert m.routing.mode in modes.ROUTINGS
  assert m.position in modes.POSITIONS
  if m.position == "relative":
    # The relative table covers the whole local span (q + m keys).
    assert m.max_relative_position >= m.query_block + m.memory_flange
  if m.position == "learned2d":
    assert math.prod(m.image_shape) == d.seq_len and m.vocab_size == 256
  else:
    assert tuple(m.image_shape) == (0, 0, 0)
  for p in (
      m.residual_dropout,
      m.attention_dropout,
      m.relu_dropout,
      m.embedding_dropout,
      m.target_dropout,
  ):
    assert 0.0 <= p < 1.0
  assert d.name in DATA_NAMES and d.batch_size >= 1
  assert t.optimizer in ("adafactor", "adamw")
  assert t.schedule in ("rsqrt", "cosine", "constant")
  assert t.steps >= 1 and 0 <= t.warmup_steps
  assert min(t.log_every, t.eval_every, t.checkpoint_every) >= 1
  mesh = (c.mesh.data, c.mesh.fsdp, c.mesh.tensor)
  assert mesh.count(-1) <= 1 and all(s == -1 or s >= 1 for s in mesh)
  assert m.num_heads % c.mesh.tensor == 0 and d.batch_size % c.mesh.fsdp == 0
  assert m.vocab_size % c.mesh.tensor == 0 and m.d_ff % c.mesh.tensor == 0
  if d.name == "pg19":
    assert d.tokenizer_vocab_size == m.vocab_size


@pytest.mark.parametrize(
    "name,arg",
    [(n, a) for n, a in CASES if a and ("small" in a or "tiny" in a)],
    ids=lambda x: str(x),
)
def test_small_variants_fit_a_cpu(name, arg):
  c = load(name, arg)
  assert c.model.num_layers == 2
  assert c.data.name in OFFLINE_DATA
  assert c.data.batch_size == 8  # 4-8, and divisible by 8 test devices
  assert (c.mesh.data, c.mesh.fsdp, c.mesh.tensor) == (-1, 1, 1)
  if "tiny" in arg:
    assert c.model.d_model <= 64 and c.train.steps <= 5
    assert c.data.seq_len <= 128
  else:
    assert 64 <= c.model.d_model <= 128 and 50 <= c.train.steps <= 200
    # Fashion-MNIST keeps its real 784 pixels (documented in its file).
    assert c.data.seq_len <= (784 if name == "fashion_mnist" else 512)
  assert c.model.remat_policy == "none"


@pytest.mark.parametrize("name", sorted(ARGS))
def test_unknown_or_bad_args_raise_value_error(name):
  with pytest.raises(ValueError, match="bogus"):
    load(name, "bogus=1")
  with pytest.raises(ValueError, match="variant"):
    load(name, "variant=nonsense")
  with pytest.raises(ValueError, match="routing"):
    load(name, "routing=dense")
  with pytest.raises(ValueError, match="small"):
    load(name, "small=maybe")


def test_parse_arg_rejects_unknown_key_and_converts_types():
  with pytest.raises(ValueError, match="'colour'"):
    common.parse_arg("colour=red", variant="a")
  a = common.parse_arg(
      "small,window=64,lr=0.5,name=x", small=False, window=0, lr=1.0, name=""
  )
  assert (a.small, a.window, a.lr, a.name) == (True, 64, 0.5, "x")
  with pytest.raises(ValueError, match="window"):
    common.parse_arg("window=big", window=0)


@pytest.mark.parametrize(
    "arg",
    [
        "window=100",
        "window=80",
        "window=4096",
        "window=-2",
        "variant=full,window=512",
        "clusters=-1",
        "small,window=40",
    ],
)
def test_cifar10_rejects_windows_that_do_not_fit(arg):
  with pytest.raises(ValueError, match="window|clusters"):
    load("cifar10", arg)


@pytest.mark.parametrize("arg", ["small,tiny", "small,long", "tiny,long"])
def test_shakespeare_sizes_exclude_each_other(arg):
  with pytest.raises(ValueError, match="small, tiny and long exclude"):
    load("shakespeare", arg)


@pytest.mark.parametrize("variant", ["full", "hybrid"])
def test_shakespeare_full_and_hybrid_need_long(variant):
  with pytest.raises(ValueError, match=f"variant={variant} needs long"):
    load("shakespeare", f"variant={variant}")


def test_long_shakespeare_variants_have_equal_parameters():
  """The long-context comparison is fair in size: every variant, the hybrid
  (routing heads made dense) included, has the same parameters."""
  import jax  # pylint: disable=g-import-not-at-top

  from routing_jax.nn import model as model_lib  # pylint: disable=g-import-not-at-top

  counts = {}
  for variant in ("routing", "local", "full", "hybrid"):
    c = load("shakespeare", f"long,variant={variant}")
    c.data.seq_len = c.model.max_len = 256  # the count does not depend on it
    c.model.query_block = min(c.model.query_block, 256)
    c.model.memory_flange = min(c.model.memory_flange, 256)
    cfg = model_lib.ModelConfig.from_config(c.model)
    shapes = jax.eval_shape(
        lambda: model_lib.init_variables(
            model_lib.TransformerLM(cfg), jax.random.PRNGKey(0)
        )
    )
    counts[variant] = sum(x.size for x in jax.tree.leaves(shapes["params"]))
    if variant == "hybrid":
      assert cfg.dense_routing_heads and cfg.num_routing_heads == 2
  assert len(set(counts.values())) == 1, counts


# Reference tables (docs/paper.md §5.4), one row per (file, arg). Keys are
# dotted config fields; "layers" is the set of routing layers; "heads" is
# (local, routing) heads in a routing layer; "qm" is (query_block,
# memory_flange); "drop" is attention/relu/embedding/target dropout.
_TEXT = {
    "model.ffn": "geglu",
    "model.position": "relative",
    "model.residual_dropout": 0.1,
}
_IMAGE = {
    "model.ffn": "relu",
    "model.position": "learned2d",
    "model.residual_dropout": 0.3,
    "model.vocab_size": 256,
    "drop": (0.0, 0.0, 0.0, 0.0),
    "train.weight_decay": 0.0,
}
_ENWIK8 = dict(
    _TEXT,
    **{
        "model.d_model": 1024,
        "model.emb_dim": 0,
        "model.d_ff": 3072,
        "model.vocab_size": 256,
        "train.weight_decay": 0.0,
    },
)
_WT103 = dict(
    _TEXT,
    **{
        "model.d_model": 1024,
        "model.emb_dim": 256,
        "model.d_ff": 3072,
        "model.vocab_size": 267735,
        "train.weight_decay": 2e-5,
        "qm": (256, 256),
        "model.max_relative_position": 513,
    },
)
_PG19 = dict(
    _TEXT,
    **{
        "model.d_model": 1032,
        "model.emb_dim": 0,
        "model.d_ff": 4096,
        "model.vocab_size": 32768,
        "train.weight_decay": 0.0,
        "qm": (256, 256),
        "data.seq_len": 8192,
        "model.max_relative_position": 513,
        "drop": (0.0, 0.0, 0.0, 0.0),
    },
)
_CIFAR = dict(
    _IMAGE,
    **{
        "model.num_layers": 12,
        "model.d_model": 1024,
        "model.d_ff": 2048,
        "data.seq_len": 3072,
        "model.image_shape": (32, 32, 3),
    },
)
_IMAGENET = dict(
    _IMAGE,
    **{
        "model.num_layers": 24,
        "model.d_model": 1024,
        "model.d_ff": 2048,
        "data.seq_len": 12288,
        "qm": (256, 256),
        "model.image_shape": (64, 64, 3),
    },
)
_MNIST = dict(
    _IMAGE,
    **{
        "model.num_layers": 12,
        "model.d_model": 512,
        "model.d_ff": 2048,
        "data.seq_len": 784,
        "model.image_shape": (28, 28, 1),
    },
)
ALL12, ALL14, ALL20 = set(range(12)), set(range(14)), set(range(20))

PAPER = [
    # enwik8_local_cluster8k
    (
        "enwik8",
        None,
        dict(
            _ENWIK8,
            **{
                "model.num_layers": 12,
                "heads": (4, 4),
                "layers": ALL12,
                "model.routing.num_clusters": 16,
                "model.routing.window": 512,
                "qm": (256, 256),
                "data.seq_len": 8192,
                "model.max_relative_position": 513,
                "drop": (0.0, 0.0, 0.0, 0.0),
            },
        ),
    ),
    # enwik8_local_cluster12k
    (
        "enwik8",
        "variant=12k",
        dict(
            _ENWIK8,
            **{
                "model.num_layers": 12,
                "heads": (4, 4),
                "layers": ALL12,
                "model.routing.num_clusters": 48,
                "model.routing.window": 256,
                "qm": (128, 128),
                "data.seq_len": 12288,
                "model.max_relative_position": 257,
                "drop": (0.0, 0.0, 0.0, 0.0),
            },
        ),
    ),
    # enwik8_local8k
    (
        "enwik8",
        "variant=local8k",
        dict(
            _ENWIK8,
            **{
                "model.num_layers": 22,
                "heads": (8, 0),
                "layers": set(),
                "qm": (256, 256),
                "data.seq_len": 8192,
                "model.max_relative_position": 513,
                "drop": (0.4, 0.4, 0.0, 0.0),
            },
        ),
    ),
    # enwik8_local12k
    (
        "enwik8",
        "variant=local12k",
        dict(
            _ENWIK8,
            **{
                "model.num_layers": 22,
                "heads": (8, 0),
                "layers": set(),
                "qm": (128, 128),
                "data.seq_len": 12288,
                "model.max_relative_position": 257,
                "drop": (0.4, 0.4, 0.0, 0.0),
            },
        ),
    ),
    # wikitext103_local_cluster4k
    (
        "wikitext103",
        None,
        dict(
            _WT103,
            **{
                "model.num_layers": 14,
                "heads": (8, 8),
                "layers": ALL14,
                "model.routing.num_clusters": 8,
                "model.routing.window": 512,
                "data.seq_len": 4096,
                "drop": (0.4, 0.4, 0.4, 0.25),
            },
        ),
    ),
    # wikitext103_local4k
    (
        "wikitext103",
        "variant=local",
        dict(
            _WT103,
            **{
                "model.num_layers": 14,
                "heads": (16, 0),
                "layers": set(),
                "data.seq_len": 4096,
                "drop": (0.4, 0.4, 0.4, 0.25),
            },
        ),
    ),
    # wikitext103_local_cluster1k
    (
        "wikitext103",
        "variant=1k",
        dict(
            _WT103,
            **{
                "model.num_layers": 20,
                "heads": (8, 8),
                "layers": ALL20,
                "model.routing.num_clusters": 2,
                "model.routing.window": 512,
                "data.seq_len": 1024,
                "drop": (0.4, 0.4, 0.4, 0.2),
            },
        ),
    ),
    # pg19_local_cluster8k: only the last of 22 layers routes.
    (
        "pg19",
        None,
        dict(
            _PG19,
            **{
                "model.num_layers": 22,
                "heads": (6, 2),
                "layers": {21},
                "model.routing.num_clusters": 16,
                "model.routing.window": 512,
            },
        ),
    ),
    # pg19_local8k
    (
        "pg19",
        "variant=local",
        dict(
            _PG19, **{"model.num_layers": 24, "heads": (8, 0), "layers": set()}
        ),
    ),
    # cifar10_local_cluster
    (
        "cifar10",
        None,
        dict(
            _CIFAR,
            **{
                "heads": (4, 4),
                "layers": ALL12,
                "model.routing.num_clusters": 6,
                "model.routing.window": 512,
                "qm": (256, 256),
            },
        ),
    ),
    # cifar10_local1d
    (
        "cifar10",
        "variant=local",
        dict(_CIFAR, **{"heads": (8, 0), "layers": set(), "qm": (256, 256)}),
    ),
    # cifar10_full: one 3072-token block.
    (
        "cifar10",
        "variant=full",
        dict(_CIFAR, **{"heads": (8, 0), "layers": set(), "qm": (3072, 0)}),
    ),
    # The ablation's "last two layers, half the heads" (not in the code).
    (
        "cifar10",
        "variant=routing_last2",
        dict(
            _CIFAR,
            **{
                "heads": (4, 4),
                "layers": {10, 11},
                "model.routing.num_clusters": 6,
                "model.routing.window": 512,
                "qm": (256, 256),
            },
        ),
    ),
    # imagenet_local_cluster
    (
        "imagenet64",
        None,
        dict(
            _IMAGENET,
            **{
                "heads": (12, 4),
                "layers": set(range(24)),
                "model.routing.num_clusters": 8,
                "model.routing.window": 2048,
            },
        ),
    ),
    # imagenet_local1d
    (
        "imagenet64",
        "variant=local",
        dict(_IMAGENET, **{"heads": (16, 0), "layers": set()}),
    ),
    # mnist_cluster_local
    (
        "fashion_mnist",
        None,
        dict(
            _MNIST,
            **{
                "heads": (2, 2),
                "layers": ALL12,
                "model.routing.num_clusters": 7,
                "model.routing.window": 112,
                "qm": (56, 56),
            },
        ),
    ),
    # mnist_local1d
    (
        "fashion_mnist",
        "variant=local",
        dict(_MNIST, **{"heads": (4, 0), "layers": set(), "qm": (56, 56)}),
    ),
]


def _observed(c, key):
  m = c.model
  if key == "heads":
    return (m.num_heads - m.num_routing_heads, m.num_routing_heads)
  if key == "layers":
    return routing_layer_set(m.routing_layers, m.num_layers)
  if key == "qm":
    return (m.query_block, m.memory_flange)
  if key == "drop":
    return (
        m.attention_dropout,
        m.relu_dropout,
        m.embedding_dropout,
        m.target_dropout,
    )
  value = c
  for part in key.split("."):
    value = value[part]
  return tuple(value) if isinstance(value, (tuple, list)) else value


@pytest.mark.parametrize(
    "name,arg,expected", PAPER, ids=[f"{n}:{a or ''}" for n, a, _ in PAPER]
)
def test_paper_hyperparameters_match_reference_tables(name, arg, expected):
  c = load(name, arg)
  for key, value in expected.items():
    assert _observed(c, key) == value, key
  # Shared by every paper set (docs/paper.md §3.4, §5.4).
  assert c.model.norm == "post"
  assert c.model.init_scale == 0.2 and c.model.routing.share_qk
  assert (
      c.model.routing.kmeans.decay == 0.999
      and c.model.routing.kmeans.commitment_weight == 1e-4
  )
  assert c.model.max_len == c.data.seq_len
  t = c.train
  assert (t.optimizer, t.lr, t.schedule, t.warmup_steps) == (
      "adafactor",
      0.01,
      "rsqrt",
      10000,
  )
  assert t.grad_clip == 0.0
  assert (
      c.model.routing.mode == "causal"
  )  # ours by default; routing=topk: paper


def test_cifar10_window_and_cluster_args():
  c = load("cifar10", "variant=routing_last2,window=1024,clusters=3")
  m = c.model
  assert (m.routing.window, m.query_block, m.memory_flange) == (1024, 512, 512)
  assert m.routing.num_clusters == 3 and m.routing_layers == "last:2"
  c = load("cifar10", "variant=local,window=128")
  assert (c.model.query_block, c.model.memory_flange) == (64, 64)
  assert load("cifar10", "routing=topk").model.routing.mode == "topk"
  c = load("cifar10", "small,variant=full")
  assert (c.model.query_block, c.model.memory_flange) == (c.data.seq_len, 0)


def _docstring_commands(name):
  """The `--config...` flags of each command in a file's docstring."""
  doc = importlib.import_module(f"experiments.{name}").__doc__
  text = doc.replace("\\\n", " ")
  commands = []
  for line in text.splitlines():
    if "routing_jax.main" in line:
      commands.append(
          [a for a in shlex.split(line) if a.startswith("--config")]
      )
  return commands


@pytest.mark.parametrize("name", sorted(ARGS))
def test_docstring_commands_parse_with_config_flags(name, monkeypatch):
  monkeypatch.chdir(ROOT)  # the commands run from the repository root
  commands = _docstring_commands(name)
  assert commands, "the module docstring has no runnable command"
  for argv in commands:
    assert re.fullmatch(rf"--config=experiments/{name}\.py(:\S+)?", argv[0])
    fv = flags.FlagValues()
    # Overrides are found in sys_argv (sys.argv in a real run).
    config_flags.DEFINE_config_file(
        "config", flag_values=fv, lock_config=True, sys_argv=["main"] + argv
    )
    fv(["main"] + argv)
    _, _, arg = argv[0].partition(":")
    expected = load(name, arg or None)
    for override in argv[1:]:
      key, value = override[len("--config.") :].split("=", 1)
      section, field = key.split(".")
      expected[section][field] = value
    assert fv.config.to_dict() == expected.to_dict()
