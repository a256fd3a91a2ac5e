"""Small reference-kernels style task dirs written into tmp_path (for tests of the foundation)."""

from __future__ import annotations

from pathlib import Path

PY_EVAL = '''import os, sys
from submission import custom_kernel
fd = int(os.environ["POPCORN_FD"])
with os.fdopen(fd, "w") as out:
    out.write("check: pass\\n" if custom_kernel(2) == 4 else "check: fail\\n")
'''


def write_py_task(root: Path) -> Path:
    """A py task laid out as in reference-kernels: shared files one level up (``../eval.py``)."""
    task = root / "problems" / "double_py"
    task.mkdir(parents=True)
    (root / "problems" / "eval.py").write_text(PY_EVAL)
    (root / "problems" / "utils.py").write_text("def helper():\n    return 1\n")
    (task / "reference.py").write_text("def ref_kernel(x):\n    return 2 * x\n")
    (task / "task.yml").write_text(
        """# a reference-kernels style task
files:
  - {"name": "submission.py", "source": "@SUBMISSION@"}
  - {"name": "reference.py", "source": "reference.py"}
  - {"name": "utils.py", "source": "../utils.py"}
  - {"name": "eval.py", "source": "../eval.py"}
lang: "py"
description: |
  Double a number.
config:
  main: "eval.py"
tests:
  - {"size": 127, "seed": 4242}
  - {"size": 128, "seed": 5236}
benchmarks:
  - {"size": 1024, "seed": 31232}
  - {"size": 4096, "seed": 4052}
test_timeout: 60
benchmark_timeout: 90
ranked_timeout: 420
ranking_by: "geom"
"""
    )
    (task / "submission_ok.py").write_text("def custom_kernel(x):\n    return 2 * x\n")
    return task


def write_cu_task(root: Path) -> Path:
    task = root / "vecadd_cu"
    task.mkdir(parents=True)
    (task / "eval.cu").write_text('#include "task.h"\nint main() { return 0; }\n')
    (task / "task.h").write_text("#pragma once\n#define N 1024\n")
    (task / "task.yml").write_text(
        """files:
  - {"name": "submission.cu", "source": "@SUBMISSION@"}
  - {"name": "eval.cu", "source": "eval.cu"}
  - {"name": "task.h", "source": "task.h"}
lang: "cu"
description: "add vectors"
config:
  sources: ["eval.cu", "submission.cu"]
  defines: {"NDEBUG": "1"}
  compile_flags: ["-O3", "--use_fast_math"]
  include_dirs: []
tests:
  - {"size": 1024, "seed": 1}
benchmarks:
  - {"size": 1048576, "seed": 2}
"""
    )
    (task / "submission.cu").write_text("__global__ void add(float* a) {}\n")
    return task
