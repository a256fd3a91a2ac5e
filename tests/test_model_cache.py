"""The agent's start-up cache (runner/model/cache.py) against hostile forks, through real jobs.

Real install (the CPU vLLM venv's package, the shadow overlay), real sandbox, real
``python -m runner``; the server is a stand-in (``server_command``) that answers ``/health``,
reports what it finds in its cache dir and tries to write the shared root, so a job costs
seconds, not a vLLM start. The entry a trusted stock server would publish is published by the
test itself (the same ``publish``); that the reference server really publishes one is covered in
test_model_vllm.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from launcher.model_task import build_model_payload
from runner.model import cache as start_cache
from runner.sandbox import from_env
from tests.common import EXAMPLES, REPO, missing_prereq

pytestmark = [pytest.mark.vllm]

TASK = EXAMPLES / "vllm_tiny"

# The fork's "server": what it sees in its cache, then an attempt to plant a file in its own cache
# copy and in every dir of the shared root it can name; then /health 200 (the gate fails next).
SERVER = r"""
import http.server, json, os, pathlib, sys
shared, port = pathlib.Path(sys.argv[1]), int(sys.argv[2])
own = pathlib.Path(os.environ["VLLM_CACHE_ROOT"])
rep = {"cache": str(own), "marker": (own / "marker").is_file(), "poison": (own / "poison").exists()}
try:
    own.mkdir(parents=True, exist_ok=True); (own / "poison").write_text("fork")
    rep["wrote_own"] = True
except OSError as e:
    rep["wrote_own"] = repr(e)
planted = []
for d in [shared, *shared.glob("*"), *shared.glob("*/*")]:
    try:
        (d / "poison").write_text("fork"); planted.append(str(d))
    except OSError:
        pass
rep["planted"] = planted
rep["seen"] = sorted(p.name for p in shared.glob("*") if p.name != "poison")
print("KB-REPORT " + json.dumps(rep), flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    do_POST = do_GET
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


@pytest.fixture(scope="module")
def vllm_python() -> str:
    py = os.environ.get("KITEBENCH_VLLM_PYTHON")
    if not py or not Path(py).exists():
        missing_prereq("KITEBENCH_VLLM_PYTHON (the CPU vLLM venv, .ci/setup.d/50-vllm.sh) is not set")
    return str(py)


@pytest.fixture(scope="module")
def forks(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import subprocess

    out = tmp_path_factory.mktemp("forks")
    subprocess.run([vllm_python, str(TASK / "make_forks.py"), str(out)], check=True,
                   timeout=120, capture_output=True)
    return out


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _job(archive: Path, shared: Path, env: dict[str, str], out: Path) -> tuple[dict, dict]:
    import subprocess

    from contract import codec

    payload = build_model_payload(TASK, archive, mode="test")
    payload.model_cfg.server_command = ["{python}", "-c", SERVER, str(shared), "{port}"]
    out.mkdir(parents=True)
    run_env = dict(env, SUBMISSION_PAYLOAD=codec.encode(payload), KITEBENCH_OUTPUT_DIR=str(out))
    subprocess.run([sys.executable, "-m", "runner"], env=run_env, cwd=REPO, timeout=300,
                   capture_output=True, check=False)
    result = json.loads((out / "result.json").read_text())
    assert result["kitebench"]["stage"] == "perplexity", result.get("error")  # it was served
    log = (out / "model-logs" / "server.log").read_text()
    line = next(ln for ln in log.splitlines() if ln.startswith("KB-REPORT "))
    return result["kitebench"]["details"]["start_cache"], json.loads(line[len("KB-REPORT "):])


def test_a_fork_never_reads_an_entry_of_other_code_and_cannot_write_the_shared_cache(
    vllm_python: str, forks: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUBMISSION_", "KITEBENCH_"))}
    if not from_env(env).hardened:
        pytest.skip("sandbox none here: the shared start-up cache is not used at all (tested below)")
    shared = tmp_path / "start-cache"
    env.update(KITEBENCH_VLLM_PYTHON=vllm_python, PYTHONPATH=str(REPO),
               KITEBENCH_MODELS_DIR=str(tmp_path / "no-models"),
               **{start_cache.ENV_ROOT: str(shared)})

    # 1. the baseline fork (its files are stock's): a miss on an empty root
    info, rep = _job(forks / "baseline.tar.gz", shared, env, tmp_path / "a1")
    assert info["used"] and info["changed_files"] == 0 and info["hit"] is False
    stock_key = info["key"]
    assert rep["wrote_own"] is True
    assert not list(shared.rglob("poison"))  # what it "planted" landed in its own sandbox

    # 2. what a trusted stock server leaves (published as the reference server's would be)
    built = tmp_path / "trusted" / "vllm"
    built.mkdir(parents=True)
    (built / "marker").write_text("stock")
    assert start_cache.publish(shared, stock_key, built.parent, {"by": "test"})
    assert not start_cache.publish(shared, stock_key, built.parent, {"by": "again"})  # first wins
    before = _digest(shared)

    # 3. the same code again: reads a copy of the entry and may write that copy, not the entry
    info, rep = _job(forks / "baseline.tar.gz", shared, env, tmp_path / "a2")
    assert info["hit"] is True and info["key"] == stock_key
    assert rep["marker"] is True and rep["wrote_own"] is True
    assert rep["seen"] == []  # the root itself is out of its sight (hidden, or 0700)
    assert not rep["cache"].startswith(str(shared))

    # 4. a fork that changes model code: another key, no entry, none of the other fork's files
    info, rep = _job(forks / "perturbed.tar.gz", shared, env, tmp_path / "b")
    assert info["changed_files"] == 1 and info["key"] != stock_key and info["hit"] is False
    assert rep["marker"] is False and rep["poison"] is False

    assert _digest(shared) == before  # no job wrote the shared cache
    assert not list(shared.rglob("poison"))
    assert sorted(p.name for p in shared.iterdir()) == [stock_key]
    assert (shared.stat().st_mode & 0o777) == 0o700


def test_sandbox_none_never_uses_the_shared_cache(tmp_path: Path) -> None:
    """With the fork under the runner's uid it could write the root: no root at all."""
    assert start_cache.usable(str(tmp_path / "c"), hardened=False) is None
    assert not (tmp_path / "c").exists()
    assert start_cache.usable(str(tmp_path / "c"), hardened=True) == tmp_path / "c"


def test_code_delta_is_by_content(tmp_path: Path) -> None:
    installed = tmp_path / "site" / "vllm"
    shadow = tmp_path / "shadow" / "vllm"
    for root, text in ((installed, "A = 1\n"), (shadow, "A = 1\n")):
        (root / "m").mkdir(parents=True)
        (root / "m" / "same.py").write_text(text)
    (installed / "m" / "changed.py").write_text("B = 1\n")
    (shadow / "m" / "changed.py").write_text("B = 2\n")
    (shadow / "m" / "new.py").write_text("C = 1\n")
    delta = start_cache.code_delta(installed, shadow, ["vllm/m/same.py", "vllm/m/changed.py",
                                                       "vllm/m/new.py"])
    assert [d[0] for d in delta] == ["vllm/m/changed.py", "vllm/m/new.py"]
    assert delta[0][1] == hashlib.sha256(b"B = 2\n").hexdigest()
