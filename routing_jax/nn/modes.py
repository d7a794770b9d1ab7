# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The names of every model mode, defined once.

Validation in `ModelConfig`, the attention modules and the experiment
configs all check against these tuples.
"""

# Routing: "causal" is exactly causal (docs/causal_routing.md), "topk" the
# paper's balanced selection (docs/paper.md §1.3).
ROUTINGS = ("causal", "topk")
# What routing heads do during their warm-up (docs/causal_routing.md).
WARMUPS = ("dense", "random")
# Causal-routing core: the XLA path or the fused Pallas kernel.
ROUTING_IMPLEMENTATIONS = ("xla", "pallas")
# Position encodings an attention module applies to its heads.
ATTENTION_POSITIONS = ("none", "relative", "rope")
# Model-level positions: the attention ones plus learned row/column tables
# added to image embeddings (the heads then get none).
POSITIONS = ATTENTION_POSITIONS + ("learned2d",)
FFNS = ("geglu", "relu")
# Variance-scaling fan modes of the kernel initialiser (ModelConfig.init_mode).
INIT_MODES = ("fan_avg", "fan_in", "fan_out")
NORMS = ("post", "pre")
DTYPE_NAMES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = (
    "none",
    "full",
    "dots_saveable",
    "nothing_saveable",
    "dots_with_no_batch_dims_saveable",
)
