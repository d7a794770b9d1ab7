# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Training: the sharded train step, the loop, optimizer, checkpoints, metrics.

May import `routing_jax.nn` and `routing_jax.data`; neither imports it.
"""
