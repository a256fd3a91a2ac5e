"""The model path end to end with REAL vLLM (the CPU build) and a tiny generated model.

Needs ``KITEBENCH_VLLM_PYTHON`` (set by .ci/setup.d/50-vllm.sh); skips locally without it, fails
in CI. One stock server is started for the whole module (it measures the perplexity baseline);
each fork that must be served starts its own, through ``python -m runner`` exactly as a job does.
Phase timings of the baseline run are printed (``-s``) for the record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launcher.model_task import build_model_payload
from runner.model.install import base_env
from tests.common import EXAMPLES
from tests.model_support import tree_digest
from tests.vllm_fixtures import run_job

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TASK = EXAMPLES / "vllm_tiny"
CACHE = Path(os.environ.get("KITEBENCH_CACHE", "/var/cache/kitebench"))


def test_baseline_fork_leaderboard(
    forks: Path,
    stock_baseline: float,
    installed: Path,
    job_env: dict,
    start_cache_dir: Path,
    tmp_path: Path,
) -> None:
    before = tree_digest(installed)
    payload = build_model_payload(TASK, forks / "baseline.tar.gz", mode="leaderboard")
    payload.model_cfg.perplexity_baseline = stock_baseline
    rc, result, took = run_job(payload, job_env, tmp_path / "out")
    assert rc == 0, result["error"]
    assert result["success"] is True and result["kitebench"]["passed"] is True
    assert list(result["runs"]) == ["test", "benchmark", "leaderboard"]
    assert all(r["run"]["passed"] for r in result["runs"].values())
    kb = result["kitebench"]
    assert kb["details"]["install"]["method"] == "overlay"
    assert set(kb["details"]["install"]["fork_files"]) == {
        "vllm/model_executor/layers/logits_processor.py",
        "vllm/sampling_params.py",
    }

    gate = result["runs"]["test"]["run"]["result"]
    assert gate["check"] == "pass"
    assert float(gate["perplexity.baseline"]) == stock_baseline
    assert abs(float(gate["perplexity"]) - stock_baseline) / stock_baseline <= 0.02
    assert int(gate["perplexity.tokens"]) > 100

    lb = result["runs"]["leaderboard"]["run"]["result"]
    shape_keys = kb["details"]["benchmarks"]["leaderboard"][0]["keys"]
    assert int(lb["benchmark.0.completed"]) == int(lb["benchmark.0.num_prompts"]) >= 20
    for key, value in shape_keys.items():  # every scalar bench key, as a string
        assert lb[f"benchmark.0.{key}"] == ("" if value is None else str(value))
    for key in (
        "request_throughput",
        "output_throughput",
        "mean_ttft_ms",
        "p99_tpot_ms",
        "duration",
    ):
        assert f"benchmark.0.{key}" in lb
    assert kb["score"] > 0
    assert kb["score"] == pytest.approx(float(lb["benchmark.0.request_throughput"]))
    assert float(lb["score"]) == kb["score"]

    assert kb["score_info"] == {
        "metric": "request_throughput",
        "unit": "req/s",
        "ascending": False,
    }
    # The audit: every request's count, 16 sampled prompts per run identical to stock greedy.
    audit = kb["details"]["audit"]
    assert set(audit["runs"]) == {"benchmark", "leaderboard"}
    for run in ("benchmark", "leaderboard"):
        (v,) = audit["runs"][run]
        assert v["passed"] and v["requests"] == 20 and len(v["sampled"]) == 16
        assert v["agreed"] == 16 and v["disagreeing"] == 0 and v["bad_counts"] == 0
        assert v["compared_tokens"] == v["sampled_tokens"] == 16 * 16
        assert result["runs"][run]["run"]["result"]["audit"] == "pass"
    # the two runs' prompts differ (another seed): answers memoised in one do not fit the other
    assert audit["runs"]["benchmark"][0]["reference"] != audit["runs"]["leaderboard"][0]["reference"]
    phases = [(p["name"], p["success"]) for p in kb["phases"] if p["name"] != "reference"]
    assert phases == [
        ("install", True),
        ("server_start", True),
        ("perplexity", True),
        ("benchmark", True),
        ("benchmark", True),
        ("audit", True),
        ("collect", True),
    ]
    print(
        "\nbaseline run phases: "
        + ", ".join(f"{p['name']} {p['duration_s']:.1f} s" for p in kb["phases"])
        + f"; total {took:.1f} s"
    )
    assert (tmp_path / "out" / "model-logs" / "server.log").stat().st_size > 0
    assert tree_digest(installed) == before
    # The stock reference server (trusted, a cache of its own) leaves the start-up cache's entry
    # for stock code, which this fork's files are: later baseline jobs start warm.
    sc = kb["details"]["start_cache"]
    if sc["used"]:
        assert sc["changed_files"] == 0
        if "reference" in kb["details"]:
            assert sc["published"] is True
            assert (start_cache_dir / sc["key"] / "about.json").is_file()


CHEATS = {
    # fork: what the error must say
    "canned": "16 of 16 sampled prompts disagree with stock vLLM's greedy output",
    "short": "20 of 20 requests did not return output_len=16 tokens (first: prompt 0: "
    "1 token(s) counted by the client, its usage claimed 16)",
    "garbage": "16 of 16 sampled prompts disagree with stock vLLM's greedy output",
}


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_cheating_fork_fails_the_audit(
    cheat: str, cheat_forks: Path, stock_baseline: float, job_env: dict, tmp_path: Path
) -> None:
    """Each passes the gate (its echo requests reach the real model) and cheats only on
    benchmark-shaped requests: the audit of the timed run's own outputs catches it."""
    payload = build_model_payload(TASK, cheat_forks / f"{cheat}.tar.gz", mode="benchmark")
    payload.model_cfg.perplexity_baseline = stock_baseline
    rc, result, _ = run_job(payload, job_env, tmp_path / "out")
    kb = result["kitebench"]
    assert rc == 1, result["error"]
    assert result["success"] is False and kb["stage"] == "audit"
    assert result["error"].startswith("audit of the timed run failed: run benchmark shape 0: ")
    assert CHEATS[cheat] in result["error"]
    assert kb["score"] is None and kb["score_info"] is None
    run = result["runs"]["benchmark"]["run"]
    assert run["passed"] is False and run["result"]["check"] == "fail"
    assert run["result"]["audit"] == "fail" and run["result"]["perplexity.tokens"]  # gate passed
    assert CHEATS[cheat] in run["stderr"]
    (v,) = kb["details"]["audit"]["runs"]["benchmark"]
    if cheat == "short":
        assert v["bad_counts"] == 20 and v["first_bad_count"] == {
            "prompt": 0, "seen": 1, "expected": 16, "usage_claimed": 16}
    else:
        assert v["bad_counts"] == 0  # right counts: only the comparison with stock catches it
        assert v["disagreeing"] == 16 and v["first_disagreement"]["position"] < 16
    names = [(p["name"], p["success"]) for p in kb["phases"] if p["name"] != "reference"]
    assert names[-1] == ("audit", False) and ("benchmark", True) in names


