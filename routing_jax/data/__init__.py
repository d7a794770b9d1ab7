# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Input data: the embedded Shakespeare corpus, datasets, batches, tasks.

Also holds the packaged corpus archive (shakespeare.tar.xz, see corpus.py).
Imports only the shared top-level modules (common_types, errors, multihost)
and its own modules; never the model or the training loop.
"""
