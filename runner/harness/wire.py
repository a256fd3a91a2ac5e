"""How inputs and outputs cross between the judge and the worker: array bytes in a shared memory
region, the structure around them as JSON.

The judge decodes what the untrusted worker wrote, so decoding is deliberately dull: ``json``
(never pickle: unpickling runs code), a dtype allow-list (no object arrays), every offset and
length checked against the region, a depth limit. Arrays are numpy's; torch CPU tensors travel as
their bytes plus the torch dtype name, and torch is imported only when such a value is met.
"""

from __future__ import annotations

import math
from typing import Any

#: Array byte offsets are aligned to this (cache lines, and SIMD loads in the kernel).
ALIGN = 64
#: Nesting depth of an encoded value (lists of lists of ...).
MAX_DEPTH = 32
#: Entries (arrays, numbers, strings) in one encoded value.
MAX_NODES = 100_000
#: dtype kinds that may cross: bool, ints, floats, complex (no objects, no structured records).
_KINDS = set("biufc")


class WireError(ValueError):
    """A value that cannot cross (a CUDA tensor, an unknown type) or a malformed description."""


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _np() -> Any:
    import numpy as np

    return np


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch" and hasattr(x, "shape")


def _is_numpy(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "numpy" and hasattr(x, "dtype")


def nbytes(obj: Any) -> int:
    """Bytes of the arrays in ``obj`` (aligned as :func:`encode` places them)."""
    if _is_torch(obj):
        return _align(int(obj.numel()) * int(obj.element_size()))
    if _is_numpy(obj):
        return _align(int(obj.nbytes))
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(x) for x in obj)
    if isinstance(obj, dict):
        return sum(nbytes(x) for x in obj.values())
    return 0


def has_cuda(obj: Any) -> bool:
    if _is_torch(obj):
        return bool(obj.is_cuda)
    if isinstance(obj, (list, tuple)):
        return any(has_cuda(x) for x in obj)
    if isinstance(obj, dict):
        return any(has_cuda(x) for x in obj.values())
    return False


class Encoder:
    """Places the arrays of a value into ``buf`` from ``offset`` on (at most ``limit`` bytes)."""

    def __init__(self, buf: memoryview, offset: int, limit: int) -> None:
        self.buf = buf
        self.pos = offset
        self.end = offset + limit
        self.nodes = 0

    def _place(self, raw: Any) -> int:
        """Copy a numpy array's bytes (any layout) into the region; returns its offset."""
        np = _np()
        off = self.pos
        if off + raw.nbytes > self.end:
            raise WireError(
                f"the value is larger than the space for it ({self.end - self.pos} bytes left)"
            )
        dst = np.ndarray(raw.shape, dtype=raw.dtype, buffer=self.buf, offset=off)
        np.copyto(dst, raw, casting="no")
        self.pos = off + _align(raw.nbytes)
        return off

    def encode(self, obj: Any, depth: int = 0) -> Any:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise WireError("the value is nested too deeply or has too many parts")
        if _is_torch(obj):
            if obj.is_cuda:
                raise WireError("CUDA tensors do not travel through host shared memory")
            t = obj.detach().contiguous()
            raw = t.reshape(-1).view(__import__("torch").uint8).numpy() if t.numel() else None
            off = self._place(raw) if raw is not None else self.pos
            return {"t": "torch", "dtype": str(t.dtype).removeprefix("torch."),
                    "shape": list(t.shape), "off": off, "n": 0 if raw is None else raw.nbytes}
        if _is_numpy(obj):
            np = _np()
            scalar = not isinstance(obj, np.ndarray)
            arr = np.asarray(obj)
            if arr.dtype.kind not in _KINDS or arr.dtype.hasobject:
                raise WireError(f"numpy dtype {arr.dtype} cannot cross (only numbers and bools)")
            off = self._place(arr)
            return {"t": "numpy", "dtype": arr.dtype.str, "shape": list(arr.shape), "off": off,
                    "n": arr.nbytes, "scalar": scalar}
        if isinstance(obj, (list, tuple)):
            return {"t": type(obj).__name__, "v": [self.encode(x, depth + 1) for x in obj]}
        if isinstance(obj, dict):
            if not all(isinstance(k, str) for k in obj):
                raise WireError("dict keys must be strings")
            return {"t": "dict", "k": list(obj),
                    "v": [self.encode(v, depth + 1) for v in obj.values()]}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            if isinstance(obj, float) and not math.isfinite(obj):
                return {"t": "float", "v": repr(obj)}  # JSON has no NaN/inf
            if isinstance(obj, int) and not isinstance(obj, bool) and abs(obj) > 2**63:
                return {"t": "bigint", "v": str(obj)}
            return {"t": "py", "v": obj}
        raise WireError(f"a {type(obj).__module__}.{type(obj).__name__} cannot cross")