def test_fork_that_perturbs_logits_fails_the_gate(
    forks: Path, stock_baseline: float, job_env: dict, tmp_path: Path
) -> None:
    payload = build_model_payload(TASK, forks / "perturbed.tar.gz", mode="benchmark")
    payload.model_cfg.perplexity_baseline = stock_baseline
    rc, result, _ = run_job(payload, job_env, tmp_path / "out")
    assert rc == 1
    assert result["success"] is False and result["kitebench"]["stage"] == "perplexity"
    ppl = result["kitebench"]["details"]["perplexity"]
    assert ppl["baseline"] == stock_baseline and ppl["relative_deviation"] > 0.02
    assert f"vs baseline {stock_baseline:.6g}" in result["error"]
    assert f"perplexity {ppl['measured']:.6g}" in result["error"]
    run = result["runs"]["benchmark"]["run"]
    assert run["passed"] is False and run["result"]["check"] == "fail"
    assert "benchmarks" not in result["kitebench"]["details"]  # no throughput for a failed gate
    assert result["kitebench"]["score"] is None
    sc = result["kitebench"]["details"]["start_cache"]
    if sc["used"]:  # its code is not stock's: never the stock entry, even when there is one
        assert sc["changed_files"] == 1 and sc["hit"] is False


def test_unknown_ranking_metric_fails_the_benchmark_stage(
    forks: Path, stock_baseline: float, job_env: dict, start_cache_dir: Path, tmp_path: Path
) -> None:
    payload = build_model_payload(TASK, forks / "baseline.tar.gz", mode="benchmark")
    payload.model_cfg.perplexity_baseline = stock_baseline
    payload.model_cfg.ranking_metric = "tokens_per_joule"
    entries = [p.name for p in start_cache_dir.iterdir() if not p.name.startswith(".")]
    rc, result, _ = run_job(payload, job_env, tmp_path / "out")
    sc = result["kitebench"]["details"]["start_cache"]
    if sc["used"]:  # the baseline fork reads the stock entry when an earlier job left one
        assert sc["hit"] is (sc["key"] in entries)
        print(f"\nbaseline server start, cache hit {sc['hit']}: "
              f"{result['kitebench']['details']['server']['startup_s']:.1f} s")
    assert rc == 1 and result["kitebench"]["stage"] == "benchmark"
    assert "ranking metric 'tokens_per_joule' is not a finite number" in result["error"]
    assert "request_throughput" in result["error"]  # the keys that do exist
    run = result["runs"]["benchmark"]["run"]
    assert run["passed"] is False and run["result"]["perplexity.tokens"]  # the gate had passed
    assert run["result"]["benchmark.0.completed"] == "20"  # what was measured is kept
    assert [(p["name"], p["success"]) for p in result["kitebench"]["phases"]] == [
        ("install", True),
        ("server_start", True),
        ("perplexity", True),
        ("benchmark", False),
    ]


