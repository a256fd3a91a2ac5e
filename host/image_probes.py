"""What ``kitebench image validate`` runs inside the image: the probe scripts and one container
with the host wrapper's isolation around each of them."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

#: The host's hard limit around one probe container.
CONTAINER_TIMEOUT_S = 120.0

#: Facts the runner reports from inside the limits (a payload that writes them to POPCORN_FD).
PROBE = r'''
import os, sys
def read(*paths):
    for p in paths:
        try:
            return open(p).read().strip()
        except OSError:
            pass
    return ""
facts = {
    "check": "pass",
    "uid": os.getuid(),
    "memory_limit": read("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"),
    "cpuset": read("/sys/fs/cgroup/cpuset/cpuset.cpus", "/sys/fs/cgroup/cpuset.cpus.effective"),
    "affinity": ",".join(map(str, sorted(os.sched_getaffinity(0)))),
}
with os.fdopen(int(os.environ["POPCORN_FD"]), "w", closefd=False) as f:
    f.writelines(f"{k}: {v}\n" for k, v in facts.items())
'''

#: A payload that outlives its timeout.
SLEEP = "import time\ntime.sleep(3600)\n"

#: Versions of what the image carries (run with the image's Python, not the runner).
VERSIONS = r'''
import json, platform, shutil, subprocess
out = {"python": platform.python_version()}
try:
    import torch
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda or ""
except Exception as e:
    out["torch_error"] = f"{type(e).__name__}: {e}"
nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if __import__("os").path.exists("/usr/local/cuda/bin/nvcc") else None)
if nvcc:
    try:
        v = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
        out["nvcc"] = v.strip().splitlines()[-1] if v.strip() else ""
    except Exception as e:
        out["nvcc_error"] = str(e)
try:
    import runner
    out["runner"] = runner.__version__
    import runner.entry, contract.payload, contract.result
except Exception as e:
    out["runner_error"] = f"{type(e).__name__}: {e}"
try:
    import vllm
    out["vllm"] = getattr(vllm, "__version__", "?")
except Exception:
    pass
print("KITEBENCH-VERSIONS " + json.dumps(out))
'''

#: The pinned GPU as the image sees it, and a matmul on it.
GPU = r'''
import json, subprocess
out = {}
try:
    out["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
except Exception as e:
    out["nvidia_smi_error"] = str(e)
try:
    import torch
    a = torch.randn(1024, 1024, device="cuda")
    b = (a @ a).sum().item()
    torch.cuda.synchronize()
    out["matmul"] = "ok"
    out["device"] = torch.cuda.get_device_name(0)
    out["count"] = torch.cuda.device_count()
except Exception as e:
    out["matmul_error"] = f"{type(e).__name__}: {e}"
print("KITEBENCH-GPU " + json.dumps(out))
'''


class ProbeContainer:
    """One container from the image with the host wrapper's isolation; result.json and logs."""

    def __init__(self, client: Any, image_id: str, settings: Any) -> None:
        self.client, self.image_id, self.settings = client, image_id, settings

    def run(self, env: dict[str, str], *, entrypoint: list[str] | None = None,
            command: list[str] | None = None, timeout_s: float = CONTAINER_TIMEOUT_S,
            settings: Any = None) -> dict[str, Any]:
        from docker.errors import APIError
        from requests.exceptions import ConnectionError as ReqConnectionError
        from requests.exceptions import ReadTimeout

        from contract.resultio import ResultFileError, new_key, read_result
        from host.container import container_kwargs

        work = Path(tempfile.mkdtemp(prefix="kitebench-validate-"))
        out = work / "out"
        out.mkdir()
        out.chmod(0o777)
        key = new_key()  # an image whose runner does not sign result.json fails as on a host
        kw = container_kwargs(settings or self.settings, image=self.image_id, output_dir=str(out),
                              host_env=env, key=key)
        if entrypoint is not None:
            kw["entrypoint"] = entrypoint
        if command is not None:
            kw["command"] = command
        container = None
        res: dict[str, Any] = {"timed_out": False}
        try:
            t0 = time.monotonic()
            try:
                container = self.client.containers.create(**kw)
                container.start()
            except APIError as e:
                res["start_error"] = " ".join(str(e).split())[:500]
                return res
            try:
                status = container.wait(timeout=timeout_s)
                res["exit_code"] = status.get("StatusCode")
            except (ReadTimeout, ReqConnectionError):
                container.kill()
                res["timed_out"] = True
                res["exit_code"] = None
            res["duration_s"] = round(time.monotonic() - t0, 2)
            res["logs"] = container.logs(stdout=True, stderr=True, tail=30).decode("utf-8", "replace")
            try:
                res["result"] = read_result(out / "result.json", key=key)
            except ResultFileError as e:
                res["result_error"] = str(e)
            return res
        finally:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
            shutil.rmtree(work, ignore_errors=True)


def payload_env(script: str, **extra: Any) -> dict[str, str]:
    from contract import codec

    data: dict[str, Any] = {"lang": "py", "mode": "test", "main": "main.py",
                            "sources": {"main.py": script}, "tests": [{"size": 1}]}
    data.update(extra)
    return {"SUBMISSION_PAYLOAD": codec.encode(data)}
