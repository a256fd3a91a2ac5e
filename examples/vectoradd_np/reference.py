"""Inputs and the reference result of vectoradd (NumPy)."""

import numpy as np

RTOL = 1e-5
ATOL = 1e-5


def generate_input(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(size, dtype=np.float32)
    b = rng.standard_normal(size, dtype=np.float32)
    return a, b


def ref_kernel(data: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    a, b = data
    return a + b