def test_fork_that_breaks_import(
    forks: Path, installed: Path, job_env: dict, tmp_path: Path
) -> None:
    before = tree_digest(installed)
    payload = build_model_payload(TASK, forks / "broken_import.tar.gz")
    rc, result, took = run_job(payload, job_env, tmp_path / "out", timeout=300)
    assert rc == 1 and result["kitebench"]["stage"] == "install"
    assert "breaks `import vllm`" in result["error"]
    assert "_kitebench_no_such_module" in result["error"]  # the import error's own tail
    # the install does not import vllm (the server's start does); the check names the stage
    assert [(p["name"], p["success"]) for p in result["kitebench"]["phases"]] == [
        ("install", True),
        ("server_start", False),
    ]
    assert tree_digest(installed) == before
    # The stock vLLM still imports (the fork was visible only to the check's process).
    subprocess.run(
        [job_env["KITEBENCH_VLLM_PYTHON"], "-c", "import vllm"],
        check=True,
        timeout=120,
        capture_output=True,
        env=base_env(dict(os.environ)),
    )


def _alive(marker: str) -> bool:
    out = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True).stdout
    return any(marker in line and "ps -eww" not in line for line in out.splitlines())


def test_server_that_never_becomes_healthy(forks: Path, job_env: dict, tmp_path: Path) -> None:
    marker = f"kitebench-sleeper-{os.getpid()}"
    payload = build_model_payload(TASK, forks / "baseline.tar.gz")
    payload.model_cfg.server_command = [
        "{python}",
        "-c",
        f"import time; print('loading {marker}', flush=True); time.sleep(900)",
    ]
    payload.model_cfg.vllm_args = []
    payload.model_cfg.server_startup_timeout = 10
    rc, result, took = run_job(payload, job_env, tmp_path / "out", timeout=300)
    assert rc == 1 and result["kitebench"]["stage"] == "server_start"
    assert "within server_startup_timeout=10 s" in result["error"]
    assert f"loading {marker}" in result["error"]  # the log tail
    start = next(p for p in result["kitebench"]["phases"] if p["name"] == "server_start")
    assert start["success"] is False and 10 <= start["duration_s"] < 60
    assert not _alive(marker)  # stopped with its process group


def test_cancel_during_server_start_keeps_finished_phases(
    forks: Path, job_env: dict, tmp_path: Path
) -> None:
    marker = f"kitebench-cancelled-{os.getpid()}"
    payload = build_model_payload(TASK, forks / "baseline.tar.gz")
    payload.model_cfg.server_command = [
        "{python}",
        "-c",
        f"import time; time.sleep(900)  # {marker}",
    ]
    out = tmp_path / "out"

    def cancel_when_installed(proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not _alive(marker):
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)

    rc, result, _ = run_job(payload, job_env, out, timeout=300, on_started=cancel_when_installed)
    assert rc == 4
    kb = result["kitebench"]
    assert kb["interrupted"] is True and kb["stage"] == "interrupted"
    assert "finished before the interruption" in result["error"]
    assert kb["phases"][0]["name"] == "install" and kb["phases"][0]["success"] is True
    assert kb["details"]["install"]["method"] == "overlay"
    assert not _alive(marker)


