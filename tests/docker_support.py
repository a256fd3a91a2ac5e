"""Docker helpers for tests and benchmarks: the engine, the offline base, the test runner image.

``kitebench-runner:test`` is images/runner/Dockerfile built on the offline base
``kitebench-base:bookworm`` with torch left out, from a staged build context that holds the
wheelhouse (no index, no registry needed). It is rebuilt only when runner/, the Dockerfile or the
requirements change: a content hash is stored as an image label.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from tests.common import REPO, missing_prereq

BASE_IMAGE = "kitebench-base:bookworm"
TEST_IMAGE = "kitebench-runner:test"
HASH_LABEL = "dev.kitebench.test-hash"
CACHE = Path(os.environ.get("KITEBENCH_CACHE", "/var/cache/kitebench"))
WHEELS = CACHE / "wheels"


def docker_client() -> Any:
    """A live docker client, or skip (locally) / fail (CI) the test."""
    from host.engine import EngineUnavailable
    from host.engine import docker_client as engine_client

    try:
        return engine_client()
    except EngineUnavailable as e:
        missing_prereq(f"no Docker engine: {e.message}")
        raise  # unreachable: missing_prereq raises


def require_base(client: Any) -> None:
    from docker.errors import ImageNotFound

    try:
        client.images.get(BASE_IMAGE)
    except ImageNotFound:
        missing_prereq(f"{BASE_IMAGE} is missing: run .ci/setup.d/30-docker.sh (images/build-base.sh)")


def _tree_hash(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            h.update(str(f.relative_to(REPO)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def ensure_wheels() -> Path:
    """The wheelhouse of images/runner/requirements.txt (fetched once into the cache)."""
    have = list(WHEELS.glob("pydantic-*.whl")) and list(WHEELS.glob("numpy-*.whl"))
    if not have:
        proc = subprocess.run(
            ["bash", str(REPO / "images" / "fetch-wheels.sh"), str(WHEELS)],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            missing_prereq(f"cannot fetch the runner wheels: {proc.stderr.strip()[-500:]}")
    return WHEELS


def stage_context(dest: Path, wheels: Path | None, runner_src: Path | None = None) -> Path:
    """A build context like the repository root (filtered as .dockerignore says), plus wheels."""
    shutil.copytree(runner_src or REPO / "runner", dest / "runner",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "contract", dest / "contract",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "images", dest / "images",
                    ignore=shutil.ignore_patterns("*.whl", "__pycache__"))
    shutil.copy(REPO / ".dockerignore", dest / ".dockerignore")
    if wheels is not None:
        for whl in wheels.glob("*.whl"):
            shutil.copy(whl, dest / "images" / "wheels" / whl.name)
    return dest


def build(client: Any, context: Path, dockerfile: str, tag: str, buildargs: dict[str, str],
          labels: dict[str, str] | None = None) -> Any:
    """``docker build`` through the SDK with no network at all (no registry, no index: the base
    is local, the wheels are in the context); BuildError → test failure."""
    image, _logs = client.images.build(
        path=str(context), dockerfile=dockerfile, tag=tag, buildargs=buildargs,
        labels=labels or {}, rm=True, forcerm=True, pull=False, network_mode="none",
    )
    return image


def runner_image_hash() -> str:
    return _tree_hash(
        [REPO / "contract", REPO / "runner", REPO / "images" / "runner", REPO / ".dockerignore"],
        extra=BASE_IMAGE,
    )


def ensure_test_image(client: Any | None = None, tag: str = TEST_IMAGE) -> str:
    """Build ``kitebench-runner:test`` (or ``tag``) unless an up-to-date one exists; returns
    the tag."""
    from docker.errors import ImageNotFound

    client = client or docker_client()
    require_base(client)
    want = runner_image_hash()
    try:
        img = client.images.get(tag)
        if (img.labels or {}).get(HASH_LABEL) == want:
            return tag
    except ImageNotFound:
        pass
    wheels = ensure_wheels()
    with tempfile.TemporaryDirectory(prefix="kitebench-ctx-") as tmp:
        ctx = stage_context(Path(tmp), wheels)
        build(client, ctx, "images/runner/Dockerfile", tag,
              {"BASE_IMAGE": BASE_IMAGE, "INSTALL_TORCH": "0", "KITEBENCH_REVISION": want},
              labels={HASH_LABEL: want})
    return tag


def standin_vllm_wheel(dest: Path, version: str = "0.0.0+standin") -> Path:
    """A tiny wheel named ``vllm`` (a stand-in: the real vLLM is GBs of CUDA wheels). It only
    makes ``import vllm`` and ``vllm --version`` work inside a test image."""
    name = f"vllm-{version}-py3-none-any.whl"
    dist = f"vllm-{version}.dist-info"
    files = {
        "vllm/__init__.py": f'"""Stand-in for vLLM in kitebench image tests."""\n__version__ = "{version}"\n',
        "vllm/__main__.py": "import sys\nprint('vllm stand-in', __import__('vllm').__version__)\nsys.exit(0)\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: kitebench-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[console_scripts]\nvllm = vllm.__main__:main\n",
    }
    files["vllm/__main__.py"] = (
        "import sys\n\ndef main():\n    print('vllm', __import__('vllm').__version__)\n    return 0\n\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    record = "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    out = dest / name
    out.write_bytes(buf.getvalue())
    return out


# ---------------------------------------------------------------------------------------------
# Payloads for container tests (py payloads whose main speaks the POPCORN_FD protocol)
# ---------------------------------------------------------------------------------------------

_PROBE = r'''
import errno, os, socket, sys

def emit(**kv):
    with os.fdopen(int(os.environ["POPCORN_FD"]), "w", closefd=False) as f:
        for k, v in kv.items():
            f.write(f"{k}: {v}\n")

def read(*paths):
    for p in paths:
        try:
            return open(p).read().strip()
        except OSError:
            continue
    return ""

facts = {}
facts["probe.uid"] = os.getuid()
facts["probe.gid"] = os.getgid()
try:
    s = socket.create_connection(("1.1.1.1", 53), timeout=3)
    s.close()
    facts["probe.network"] = "connected"
except OSError as e:
    facts["probe.network"] = f"blocked errno={e.errno}"
facts["probe.interfaces"] = ",".join(sorted(os.listdir("/sys/class/net")))
facts["probe.memory_limit"] = read("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max")
facts["probe.memsw_limit"] = read("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", "/sys/fs/cgroup/memory.swap.max")
facts["probe.cpuset"] = read("/sys/fs/cgroup/cpuset/cpuset.cpus", "/sys/fs/cgroup/cpuset.cpus.effective")
facts["probe.affinity"] = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
facts["probe.pids_max"] = read("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max")
try:
    open("/kitebench-probe-write", "w").close()
    facts["probe.root_fs"] = "writable"
except OSError as e:
    facts["probe.root_fs"] = "read-only" if e.errno == errno.EROFS else f"error errno={e.errno}"
try:
    with open("/tmp/probe", "w") as f:
        f.write("x")
    facts["probe.tmp"] = "writable"
except OSError as e:
    facts["probe.tmp"] = f"error errno={e.errno}"
env_names = set(os.environ)
try:  # the container's own environment (PID 1 = the init process)
    raw = open("/proc/1/environ", "rb").read().split(b"\0")
    env_names |= {x.split(b"=", 1)[0].decode() for x in raw if x}
    facts["probe.container_env_read"] = "yes"
except OSError as e:
    facts["probe.container_env_read"] = f"no errno={e.errno}"
facts["probe.env_names"] = ",".join(sorted(env_names))
facts["probe.caps"] = read("/proc/self/status").split("CapEff:")[-1].split()[0]
facts["probe.no_new_privs"] = read("/proc/self/status").split("NoNewPrivs:")[-1].split()[0]
emit(check="pass", **facts)
'''

_FORK_BOMB = r'''
import os, sys, time
children = []
refused = 0
for _ in range(100000):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        if refused > 50:
            break
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
with os.fdopen(int(os.environ["POPCORN_FD"]), "w", closefd=False) as f:
    f.write(f"check: fail\nforked: {len(children)}\nrefused: {refused}\n")
sys.exit(1)
'''

_MEMORY_HOG = r'''
import sys
chunks = []
while True:
    chunks.append(bytearray(64 * 1024 * 1024))
    for i in range(0, len(chunks[-1]), 4096):
        chunks[-1][i] = 1
'''

_HANG = r'''
import time
while True:
    time.sleep(1)
'''

_PASS = r'''
import os
with os.fdopen(int(os.environ["POPCORN_FD"]), "w", closefd=False) as f:
    f.write("check: pass\nbenchmark-count: 1\nbenchmark.0.spec: size: 8\nbenchmark.0.mean: 1500.0\n")
'''

SCRIPTS = {"probe": _PROBE, "fork_bomb": _FORK_BOMB, "memory_hog": _MEMORY_HOG, "hang": _HANG,
           "pass": _PASS}


def py_payload(kind: str, *, mode: str = "test", timeout: int = 60, **extra: Any) -> dict[str, Any]:
    """A ``lang: py`` payload whose main is one of :data:`SCRIPTS`."""
    data: dict[str, Any] = {
        "lang": "py",
        "mode": mode,
        "main": "main.py",
        "sources": {"main.py": SCRIPTS[kind]},
        "tests": [{"size": 8}],
        "benchmarks": [{"size": 8}],
        "test_timeout": timeout,
        "benchmark_timeout": timeout,
        "ranked_timeout": timeout,
    }
    data.update(extra)
    return data


def encoded(data: dict[str, Any]) -> str:
    from contract import codec

    return codec.encode(data)
