"""Inputs and the reference result of vectoradd (torch)."""

import torch

RTOL = 1e-5
ATOL = 1e-5


def generate_input(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(seed)
    a = torch.randn(size, generator=gen, device=device, dtype=torch.float32)
    b = torch.randn(size, generator=gen, device=device, dtype=torch.float32)
    return a, b


def ref_kernel(data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    a, b = data
    return a + b
