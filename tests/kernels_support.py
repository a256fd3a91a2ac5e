"""Helpers for the kernel runner tests: build py payloads from inline sources, run
``python -m runner`` for real, and look for processes a submission left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import codec
from contract.result import FullResult
from contract.resultio import read_result

REPO = Path(__file__).resolve().parent.parent


def py_payload(main_src: str, *, files: dict[str, str] | None = None, **common: Any) -> str:
    """An encoded py payload whose main is ``eval.py`` = ``main_src`` (dedented)."""
    sources = {"eval.py": textwrap.dedent(main_src)}
    sources.update({k: textwrap.dedent(v) for k, v in (files or {}).items()})
    data: dict[str, Any] = {"lang": "py", "main": "eval.py", "sources": sources}
    data.setdefault("tests", [{"size": 1}])
    data.update(common)
    return codec.encode(data, limit=None)


@dataclass
class RunnerRun:
    result: FullResult
    exit_code: int
    wall_s: float
    stderr: str
    raw: dict[str, Any]


def run_runner(encoded: str, env: dict[str, str], *, timeout: float = 300) -> RunnerRun:
    env = dict(env)
    env["SUBMISSION_PAYLOAD"] = encoded
    out = Path(env["KITEBENCH_OUTPUT_DIR"])
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "runner"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.monotonic() - t0
    raw = json.loads((out / "result.json").read_text())
    return RunnerRun(read_result(out / "result.json"), proc.returncode, wall, proc.stderr, raw)


def new_marker() -> str:
    return "kbmark" + uuid.uuid4().hex[:12]


def marker_procs(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line holds ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        state = stat[stat.rfind(b")") + 2 :].split()[:1]
        if marker.encode() in cmd and state != [b"Z"]:
            found.append(int(name))
    return found


def wait_gone(marker: str, timeout: float = 10.0) -> list[int]:
    """Processes with ``marker`` still alive after ``timeout`` (should be none at once)."""
    end = time.monotonic() + timeout
    while True:
        left = marker_procs(marker)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


def sleeper_cmd(marker: str, seconds: int = 300) -> str:
    """Python source of an argv list for a sleeping process tagged with ``marker``."""
    return repr([sys.executable, "-c", f"import time; time.sleep({seconds})", marker])