_SETUP_PY = """\
from setuptools import Extension, setup
setup(name="vllm-native-fork-test", version="0.0.1", packages=["vllm"],
      ext_modules=[Extension("vllm._native", ["vllm/_native.c"])])
"""
_NATIVE_C = """\
#include <Python.h>
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_native", "", -1, methods};
PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&mod); }
"""


def test_native_fork_takes_pip_install_e_into_a_private_venv(
    vllm_python: str, installed: Path, tmp_path: Path
) -> None:
    from runner.model.install import install
    from runner.model.util import StageError

    fork = tmp_path / "fork"
    (fork / "vllm").mkdir(parents=True)
    (fork / "setup.py").write_text(_SETUP_PY)
    (fork / "vllm" / "_native.c").write_text(_NATIVE_C)
    (fork / "vllm" / "__init__.py").write_text(
        "from vllm._native import answer\n__version__ = 'fork'\n"
    )
    before = tree_digest(installed)
    inst = install(fork, tmp_path / "work", vllm_python, dict(os.environ), timeout=480)
    assert inst.method == "editable" and inst.version == "fork"
    assert "vllm/_native.c" in inst.fork_files
    env = base_env(dict(os.environ))
    env.update(inst.env)
    out = subprocess.run(
        [inst.python, "-c", "import vllm, torch; print(vllm.answer(), vllm.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42", str(fork / "vllm" / "__init__.py")]  # the fork, built
    assert tree_digest(installed) == before

    (fork / "setup.py").write_text("raise SystemExit('kitebench: this fork cannot be built')\n")
    with pytest.raises(StageError) as info:
        install(fork, tmp_path / "work2", vllm_python, dict(os.environ), timeout=480)
    assert (
        info.value.stage == "install" and "pip install -e of the fork failed" in info.value.message
    )
    assert "this fork cannot be built" in info.value.message  # the install log tail


# The fork's "server": probes what it can reach, then answers /health (and nothing else, so the
# gate fails fast). Its findings go to its log, which the job copies next to result.json.
_PROBE = r"""
import http.server, json, os, sys
from pathlib import Path
work = Path.cwd().parent  # its cwd is <work>/sub
found = {"uid": os.getuid()}
try:
    (work / "bench" / "planted.json").write_text("{}")
    found["bench_write"] = "ok"
except OSError as e:
    found["bench_write"] = type(e).__name__
runners = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        continue
    if cmd[1:3] == [b"-m", b"runner"]:
        runners.append(int(pid))
found["runners_seen"] = len(runners)
signals = []
for pid in runners:
    try:
        os.kill(pid, 0)
        signals.append("ok")
    except OSError as e:
        signals.append(type(e).__name__)
found["signal"] = signals
print("KBPROBE " + json.dumps(found), flush=True)

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    do_POST = do_GET

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_fork_server_cannot_touch_the_measurement(
    forks: Path, job_env: dict, tmp_path: Path
) -> None:
    """The fork's server runs in the job's sandbox: it cannot write the bench client's result
    dir nor signal the runner (uid modes: another uid; ns modes: a read-only view and a pid
    namespace in which the runner does not exist)."""
    from runner import sandbox

    sb = sandbox.from_env(job_env)
    if not sb.hardened:
        pytest.skip("no sandbox on this machine (mode none): the fork shares the runner's uid")
    payload = build_model_payload(TASK, forks / "baseline.tar.gz", mode="benchmark")
    payload.model_cfg.server_command = ["{python}", "-c", _PROBE, "{port}"]
    payload.model_cfg.vllm_args = []
    rc, result, _ = run_job(payload, job_env, tmp_path / "out", timeout=300)
    assert rc == 1 and result["kitebench"]["stage"] == "perplexity"  # it served no completions
    assert result["kitebench"]["details"]["sandbox"]["mode"] == sb.mode
    log = (tmp_path / "out" / "model-logs" / "server.log").read_text()
    found = json.loads(log.split("KBPROBE ", 1)[1].splitlines()[0])
    print(f"\nsandbox {sb.mode}: what the fork's server could do: {found}")
    # EACCES (another uid), EROFS (read-only view) or not there at all (an empty /tmp)
    assert found["bench_write"] in ("PermissionError", "OSError", "FileNotFoundError")
    if sb.separate_uid:
        assert found["uid"] == sb.uid != os.getuid()
        assert found["signal"] and set(found["signal"]) == {"PermissionError"}
    if sb.namespaces:
        assert found["runners_seen"] == 0  # not even visible
    assert "ok" not in found["signal"]
