"""Correctness: elementwise comparison with rtol/atol (NaN/inf aware) and deep copies of inputs."""

from __future__ import annotations

import copy
import math
from typing import Any


def _kind(x: Any) -> str:
    mod = type(x).__module__.split(".", 1)[0]
    if mod == "torch" and hasattr(x, "shape"):
        return "torch"
    if mod == "numpy" and hasattr(x, "shape"):
        return "numpy"
    return "py"


def compare(output: Any, expected: Any, *, rtol: float, atol: float, limit: int = 3) -> str | None:
    """None when ``output`` matches ``expected`` within ``|out - exp| <= atol + rtol * |exp|``
    elementwise, else a description of the mismatch. NaN must meet NaN and inf the same inf:
    a NaN or inf where the reference has none (or the reverse) is a mismatch."""
    ko, ke = _kind(output), _kind(expected)
    if ke != "py" or ko != "py":
        if ko != ke:
            return f"expected a {ke} array, got {type(output).__name__}"
        if tuple(output.shape) != tuple(expected.shape):
            return f"shape mismatch: got {tuple(output.shape)}, expected {tuple(expected.shape)}"
        return (
            _compare_torch(output, expected, rtol, atol, limit)
            if ke == "torch"
            else (_compare_numpy(output, expected, rtol, atol, limit))
        )
    if isinstance(expected, (list, tuple)):
        if not isinstance(output, (list, tuple)) or len(output) != len(expected):
            return f"expected a sequence of {len(expected)} items, got {_describe(output)}"
        bad = []
        for i, (o, e) in enumerate(zip(output, expected, strict=True)):
            err = compare(o, e, rtol=rtol, atol=atol, limit=limit)
            if err:
                bad.append(f"[{i}]: {err}")
                if len(bad) >= limit:
                    break
        return "; ".join(bad) or None
    if isinstance(expected, dict):
        if not isinstance(output, dict) or set(output) != set(expected):
            return f"expected a dict with keys {sorted(expected)}, got {_describe(output)}"
        for key in expected:
            err = compare(output[key], expected[key], rtol=rtol, atol=atol, limit=limit)
            if err:
                return f"[{key!r}]: {err}"
        return None
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if not isinstance(output, (int, float)) or isinstance(output, bool):
            return f"expected a number, got {_describe(output)}"
        return (
            None
            if _close(float(output), float(expected), rtol, atol)
            else (f"got {output!r}, expected {expected!r}")
        )
    return (
        None if output == expected else f"got {_describe(output)}, expected {_describe(expected)}"
    )


def _describe(x: Any) -> str:
    r = repr(x)
    return r if len(r) <= 80 else type(x).__name__


def _close(o: float, e: float, rtol: float, atol: float) -> bool:
    if math.isnan(o) or math.isnan(e):
        return math.isnan(o) and math.isnan(e)
    if math.isinf(o) or math.isinf(e):
        return o == e
    return abs(o - e) <= atol + rtol * abs(e)


def _compare_torch(out: Any, exp: Any, rtol: float, atol: float, limit: int) -> str | None:
    import torch

    o = out.detach().to(exp.device).to(torch.float64)
    e = exp.detach().to(torch.float64)
    nan_o, nan_e = torch.isnan(o), torch.isnan(e)
    inf_o, inf_e = torch.isinf(o), torch.isinf(e)
    finite = ~(nan_o | nan_e | inf_o | inf_e)
    close = (o - e).abs() <= atol + rtol * e.abs()
    bad = (nan_o != nan_e) | ((inf_o | inf_e) & (o != e) & ~(nan_o | nan_e)) | (finite & ~close)
    count = int(bad.sum().item())
    if not count:
        return None
    idx = torch.nonzero(bad)[:limit].tolist()
    items = [
        f"at {tuple(i)}: got {o[tuple(i)].item()!r}, expected {e[tuple(i)].item()!r}" for i in idx
    ]
    return f"{count} of {bad.numel()} elements mismatch (rtol={rtol}, atol={atol}); " + "; ".join(
        items
    )


def _compare_numpy(out: Any, exp: Any, rtol: float, atol: float, limit: int) -> str | None:
    import numpy as np

    o = np.asarray(out, dtype=np.float64)
    e = np.asarray(exp, dtype=np.float64)
    nan_o, nan_e = np.isnan(o), np.isnan(e)
    inf_o, inf_e = np.isinf(o), np.isinf(e)
    finite = ~(nan_o | nan_e | inf_o | inf_e)
    with np.errstate(invalid="ignore", over="ignore"):
        close = np.abs(o - e) <= atol + rtol * np.abs(e)
        bad = (nan_o != nan_e) | ((inf_o | inf_e) & (o != e) & ~(nan_o | nan_e)) | (finite & ~close)
    count = int(bad.sum())
    if not count:
        return None
    idx = np.argwhere(bad)[:limit].tolist()
    items = [
        f"at {tuple(i)}: got {float(o[tuple(i)]):.7g}, expected {float(e[tuple(i)]):.7g}"
        for i in idx
    ]
    return f"{count} of {bad.size} elements mismatch (rtol={rtol}, atol={atol}); " + "; ".join(
        items
    )


def clone(data: Any) -> Any:
    """A deep copy of inputs (tensors and arrays cloned), so a kernel that writes into its inputs
    cannot change what the reference sees."""
    kind = _kind(data)
    if kind == "torch":
        return data.clone()
    if kind == "numpy":
        return data.copy()
    if isinstance(data, tuple):
        return tuple(clone(x) for x in data)
    if isinstance(data, list):
        return [clone(x) for x in data]
    if isinstance(data, dict):
        return {k: clone(v) for k, v in data.items()}
    return copy.deepcopy(data)

