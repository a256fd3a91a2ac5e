"""The field's POPCORN protocol: ``key: value`` lines, the cases file, secret seeds, exit codes."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Any

EXIT_PASS = 0
EXIT_CUDA_FAIL = 110
EXIT_PIPE_FAILED = 111
EXIT_VALIDATE_FAIL = 112
EXIT_TEST_SPEC = 113

#: The harness's own modes (``eval.py MODE CASES``): the contract's ``private`` runs as
#: ``leaderboard`` (a test checks these stay a subset of the contract's modes).
MODES = ("test", "benchmark", "leaderboard", "profile")
Case = dict[str, Any]


class PopcornOutput:
    """Writes ``key: value`` lines to ``POPCORN_FD`` (stdout when it is not set, for running a
    harness by hand). Newlines in values are escaped so each key stays on one line."""

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            raw = os.environ.get("POPCORN_FD")
            fd = int(raw) if raw else None
        if fd is None:
            self._file: io.TextIOBase = sys.stdout  # type: ignore[assignment]
            self._own = False
        else:
            self._file = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
            self._own = True

    def log(self, key: str, value: Any) -> None:
        text = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        self._file.write(f"{key}: {text}\n")
        self._file.flush()

    def close(self) -> None:
        if self._own:
            with contextlib.suppress(OSError):
                self._file.close()


def parse_case(line: str) -> Case:
    """``size: 1024; seed: 42`` → ``{"size": 1024, "seed": 42}`` (ints and floats converted)."""
    case: Case = {}
    for part in line.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"bad test spec {line!r}: expected 'key: value; key: value'")
        case[key.strip()] = _convert(value.strip())
    return case


def _convert(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def case_spec(case: Case) -> str:
    return "; ".join(
        f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in case.items()
    )


def read_cases(path: str) -> list[Case]:
    with open(path, encoding="utf-8") as f:
        return [parse_case(line) for line in f if line.strip()]


def secret_seed() -> int | None:
    raw = os.environ.get("POPCORN_SEED")
    return int(raw) if raw else None


def mix_seed(case: Case, secret: int | None, offset: int = 0) -> Case:
    """The case with its ``seed`` moved by the secret seed (and ``offset`` for fresh inputs)."""
    if "seed" not in case or not isinstance(case["seed"], int):
        return dict(case)
    out = dict(case)
    out["seed"] = (case["seed"] + (secret or 0) + offset) % (2**31 - 1)
    return out

