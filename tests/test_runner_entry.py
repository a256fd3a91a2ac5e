"""``python -m runner`` on bad payloads: a failed result.json, its own error, a non-zero exit."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from contract import codec
from contract.payload import MAX_SOURCES_BYTES
from contract.result import RunnerExit
from tests.bombs import b64_bomb, zlib_bomb
from tests.common import PYTHON


def _enc(obj) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.b64encode(zlib.compress(raw)).decode()


def _py(**kw):
    return {"lang": "py", "main": "eval.py", "sources": {"eval.py": "print(1)"}, **kw}


# (id, SUBMISSION_PAYLOAD or None for unset, words expected in the error)
BAD = [
    ("missing", None, "SUBMISSION_PAYLOAD is not set"),
    ("empty", "", "payload is empty"),
    ("whitespace", " \n\t", "payload is empty"),
    ("bad-base64", "%%%not-base64%%%", "not valid base64"),
    ("bad-padding", "abcde", "not valid base64"),
    ("not-zlib", base64.b64encode(b"plain text, no zlib").decode(), "not zlib data"),
    ("truncated", base64.b64encode(zlib.compress(json.dumps(_py()).encode())[:-6]).decode(), "truncated"),
    ("trailing-junk", base64.b64encode(zlib.compress(b"{}") + b"xx").decode(), "after the zlib stream"),
    ("not-utf8", _enc(b"\xc3\x28 \xff"), "not UTF-8"),
    ("not-json", _enc(b"lang=py"), "not JSON"),
    ("json-array", _enc([1, 2, 3]), "must be a JSON object, got an array"),
    ("json-number", _enc(b"42"), "got a number"),
    ("no-lang", _enc({"main": "eval.py"}), "has no 'lang'"),
    ("unknown-lang", _enc({"lang": "fortran"}), "unknown lang 'fortran'"),
    ("unknown-mode", _enc(_py(mode="speedrun")), "unknown mode 'speedrun'"),
    ("wrong-type-tests", _enc(_py(tests={"size": 1})), "tests: Input should be a valid list"),
    ("wrong-type-sources", _enc(_py(sources="print(1)")), "sources: Input should be a valid dictionary"),
    ("negative-timeout", _enc(_py(test_timeout=-1)), "test_timeout: Input should be greater than 0"),
    ("huge-timeout", _enc(_py(benchmark_timeout=10**9)), "benchmark_timeout: Input should be less than or equal"),
    ("main-not-in-sources", _enc(_py(main="run.py")), "main 'run.py' is not one of the sources"),
    ("traversal-name", _enc(_py(sources={"eval.py": "", "../../etc/cron.d/x": "boom"})), "file name"),
    ("misspelt-key", _enc(_py(benchmark_timout=5)), "benchmark_timout: Extra inputs are not permitted"),
    ("huge-sources", _enc(_py(sources={"eval.py": "#" * (MAX_SOURCES_BYTES + 10)})), "over the limit of 8 MiB"),
    ("cu-bad-flag", _enc({"lang": "cu", "sources": {"a.cu": ""}, "compile_flags": ["; rm -rf /"]}), "must start with '-'"),
    ("model-no-archive", _enc({"lang": "model", "model_config": {"model_name": "m"}}), "exactly one of"),
    ("deep-nesting", _enc(b'{"lang": "py", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"), "nested too deeply"),
    ("bomb-90MiB-env", b64_bomb(90 << 20), "over the limit of 64.0 MiB"),
]


def _run(env: dict[str, str], payload: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(env)
    if payload is not None:
        env["SUBMISSION_PAYLOAD"] = payload
    return subprocess.run([PYTHON, "-m", "runner"], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("name", "payload", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_payload_leaves_a_failed_result(runner_env, name, payload, words):
    proc = _run(runner_env, payload)
    assert proc.returncode == RunnerExit.BAD_PAYLOAD, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    doc = json.loads((Path(runner_env["KITEBENCH_OUTPUT_DIR"]) / "result.json").read_text())
    assert doc["success"] is False
    assert words in doc["error"]
    assert doc["runs"] == {}
    assert doc["kitebench"]["stage"] in ("decode", "validate")
    assert doc["kitebench"]["exit_code"] == RunnerExit.BAD_PAYLOAD
    assert doc["error"] in proc.stderr  # one readable line for the job log


def test_every_bad_payload_has_its_own_error():
    errors = {}
    for name, payload, _ in BAD:
        try:
            codec.decode(payload)
        except codec.PayloadError as e:
            errors[name] = e.message
    assert len(errors) == len(BAD)
    # same kind of problem may share words, but the message always says which problem it is
    kinds = {n: m.split(":")[0].split("(")[0] for n, m in errors.items()}
    assert len(set(errors.values())) >= len(BAD) - 2, kinds


MEASURE = """
import os, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run([sys.executable, "-m", "runner"], capture_output=True)
wall = time.perf_counter() - t
print(p.returncode, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_one_gib_bomb_is_refused_with_bounded_memory(runner_env, tmp_path):
    """A 1 GiB zlib bomb (too big for an env string, so it comes as KITEBENCH_PAYLOAD_FILE)."""
    bomb = tmp_path / "bomb.b64"
    bomb.write_bytes(base64.b64encode(zlib_bomb(1 << 30)))
    env = dict(runner_env, KITEBENCH_PAYLOAD_FILE=str(bomb))
    out = subprocess.run([PYTHON, "-c", MEASURE], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    code, wall, peak_kib = int(out[0]), float(out[1]), int(out[2])
    print(f"1 GiB bomb: exit {code}, {wall:.2f} s wall, peak RSS {peak_kib / 1024:.0f} MiB")
    assert code == RunnerExit.BAD_PAYLOAD
    assert peak_kib < 150 * 1024
    doc = json.loads((Path(runner_env["KITEBENCH_OUTPUT_DIR"]) / "result.json").read_text())
    assert "decompressed payload" in doc["error"] and "64.0 MiB" in doc["error"]


def test_valid_payload_from_a_file(runner_env, tmp_path):
    """The file path decodes like the env string (then runs; the verdict is not the point here)."""
    f = tmp_path / "p.b64"
    f.write_text(_enc(_py(mode="nonsense")))
    env = dict(runner_env, KITEBENCH_PAYLOAD_FILE=str(f))
    proc = subprocess.run([PYTHON, "-m", "runner"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == RunnerExit.BAD_PAYLOAD
    assert "unknown mode 'nonsense'" in proc.stderr


def test_misconfigured_cap_is_an_internal_error_not_a_bad_payload(runner_env):
    env = dict(runner_env, KITEBENCH_MAX_PAYLOAD_BYTES="lots")
    proc = _run(env, _enc(_py()))
    assert proc.returncode == RunnerExit.INTERNAL
    doc = json.loads((Path(runner_env["KITEBENCH_OUTPUT_DIR"]) / "result.json").read_text())
    assert doc["kitebench"]["stage"] == "internal"
    assert "KITEBENCH_MAX_PAYLOAD_BYTES" in doc["error"]


def test_result_is_written_atomically_over_an_old_one(runner_env):
    out = Path(runner_env["KITEBENCH_OUTPUT_DIR"])
    (out / "result.json").write_text('{"success": true, "stale": 1}')
    _run(runner_env, "")
    doc = json.loads((out / "result.json").read_text())
    assert doc["success"] is False and "stale" not in doc
    assert [p.name for p in out.iterdir()] == ["result.json"]  # no temp files left behind


def test_python_dash_m_runner_is_importable_without_control_plane_modules():
    """The runner image installs only runner + pydantic: importing it must not pull in click,
    requests, yaml, docker or launcher."""
    code = (
        "import sys, runner.entry, contract.codec, contract.payload, contract.result\n"
        "bad = [m for m in ('click', 'requests', 'yaml', 'docker', 'launcher') if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_runner_entry_imports_nothing_heavy_before_main():
    """main() makes the runner undumpable and starts the GPU query before the contract (pydantic)
    and the executors are imported: importing runner.entry must not import them."""
    code = (
        "import sys, runner.entry\n"
        "print([m for m in ('pydantic', 'contract.payload', 'contract.result', 'runner.kernels') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_early_prctl_makes_the_runner_undumpable():
    code = (
        "import ctypes\nfrom runner.entry import _hide_from_same_user\n"
        "ok = _hide_from_same_user()\n"
        "print(ok, ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "0"]


def _fake_nvidia_smi(bindir: Path, body: str) -> None:
    bindir.mkdir()
    tool = bindir / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(0o755)


def test_the_gpu_query_gets_neither_the_key_nor_the_payload_nor_stdin(runner_env, tmp_path):
    """The query starts before the key and the payload are read: its tool gets /dev/null as
    stdin (with KITEBENCH_INPUT=stdin the key waits there) and no KITEBENCH_/SUBMISSION_ variable;
    what it answers is still the system of result.json."""
    from contract.resultio import read_result

    seen = tmp_path / "seen"
    _fake_nvidia_smi(tmp_path / "bin", f"/usr/bin/env > {seen}.env\n/bin/cat > {seen}.stdin\n"
                                       'echo "NVIDIA Fake 96GB"\n')
    env_key, stdin_key = "ab" * 32, "cd" * 32
    payload = codec.encode({"lang": "py", "main": "eval.py", "tests": [{"n": 1}], "sources": {
        "eval.py": 'import os\nos.write(int(os.environ["POPCORN_FD"]), b"check: pass\\n")\n'}})
    env = dict(runner_env, PATH=f"{tmp_path / 'bin'}{os.pathsep}{runner_env.get('PATH', '')}",
               KITEBENCH_INPUT="stdin", KITEBENCH_RESULT_KEY=env_key)
    proc = subprocess.run([PYTHON, "-m", "runner"], env=env, input=f"{stdin_key}\n{payload}",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == RunnerExit.PASSED, proc.stderr
    out = Path(runner_env["KITEBENCH_OUTPUT_DIR"]) / "result.json"
    result = read_result(out, key=stdin_key)
    assert (result.system.gpu, result.system.device_count, result.system.runtime) == (
        "NVIDIA Fake 96GB", 1, "CUDA")
    assert Path(f"{seen}.stdin").read_bytes() == b""
    tool_env = Path(f"{seen}.env").read_text()
    for secret in (env_key, stdin_key, payload[:40], "KITEBENCH_", "SUBMISSION_"):
        assert secret not in tool_env


def test_a_bad_payload_does_not_leave_the_gpu_query_running(runner_env, tmp_path):
    pid = tmp_path / "pid"
    _fake_nvidia_smi(tmp_path / "bin", f"echo $$ > {pid}\nexec /bin/sleep 60\n")
    env = dict(runner_env, PATH=f"{tmp_path / 'bin'}{os.pathsep}{runner_env.get('PATH', '')}")
    proc = _run(env, "")
    assert proc.returncode == RunnerExit.BAD_PAYLOAD
    doc = json.loads((Path(runner_env["KITEBENCH_OUTPUT_DIR"]) / "result.json").read_text())
    assert doc["system"]["gpu"] == "" and doc["system"]["runtime"] == "CPU"  # not asked, as before
    if pid.exists():  # the tool had started: it was killed with the runner's exit
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid.read_text()), 0)


def test_the_job_gets_the_environment_without_the_runners_own_pydantic_setting(runner_env):
    """The runner turns pydantic's plugins off for itself only: the submission's environment is
    the one the runner was given."""
    code = ('import os\nok = "PYDANTIC_DISABLE_PLUGINS" not in os.environ\n'
            'os.write(int(os.environ["POPCORN_FD"]), b"check: " + (b"pass" if ok else b"fail") + b"\\n")\n')
    payload = codec.encode({"lang": "py", "main": "eval.py", "tests": [{"n": 1}],
                            "sources": {"eval.py": code}})
    env = {k: v for k, v in runner_env.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    proc = _run(env, payload)
    assert proc.returncode == RunnerExit.PASSED, proc.stderr


def test_checkpoints_are_not_fsynced_and_the_final_result_is(tmp_path, monkeypatch):
    from contract import resultio
    from contract.result import FullResult
    from runner.context import RunContext

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(resultio.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    ctx = RunContext(env={}, output_dir=tmp_path, key="ab" * 32)
    ctx.checkpoint(FullResult(success=True), after="test")
    assert synced == []  # the checkpoint: renamed into place, not synced
    assert resultio.read_result(tmp_path / "result.json", key=ctx.key).kitebench.interrupted
    resultio.write_result(FullResult(success=True), tmp_path, key=ctx.key)
    assert len(synced) == 2  # the final result.json and its signature
    assert not resultio.read_result(tmp_path / "result.json", key=ctx.key).kitebench.interrupted
