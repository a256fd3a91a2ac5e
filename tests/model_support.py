"""Helpers of the model-path tests."""

from __future__ import annotations

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
