"""The adversarial suite's world: a copy of the task with a secret seed, a world-readable root
the unprivileged user can reach, and the venv that user runs kitebench with."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.common import EXAMPLES, REPO, missing_prereq

TASK = EXAMPLES / "vectoradd_np"
#: A secret seed the task copy carries: no attack may read it out of the payload.
SECRET_SEED = 918_273_645
CACHE = Path(os.environ.get("KITEBENCH_CACHE", "/var/cache/kitebench"))
USER_VENV = CACHE / "user-venv"
WHEELS = CACHE / "wheels"
USER_VENV_PACKAGES = ("pydantic", "numpy", "PyYAML", "click")


def make_task(dest: Path) -> Path:
    """examples/vectoradd_np with a secret seed, one benchmark and short timeouts."""
    shutil.copytree(TASK, dest, ignore=shutil.ignore_patterns("solutions", "__pycache__"))
    cfg = yaml.safe_load((dest / "task.yml").read_text())
    cfg.update(seed=SECRET_SEED, test_timeout=30, benchmark_timeout=30, ranked_timeout=30)
    cfg["benchmarks"] = cfg["benchmarks"][:1]
    (dest / "task.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def build_user_venv(venv: Path, wheels: Path) -> Path:
    """A venv of the system python3 that any uid can run, with what ``kitebench submit
    --isolation process`` imports, installed from the wheelhouse only (no index)."""
    system = Path("/usr/bin/python3")
    if not system.exists():
        raise RuntimeError("no /usr/bin/python3 to build a venv from")
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([str(system), "-m", "venv", str(venv)], check=True, capture_output=True)
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
         "--disable-pip-version-check", "--find-links", str(wheels), *USER_VENV_PACKAGES],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise RuntimeError(f"pip install into {venv} failed: {proc.stderr.strip()[-400:]}")
    for root, dirs, files in os.walk(venv):  # readable and runnable by every uid
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o444 | (0o111 if os.access(p, os.X_OK) else 0))
    os.chmod(venv, 0o755)
    return venv


def user_venv_python() -> Path:
    """The unprivileged user's interpreter: the cached venv, built on first use when the wheels
    are there; a missing prerequisite otherwise (.ci/setup.d/60-user-venv.sh provides it)."""
    py = USER_VENV / "bin" / "python"
    probe = [str(py), "-c", "import pydantic, numpy, yaml, click"]
    if py.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return py
    try:
        build_user_venv(USER_VENV, WHEELS)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        missing_prereq(f"no Python an unprivileged user can run ({e}); run "
                       ".ci/setup.d/60-user-venv.sh")
    return py


@dataclass
class World:
    """What the session's runs share: the task copy, the code tree the user can read, images."""

    root: Path  # world-readable (0755): the normal user reads the task and the code here
    task: Path
    code: Path | None = None  # runner/ + launcher/ for the normal user
    user_python: Path | None = None
    image: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


def new_world() -> World:
    # Not under /tmp: a namespaced submission gets a private /tmp, and the code it imports
    # (runner.harness) must stay visible to it.
    base = CACHE / "adversarial"
    base.mkdir(parents=True, exist_ok=True)
    for d in (CACHE, base):
        os.chmod(d, os.stat(d).st_mode | 0o755)
    root = Path(tempfile.mkdtemp(prefix="kbadv-world-", dir=base))
    os.chmod(root, 0o755)
    task = make_task(root / "task")
    return World(root=root, task=task)


def share_code(world: World) -> Path:
    """The kit's packages copied where any uid can read them (the checkout may not be)."""
    if world.code is None:
        code = world.root / "code"
        for pkg in ("contract", "runner", "host", "launcher", "kitebench"):
            shutil.copytree(REPO / pkg, code / pkg,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for dirpath, _dirs, files in os.walk(world.root):
            os.chmod(dirpath, 0o755)
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o644)
        world.code = code
    return world.code
