"""Model path pieces that run anywhere: perplexity math and validity rules, bench result parsing
and scoring, the server lifecycle with real processes, the shadow overlay (the launcher's
payload building: test_model_task.py)."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.payload import BenchmarkShape
from launcher.model_task import build_model_payload
from runner.model import bench, perplexity
from runner.model.server import Server, ServerSpec, resolve_model
from runner.model.util import StageError
from tests.common import EXAMPLES
from tests.model_support import fork_archive as _archive

TASK = EXAMPLES / "vllm_tiny"


def _resp(lps: list, prompt_tokens: int | None = None) -> dict:
    n = len(lps) if prompt_tokens is None else prompt_tokens
    return {"choices": [{"logprobs": {"token_logprobs": lps}}], "usage": {"prompt_tokens": n}}


# ---- perplexity -------------------------------------------------------------------------------


def test_perplexity_is_token_weighted_over_all_documents() -> None:
    a = perplexity.score_response(_resp([None, -1.0, -2.0, -3.0]), 0)
    b = perplexity.score_response(_resp([None, -4.0]), 1)
    p = perplexity.combine([a, b])
    assert p.tokens == 4 and p.documents == 2
    assert p.perplexity == pytest.approx(math.exp(10.0 / 4))
    # Not the mean of per-document perplexities:
    assert p.perplexity != pytest.approx((math.exp(2.0) + math.exp(4.0)) / 2)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_resp([None, -1.0, float("nan")]), "not a valid log-probability"),
        (_resp([None, -1.0, -9999.0]), "clamped"),
        (_resp([None, -1.0, -2.0], prompt_tokens=4), "misaligned"),
        (_resp([-0.5, -1.0]), "expected null"),
        (_resp([None, "x"]), "not a number"),
        (_resp([None, 0.7]), "not a valid log-probability"),
        (_resp([None]), "fewer than 2 tokens"),
        ({"choices": []}, "no choices"),
    ],
)
def test_untrustworthy_answers_fail_the_gate(body: dict, reason: str) -> None:
    with pytest.raises(perplexity.GateError, match=reason):
        perplexity.score_response(body, 0)


def test_judge_relative_tolerance() -> None:
    p = perplexity.Perplexity(perplexity=102.0, tokens=10, documents=1, sum_logprob=-46.0)
    ok = perplexity.judge(p, 100.0, 0.02)
    assert ok.passed and ok.relative_deviation == pytest.approx(0.02)
    bad = perplexity.judge(p, 99.0, 0.02)
    assert not bad.passed and "outside the tolerance" in bad.message() and "102" in bad.message()
    ungated = perplexity.judge(p, None, 0.02)
    assert ungated.passed and not ungated.gated


def test_documents_split_long_text_at_whitespace() -> None:
    text = "short one\n\n" + " ".join(["word"] * 100) + "\n\n\n"
    docs = perplexity.documents(text, 64)
    assert docs[0] == "short one"
    assert all(len(d) <= 64 for d in docs)
    assert " ".join(docs[1:]).split() == ["word"] * 100
    assert perplexity.documents(perplexity.default_corpus(), 2000)  # shipped with the kit


# ---- bench parsing and scoring ----------------------------------------------------------------


def _shape_result(keys: dict, index: int = 0, n: int = 20) -> bench.ShapeResult:
    shape = BenchmarkShape(num_prompts=n, input_len=32, output_len=16)
    return bench.ShapeResult(index, shape, keys, ["x"], 1.0, Path("r.json"), Path("/nonexistent"))


def test_scalar_keys_and_result_strings() -> None:
    data = {
        "request_throughput": 12.5,
        "completed": 20,
        "failed": 0,
        "label": None,
        "backend": "openai",
        "latencies": [0.1, 0.2],
        "nested": {"a": 1},
    }
    keys = bench.scalar_keys(data)
    assert set(keys) == {"request_throughput", "completed", "failed", "label", "backend"}
    strings = bench.result_strings([_shape_result(keys)])
    assert strings["benchmark.0.request_throughput"] == "12.5"
    assert strings["benchmark.0.label"] == ""
    assert strings["benchmark-count"] == "1" and strings["benchmark.0.status"] == "pass"
    assert all(isinstance(v, str) for v in strings.values())


def test_score_and_metric_checks() -> None:
    r = _shape_result({"request_throughput": 10.0, "completed": 20, "failed": 0})
    assert bench.metric_of(r, "request_throughput") == 10.0
    with pytest.raises(StageError, match="ranking metric 'nope'.*numeric keys: completed"):
        bench.metric_of(r, "nope")
    assert bench.combine([1.0, 4.0], "last") == 4.0
    assert bench.combine([1.0, 4.0], "mean") == 2.5
    assert bench.combine([1.0, 4.0], "geom") == pytest.approx(2.0)
    assert bench.lower_is_better("mean_ttft_ms") and not bench.lower_is_better("request_throughput")
    bench.check_complete(r)
    with pytest.raises(StageError, match="18 of 20 requests completed, 2 failed"):
        bench.check_complete(_shape_result({"completed": 18, "failed": 2}))


def test_bench_argv_is_explicit(tmp_path: Path) -> None:
    argv = bench.bench_argv(
        ["vllm", "bench", "serve"],
        base_url="http://127.0.0.1:1",
        model="m",
        tokenizer="/models/m",
        shape=BenchmarkShape(num_prompts=20, input_len=32, output_len=16),
        seed=7,
        result_dir=tmp_path,
        result_name="r.json",
    )
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert argv[:3] == ["vllm", "bench", "serve"]
    for flag, value in {
        "--temperature": "0",
        "--seed": "7",
        "--num-prompts": "20",
        "--random-input-len": "32",
        "--random-output-len": "16",
        "--dataset-name": "random",
        "--backend": "openai",
    }.items():
        assert argv[argv.index(flag) + 1] == value, flag
    assert "--save-result" in argv and argv[argv.index("--result-dir") + 1] == str(tmp_path)
    assert flags  # parsed


# ---- server lifecycle with real processes -----------------------------------------------------


def _spec(tmp_path: Path, code: str) -> ServerSpec:
    return ServerSpec(
        python=sys.executable,
        model="m",
        served_model_name="m",
        log=tmp_path / "s.log",
        cwd=tmp_path,
        env=dict(os.environ),
        command=["{python}", "-c", code],
    )


def _alive(marker: str) -> bool:
    out = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True).stdout
    return any(marker in line and "ps -eww" not in line for line in out.splitlines())


def test_server_that_never_becomes_healthy_times_out_with_log_tail(tmp_path: Path) -> None:
    marker = f"kitebench-never-healthy-{os.getpid()}"
    code = f"import time; print('booting {marker}', flush=True); time.sleep(300)"
    srv = Server(_spec(tmp_path, code))
    t0 = time.monotonic()
    with pytest.raises(StageError) as info, srv:
        srv.start(timeout=3)
    assert time.monotonic() - t0 < 60
    assert info.value.stage == "server_start"
    assert (
        "did not become healthy" in info.value.message and f"booting {marker}" in info.value.message
    )
    assert not _alive(marker)


def test_server_that_dies_fails_early(tmp_path: Path) -> None:
    # Braces in the command are not placeholders: they reach the process unchanged.
    code = "import sys; d = {'code': 3}; print('bad flag --xyz', flush=True); sys.exit(d['code'])"
    srv = Server(_spec(tmp_path, code))
    t0 = time.monotonic()
    with pytest.raises(StageError, match=r"exited with code 3(.|\n)*bad flag --xyz"), srv:
        srv.start(timeout=120)
    assert time.monotonic() - t0 < 60


def test_server_healthy_and_stopped_with_its_process_group(tmp_path: Path) -> None:
    marker = f"kitebench-grandchild-{os.getpid()}"
    # A stand-in server that answers /health and leaves a grandchild behind, as vLLM's engine does.
    code = (
        "import http.server, subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'])\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200 if self.path == '/health' else 404); self.end_headers()\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
    )
    spec = _spec(tmp_path, code)
    spec.command = ["{python}", "-c", code, "{port}"]
    with Server(spec) as srv:
        srv.start(timeout=60)
        assert srv.alive()
        deadline = time.monotonic() + 20
        while not _alive(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(marker)
    assert not _alive(marker)


def test_resolve_model_prefers_the_models_dir(tmp_path: Path) -> None:
    (tmp_path / "tiny").mkdir()
    assert resolve_model("tiny", str(tmp_path)) == str(tmp_path / "tiny")
    assert resolve_model("org/other", str(tmp_path)) == "org/other"


def test_vllm_probes_find_the_fork_in_a_path_with_spaces_and_refuse_another(
    tmp_path: Path,
) -> None:
    """Both checks of an install read where ``vllm`` comes from: a fork under a dir whose name
    holds spaces is found (version too), and a ``vllm`` from anywhere else is refused."""
    from runner.model.install import import_check, resolve_check

    fork = tmp_path / "a fork dir" / "vllm"
    fork.mkdir(parents=True)
    (fork / "__init__.py").write_text("__version__ = '0.0 fork'\n")
    env = {**os.environ, "PYTHONPATH": str(fork.parent)}
    resolve_check(sys.executable, env, fork, tmp_path, 60, None)
    assert import_check(sys.executable, env, fork, tmp_path, 60, None) == "0.0 fork"
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(StageError, match="does not resolve to the fork"):
        resolve_check(sys.executable, env, other, tmp_path, 60, None)
    with pytest.raises(StageError, match=r"did not load the fork \(it loaded .*a fork dir"):
        import_check(sys.executable, env, other, tmp_path, 60, None)


# ---- install: the shadow overlay (a stand-in "installed" package; real vLLM in test_model_vllm) --


def test_shadow_overlay_never_writes_into_the_installed_package(tmp_path: Path) -> None:
    from runner.model.install import build_shadow, native_sources

    installed = tmp_path / "site" / "vllm"
    (installed / "layers").mkdir(parents=True)
    (installed / "__init__.py").write_text("STOCK = True\n")
    (installed / "layers" / "logits.py").write_text("def f(): return 'stock'\n")
    (installed / "layers" / "pkgdir").mkdir()
    fork = tmp_path / "fork"
    (fork / "vllm" / "layers").mkdir(parents=True)
    (fork / "vllm" / "layers" / "logits.py").write_text("def f(): return 'fork'\n")
    (fork / "vllm" / "new_module.py").write_text("NEW = 1\n")
    (fork / "vllm" / "__pycache__").mkdir()
    (fork / "vllm" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    assert native_sources(fork) == []

    taken = build_shadow(installed, fork / "vllm", tmp_path / "shadow")
    shadow = tmp_path / "shadow" / "vllm"
    assert sorted(taken) == ["vllm/layers/logits.py", "vllm/new_module.py"]
    assert (shadow / "__init__.py").is_symlink()  # unchanged files: links to the installed ones
    assert not (shadow / "layers" / "logits.py").is_symlink()
    assert (shadow / "layers" / "logits.py").read_text() == "def f(): return 'fork'\n"
    assert (installed / "layers" / "logits.py").read_text() == "def f(): return 'stock'\n"
    assert not (shadow / "__pycache__" / "x.cpython-311.pyc").exists()
    out = subprocess.run(
        [sys.executable, "-c", "import vllm.layers.logits as m; print(m.f())"],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "shadow")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "fork"

    (fork / "vllm" / "layers" / "pkgdir").write_text("not a dir\n")
    with pytest.raises(StageError, match="would replace a directory"):
        build_shadow(installed, fork / "vllm", tmp_path / "shadow2")
    (fork / "vllm" / "layers" / "kernel.cu").write_text("// native\n")
    assert native_sources(fork) == ["vllm/layers/kernel.cu"]


def _digest_all(root: Path) -> str:
    """Every file under ``root``, bytecode included, with its mtime."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            h.update(f"{path.relative_to(root)}\0{path.stat().st_mtime_ns}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_shadow_links_stock_bytecode_but_never_for_a_fork_module(tmp_path: Path) -> None:
    """The server imports stock modules from the installed bytecode (no compile per start), a
    fork's module from its own source; nothing is written into the installed tree."""
    import compileall

    from runner.model.install import build_shadow

    installed = tmp_path / "site" / "vllm"
    (installed / "layers" / "deep").mkdir(parents=True)
    (installed / "other").mkdir()
    (installed / "__init__.py").write_text("")
    (installed / "layers" / "__init__.py").write_text("")
    (installed / "layers" / "logits.py").write_text("def f(): return 'stock'\n")
    (installed / "layers" / "norm.py").write_text("def g(): return 'stock norm'\n")
    (installed / "layers" / "deep" / "__init__.py").write_text("")
    (installed / "other" / "__init__.py").write_text("X = 1\n")
    assert compileall.compile_dir(installed, quiet=1)
    before = _digest_all(installed.parent)
    fork = tmp_path / "fork"
    (fork / "vllm" / "layers").mkdir(parents=True)
    (fork / "vllm" / "layers" / "logits.py").write_text("def f(): return 'fork'\n")

    build_shadow(installed, fork / "vllm", tmp_path / "shadow")
    shadow = tmp_path / "shadow" / "vllm"
    assert (shadow / "other").is_symlink()  # an untouched subtree: one link
    assert (shadow / "layers" / "deep").is_symlink()
    cache = shadow / "layers" / "__pycache__"
    assert cache.is_dir() and not cache.is_symlink()  # its own dir: a write lands in the shadow
    names = sorted(p.name.split(".")[0] for p in cache.iterdir())
    assert names == ["__init__", "norm"]  # stock bytecode, not for the fork's logits.py
    assert all(p.is_symlink() for p in cache.iterdir())
    code = (
        "import sys, vllm.layers.logits as a, vllm.layers.norm as b, vllm.other as c; "
        "print(a.f(), b.g(), c.X, b.__cached__)"
    )
    for env_add in ({}, {"PYTHONDONTWRITEBYTECODE": "1"}):
        out = subprocess.run(
            [sys.executable, "-v", "-c", code],
            env={**os.environ, "PYTHONPATH": str(tmp_path / "shadow"), **env_add},
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
        assert out.stdout.split()[:4] == ["fork", "stock", "norm", "1"], out.stderr
        # -v names where each code object came from: stock's from bytecode, the fork's not.
        assert f"code object from '{cache}/norm." in out.stderr
        assert f"code object from '{cache}/logits." not in out.stderr
    assert _digest_all(installed.parent) == before


def test_vllm_children_get_no_credentials() -> None:
    from runner.model.install import base_env

    env = {
        "PATH": "/usr/bin",
        "SUBMISSION_PAYLOAD": "x",
        "BUILDKITE_AGENT_TOKEN": "s",
        "BUILDKITE_API_TOKEN": "s",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_ACCESS_KEY_ID": "s",
        "HF_TOKEN": "s",
        "TOKENIZERS_PARALLELISM": "false",
    }
    assert base_env(env) == {"PATH": "/usr/bin", "TOKENIZERS_PARALLELISM": "false"}


def test_a_daemon_the_fork_leaves_does_not_outlive_the_job(tmp_path: Path) -> None:
    """The vLLM environment (here a stand-in interpreter, as hostile as a fork's setup code)
    daemonises with setsid, out of every process group the runner kills: the job still ends
    with it gone."""
    import json

    from contract import codec
    from tests.common import REPO

    fake = tmp_path / "fake-python"
    pidfile = tmp_path / "daemon.pid"
    fake.write_text(
        "#!/bin/bash\n"
        f"setsid sleep 313.25 </dev/null >/dev/null 2>&1 &\necho $! > {pidfile}\nexit 3\n"
    )
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUBMISSION_", "KITEBENCH_"))}
    env.update(
        SUBMISSION_PAYLOAD=codec.encode(build_model_payload(TASK, _archive(tmp_path))),
        KITEBENCH_OUTPUT_DIR=str(out),
        KITEBENCH_VLLM_PYTHON=str(fake),
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.run([sys.executable, "-m", "runner"], env=env, cwd=tmp_path, timeout=300,
                          capture_output=True, text=True)
    result = json.loads((out / "result.json").read_text())
    assert result["success"] is False, proc.stderr  # no vLLM there: a failed setup
    pid = int(pidfile.read_text())
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            alive = b"313.25" in f.read()
    except OSError:
        alive = False
    if alive:
        os.kill(pid, 9)
    assert not alive, "the fork's daemon survived the job"
