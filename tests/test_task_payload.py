"""task.yml → payload, and the `kitebench payload encode|decode` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contract import codec
from contract.payload import CuPayload, PyPayload, dump_payload
from launcher.errors import TaskError
from launcher.task import build_config, build_payload, load_task
from tests.taskdirs import write_cu_task, write_py_task


def kb(*args: str, stdin: str | None = None, env: dict[str, str] | None = None):
    full_env = {k: v for k, v in os.environ.items() if k != "SUBMISSION_PAYLOAD"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "kitebench", *args], input=stdin,
                          capture_output=True, text=True, env=full_env, timeout=60)


def test_py_task_round_trip(tmp_path):
    task = write_py_task(tmp_path)
    payload = build_payload(task, task / "submission_ok.py", mode="leaderboard")
    assert isinstance(payload, PyPayload)
    assert payload.sources["submission.py"] == (task / "submission_ok.py").read_text()
    assert payload.sources["utils.py"] == (tmp_path / "problems" / "utils.py").read_text()  # ../
    assert payload.main == "eval.py"
    assert payload.tests == [{"size": 127, "seed": 4242}, {"size": 128, "seed": 5236}]
    assert (payload.test_timeout, payload.benchmark_timeout, payload.ranked_timeout) == (60, 90, 420)
    assert payload.ranking_by == "geom" and payload.mode == "leaderboard"
    back = codec.decode(codec.encode(payload))
    assert back == payload
    assert dump_payload(back) == dump_payload(payload)


def test_cu_task_round_trip_splits_sources_and_headers(tmp_path):
    task = write_cu_task(tmp_path)
    payload = build_payload(task, task / "submission.cu", mode="benchmark", arch="90a")
    assert isinstance(payload, CuPayload)
    assert set(payload.sources) == {"eval.cu", "submission.cu"}
    assert set(payload.headers) == {"task.h"}
    assert payload.defines == {"NDEBUG": "1"}
    assert payload.compile_flags == ["-O3", "--use_fast_math"]
    assert payload.arch == "90a"
    assert codec.decode(codec.encode(payload)) == payload


def test_cli_encode_then_decode_gives_back_the_config(tmp_path):
    task = write_py_task(tmp_path)
    enc = kb("payload", "encode", str(task), "--submission", str(task / "submission_ok.py"),
             "--mode", "benchmark")
    assert enc.returncode == 0, enc.stderr
    text = enc.stdout.strip()
    expected = build_config(load_task(task), (task / "submission_ok.py").read_text(), mode="benchmark")

    for how in ("stdin", "env", "file"):
        if how == "stdin":
            dec = kb("payload", "decode", stdin=text)
        elif how == "env":
            dec = kb("payload", "decode", env={"SUBMISSION_PAYLOAD": text}, stdin="")
        else:
            (tmp_path / "p.txt").write_text(text)
            dec = kb("payload", "decode", "--file", str(tmp_path / "p.txt"))
        assert dec.returncode == 0, (how, dec.stderr)
        doc = json.loads(dec.stdout)
        for key, value in expected.items():
            assert doc[key] == value, (how, key)


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        (lambda t: (t / "task.yml").unlink(), "no task.yml"),
        (lambda t: (t / "task.yml").write_text("files: [\n"), "not valid YAML"),
        (lambda t: (t / "reference.py").unlink(), "'reference.py' (for 'reference.py') not found"),
        (lambda t: (t / "task.yml").write_text("lang: rust\n"), "lang must be py, cu or model"),
    ],
)
def test_broken_tasks_give_one_line_errors(tmp_path, setup, words):
    task = write_py_task(tmp_path)
    setup(task)
    with pytest.raises(TaskError, match=words.replace("(", r"\(").replace(")", r"\)")):
        build_payload(task, task / "submission_ok.py")
    proc = kb("payload", "encode", str(task), "--submission", str(task / "submission_ok.py"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_missing_submission_is_a_usage_error(tmp_path):
    task = write_py_task(tmp_path)
    proc = kb("payload", "encode", str(task))
    assert proc.returncode == 2 and "needs a submission for 'submission.py'" in proc.stderr
    proc = kb("payload", "encode", str(task), "-s", str(tmp_path / "nope.py"))
    assert proc.returncode == 2 and "not found" in proc.stderr


@pytest.mark.parametrize("text", ["", "@@@", "eJwrSS0u0c3MS8lXSM7PSy1KBQBFCQcQ"])
def test_decode_errors_are_one_line_exit_2(text):
    proc = kb("payload", "decode", stdin=text)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: payload") and proc.stderr.count("\n") == 1


def test_encode_refuses_over_the_inline_limit_unless_told(tmp_path):
    import base64
    import random

    task = write_py_task(tmp_path)
    big = tmp_path / "big.py"
    big.write_text("X = '" + base64.b64encode(random.Random(0).randbytes(120_000)).decode() + "'\n")
    proc = kb("payload", "encode", str(task), "-s", str(big))
    assert proc.returncode == 2 and "over the limit of 96.0 KiB" in proc.stderr
    proc = kb("payload", "encode", str(task), "-s", str(big), "--no-limit")
    assert proc.returncode == 0 and len(proc.stdout) > 96 * 1024


def test_decode_raw_shows_unvalidated_json():
    text = codec.encode_raw({"lang": "py", "anything": [1, 2]})
    proc = kb("payload", "decode", "--raw", stdin=text)
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"lang": "py", "anything": [1, 2]}
    proc = kb("payload", "decode", stdin=text)
    assert proc.returncode == 2 and "payload does not match the contract" in proc.stderr


def test_unexpected_errors_are_one_line_not_a_traceback(tmp_path):
    """A task dir that is a file of another kind: the CLI never prints a bare traceback."""
    f = tmp_path / "task.yml"
    f.write_bytes(b"\xff\xfe\x00")
    proc = kb("payload", "encode", str(f), "-s", str(f))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert Path(f).exists()
