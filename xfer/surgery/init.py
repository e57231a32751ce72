"""Fresh, seeded initial values for re-created layers (He for ReLU, Glorot otherwise)."""

from __future__ import annotations

import numpy as np


def weight(shape: tuple[int, ...], fan_in: int, fan_out: int, activation: str, rng: np.random.Generator) -> np.ndarray:
    bound = np.sqrt(6.0 / fan_in) if activation in ("Relu", "LeakyRelu", "Elu") else np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def rng_for(seed: int, name: str) -> np.random.Generator:
    """One stream per (seed, initializer name): results do not depend on pass order."""
    return np.random.default_rng([seed] + list(name.encode()))
