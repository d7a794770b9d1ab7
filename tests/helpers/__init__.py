# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