def encode(obj: Any, buf: memoryview, offset: int, limit: int) -> tuple[Any, int]:
    """(description, bytes used) of ``obj`` placed into ``buf[offset:offset + limit]``."""
    enc = Encoder(buf, offset, limit)
    meta = enc.encode(obj)
    return meta, enc.pos - offset


def decode(meta: Any, buf: memoryview, *, copy: bool, depth: int = 0) -> Any:
    """The value described by ``meta`` (untrusted): arrays are views of ``buf`` or, with
    ``copy``, private copies (what the judge checks must not change under it)."""
    if depth > MAX_DEPTH or not isinstance(meta, dict):
        raise WireError("malformed value description")
    kind = meta.get("t")
    if kind in ("numpy", "torch"):
        np = _np()
        shape = meta.get("shape")
        off, n = meta.get("off"), meta.get("n")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
                and type(off) is int and type(n) is int and off >= 0 and n >= 0
                and off + n <= len(buf)):
            raise WireError("array description out of bounds")
        if kind == "numpy":
            try:
                dtype = np.dtype(str(meta.get("dtype")))
            except TypeError as e:
                raise WireError(f"bad dtype: {e}") from None
            if dtype.kind not in _KINDS or dtype.hasobject or math.prod(shape) * dtype.itemsize != n:
                raise WireError("array dtype/shape do not match its bytes")
            arr = np.ndarray(shape, dtype=dtype, buffer=buf, offset=off)
            arr = arr.copy() if copy else arr
            return arr[()] if meta.get("scalar") else arr
        import torch

        dtype = getattr(torch, str(meta.get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            raise WireError("bad torch dtype")
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if size != n:
            raise WireError("tensor dtype/shape do not match its bytes")
        if n == 0:
            return torch.empty(shape, dtype=dtype)
        raw = np.ndarray((n,), dtype=np.uint8, buffer=buf, offset=off)
        t = torch.from_numpy(raw.copy() if copy else raw).view(dtype).reshape(shape)
        return t
    if kind in ("list", "tuple"):
        items = [decode(m, buf, copy=copy, depth=depth + 1) for m in _items(meta, "v")]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        keys = _items(meta, "k")
        values = _items(meta, "v")
        if len(keys) != len(values) or not all(isinstance(k, str) for k in keys):
            raise WireError("malformed dict description")
        return {k: decode(v, buf, copy=copy, depth=depth + 1) for k, v in zip(keys, values,
                                                                              strict=True)}
    if kind == "float" and meta.get("v") in ("nan", "inf", "-inf"):
        return float(meta["v"])
    if kind == "bigint" and isinstance(meta.get("v"), str):
        return int(meta["v"])
    if kind == "py" and (meta.get("v") is None or isinstance(meta.get("v"),
                                                            (bool, int, float, str))):
        return meta["v"]
    raise WireError("malformed value description")


def _items(meta: dict[str, Any], key: str) -> list[Any]:
    v = meta.get(key)
    if not isinstance(v, list):
        raise WireError("malformed value description")
    return v
