"""Helpers of the model-path tests."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path


def fork_archive(tmp_path: Path, size: int = 0) -> Path:
    """A minimal fork archive (``vllm-fork/vllm/__init__.py``), ``size`` random bytes bigger."""
    path = tmp_path / "fork.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        data = b"X = 1\n" + os.urandom(size)
        ti = tarfile.TarInfo("vllm-fork/vllm/__init__.py")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    return path


def tree_digest(root: Path) -> str:
    """Checksum of every file of the installed package (bytecode caches excluded)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            path = Path(dirpath, name)
            h.update(str(path.relative_to(root)).encode() + b"\0")
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()
