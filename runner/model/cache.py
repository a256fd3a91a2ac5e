"""The server's start-up cache, shared by the jobs of one agent without trusting any fork.

vLLM's compile artifacts (``$VLLM_CACHE_ROOT/torch_compile_cache``: dynamo's AOT-compiled
forward, inductor's output) let a repeat start skip the compile warm-up. They are pickles: a
process that loads one runs what it says. So:

* **Only trusted runs write it**: a stock server of the installed vLLM under the runner's uid
  with a cache dir of its own (the audit's reference server), never a fork's server.
* **Keyed by the code it was built from**: :func:`key` hashes the installed vLLM (version and a
  stat fingerprint of its files), torch, the interpreter, the model dir, the launch config and
  the fork's *code delta* (its files that differ from the installed ones, by content). A fork
  that changes nothing has the empty delta, the key of stock, so it finds the stock-built entry;
  a fork that changes any file has a key no trusted run builds, so it always starts cold. A
  native fork (built by pip) gets no key.
* **Read by copy**: a hit is copied into a dir of the job, handed to the fork's uid; its server
  may write that copy, which is removed with the job. The shared root is the runner's (0700) and
  hidden from a namespace sandbox; with sandbox ``none`` (the fork shares the runner's uid and
  could write the root) it is not used at all.
* **Published atomically**: built in ``<root>/.tmp-*``, renamed to ``<root>/<key>``; the first
  entry for a key stays.

``KITEBENCH_START_CACHE_DIR`` names the root on the agent; unset, every start is cold.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

ENV_ROOT = "KITEBENCH_START_CACHE_DIR"
#: The cache dirs of a server, under the cache dir handed to it, and the env var of each.
PARTS = {"vllm": "VLLM_CACHE_ROOT", "inductor": "TORCHINDUCTOR_CACHE_DIR"}
ABOUT = "about.json"


def code_delta(installed: Path, shadow: Path, fork_files: list[str]) -> list[list[str]]:
    """``[path, sha256]`` of each fork file (``vllm/...``) that differs from the installed one."""
    out: list[list[str]] = []
    for rel in sorted(fork_files):
        mine = (shadow.parent / rel).read_bytes()
        stock = installed.parent / rel
        try:
            same = stock.is_file() and stock.read_bytes() == mine
        except OSError:
            same = False
        if not same:
            out.append([rel, hashlib.sha256(mine).hexdigest()])
    return out


def installed_fingerprint(installed: Path) -> str:
    """Names, sizes and mtimes of the installed package's files (a reinstall is a new key)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(installed):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), installed)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def about(
    *,
    installed: Path,
    version: str,
    python: str,
    torch: str,
    model_digest: str,
    config: dict[str, Any],
    delta: list[list[str]],
    device: str,
) -> dict[str, Any]:
    """Everything a start-up artifact depends on; :func:`key` hashes it."""
    return {
        "vllm": version,
        "installed": installed_fingerprint(installed),
        "python": python,
        "torch": torch,
        "device": device,
        "model": model_digest,
        "config": config,
        "delta": delta,
    }


def key(facts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:40]


def usable(root: str | None, hardened: bool) -> Path | None:
    """The shared root when this job may use one: set, and a sandbox that keeps the fork out."""
    if not root or not hardened:
        return None
    path = Path(root)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # the runner's alone; the fork only ever sees a copy
    return path


def seed(root: Path, k: str, into: Path) -> bool:
    """Copy entry ``k`` (if any) into ``into`` (a fresh dir of the job); True on a hit."""
    entry = root / k
    if not (entry / ABOUT).is_file():
        return False
    for part in PARTS:
        if (entry / part).is_dir():
            shutil.copytree(entry / part, into / part, symlinks=True)
    return True


def publish(root: Path, k: str, cache: Path, facts: dict[str, Any]) -> bool:
    """Entry ``k`` from a TRUSTED server's cache dir ``cache`` (its ``vllm``/``inductor``);
    False when it exists already or there is nothing to keep."""
    if (root / k).exists() or not any((cache / p).is_dir() for p in PARTS):
        return False
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        for part in PARTS:
            if (cache / part).is_dir():
                shutil.copytree(cache / part, tmp / part, symlinks=True)
        (tmp / ABOUT).write_text(json.dumps(facts, sort_keys=True, indent=1))
        os.rename(tmp, root / k)  # atomic; fails if another job published first
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)


def env_for(cache: Path) -> dict[str, str]:
    """The server's cache variables for the cache dir ``cache``."""
    return {var: str(cache / part) for part, var in PARTS.items()}
