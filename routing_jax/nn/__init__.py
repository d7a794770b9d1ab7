# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The neural network: attention, k-means routing, the model, loss, sampling.

Imports only `routing_jax.common_types` and its own modules; never the
data pipeline, the training loop or the command-line programs.
"""
