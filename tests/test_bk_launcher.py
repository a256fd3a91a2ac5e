"""BuildkiteLauncher, the GPU registry and the Buildkite CLI commands against the stand-in
Buildkite API (real HTTP on 127.0.0.1, see tests/bk_standin.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests

from contract import codec
from contract.result import FullResult, RunnerExit
from launcher.base import StatusEvent, SubmitOptions
from launcher.buildkite import BuildkiteLauncher
from launcher.client import AuthError, BuildkiteClient
from launcher.errors import InfraError, UsageError
from launcher.gpus import load_registry
from tests.bk_standin import BuildPlan, StandIn, passing_result

PAYLOAD = {"lang": "cu", "mode": "test", "sources": {"submission.cu": "__global__ void k(){}"},
           "tests": [{"size": 128, "seed": 1}]}
SCALE = 20.0  # simulated seconds per real second


@pytest.fixture
def bk() -> Any:
    with StandIn(time_scale=SCALE) as server:
        yield server


def make(bk: StandIn, *, client_kw: dict[str, Any] | None = None, **kw: Any) -> BuildkiteLauncher:
    client = BuildkiteClient(env=bk.env(), clock=bk.clock.now, sleep=bk.clock.sleep,
                             **(client_kw or {}))
    kw.setdefault("queue", "h100")
    kw.setdefault("gpu", "H100")
    kw.setdefault("arch", "90a")
    return BuildkiteLauncher(client, **kw)


def plan(**kw: Any):
    return lambda body: BuildPlan(**kw)


# -- results ----------------------------------------------------------------------------------


def test_passed_build_result_is_parsed(bk: StandIn) -> None:
    events: list[StatusEvent] = []
    bk.planner = plan(result=passing_result(score=1.5e-5), agent="h100-box-3")
    result = make(bk, branch="bench", commit="abc123").run(PAYLOAD, on_status=events.append)
    assert result.success and result.passed and result.kitebench.score == 1.5e-5
    assert result.system.gpu.startswith("NVIDIA H100")

    (build,) = bk.builds.values()
    body = build.body
    assert (body["commit"], body["branch"]) == ("abc123", "bench")
    assert body["env"]["GPU_QUEUE"] == "h100"
    sent = codec.decode(body["env"]["SUBMISSION_PAYLOAD"])
    assert sent.arch == "90a" and sent.sources == PAYLOAD["sources"]  # arch from the registry
    assert len(body["meta_data"]["kitebench_id"]) == 32
    assert "H100" in body["message"] and "submission.cu" in body["message"]

    assert events[-1].state == "passed" and events[-1].agent == "h100-box-3"
    assert events[-1].url == "https://buildkite.com/acme/gpu-bench/builds/1"
    assert events[-1].build_number == 1 and events[-1].elapsed_s > 0
    # the artifact store got a clean request, the API got the token
    assert bk.store_log and all(e["authorization"] is None for e in bk.store_log)


def test_failed_build_with_result_returns_that_result(bk: StandIn) -> None:
    own = FullResult.failure("nvcc: error: identifier 'foo' is undefined", "compile",
                             RunnerExit.FAILED)
    bk.planner = plan(state="failed", exit_status=1, result=json.loads(own.to_json()))
    result = make(bk).run(PAYLOAD)
    assert not result.success
    assert result.error == "nvcc: error: identifier 'foo' is undefined"
    assert result.kitebench.stage == "compile" and result.kitebench.exit_code == 1


def test_failed_build_without_result_reports_state_exit_and_log_tail(bk: StandIn) -> None:
    log = "".join(f"log line {i}\n" for i in range(200))
    bk.planner = plan(state="failed", exit_status=137, signal_reason="process_run_error",
                      result=None, log=log)
    result = make(bk).run(PAYLOAD)
    assert not result.success and result.kitebench.stage == "internal"
    assert result.kitebench.exit_code == RunnerExit.INTERNAL
    assert "build #1 failed" in result.error and "job failed" in result.error
    assert "exit_status 137" in result.error and "signal_reason process_run_error" in result.error
    assert "log line 199" in result.error and "log line 150" in result.error
    assert "log line 149\n" not in result.error  # only the last 50 lines
    facts = result.kitebench.details["buildkite"]
    assert facts["exit_status"] == 137 and facts["agent"] == "gpu-host-1-0"


def test_lost_agent_is_named(bk: StandIn) -> None:
    bk.planner = plan(state="failed", exit_status=-1, signal_reason="agent_stop", result=None)
    result = make(bk).run(PAYLOAD)
    assert "exit_status -1" in result.error and "agent was lost" in result.error


def test_sha1_mismatch_becomes_a_failed_result(bk: StandIn) -> None:
    bk.planner = plan(corrupt_sha1=True)
    result = make(bk).run(PAYLOAD)
    assert not result.success and result.kitebench.stage == "collect"
    assert "sha1sum mismatch" in result.error


def test_invalid_result_json_becomes_a_failed_result(bk: StandIn) -> None:
    bk.planner = plan(result='{"success": "maybe"')
    result = make(bk).run(PAYLOAD)
    assert not result.success and "does not match the contract" in result.error


# -- timeouts and interrupts ------------------------------------------------------------------


def test_launcher_timeout_cancels_the_build(bk: StandIn) -> None:
    bk.planner = plan(run_s=10_000, result=None, cancel_grace_s=2)
    events: list[StatusEvent] = []
    result = make(bk).run(PAYLOAD, timeout_s=15, on_status=events.append)
    assert bk.state_of(1) == "canceled"
    assert bk.count(method="PUT") == 1
    assert not result.success and result.kitebench.stage == "interrupted"
    assert "canceled" in result.error
    assert any("cancelled: no result within 15s" in e.message for e in events)
    assert any("cancelled" in w for w in result.kitebench.warnings)


def test_cancelled_build_partial_result_is_returned(bk: StandIn) -> None:
    partial = FullResult.failure("interrupted by SIGTERM", "interrupted",
                                 RunnerExit.INTERRUPTED, interrupted=True)
    bk.planner = plan(run_s=10_000, result_on_cancel=json.loads(partial.to_json()))
    result = make(bk).run(PAYLOAD, timeout_s=10)
    assert bk.state_of(1) == "canceled"
    assert result.kitebench.interrupted and result.error == "interrupted by SIGTERM"


def test_ctrl_c_cancels_the_build(bk: StandIn) -> None:
    bk.planner = plan(run_s=10_000, queue_s=0)

    def on_status(ev: StatusEvent) -> None:
        if ev.state == "running":
            raise KeyboardInterrupt

    launcher = make(bk)
    with pytest.raises(KeyboardInterrupt):
        launcher.run(PAYLOAD, on_status=on_status)
    assert bk.count(method="PUT") == 1
    assert bk.state_of(1) in ("canceling", "canceled")


def test_ctrl_c_while_only_waiting_leaves_the_build_running(bk: StandIn) -> None:
    bk.planner = plan(run_s=10_000, queue_s=0)
    launcher = make(bk)
    number = launcher.client.create_build()["number"]

    def on_status(ev: StatusEvent) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        launcher.wait(number, on_status=on_status)
    assert bk.count(method="PUT") == 0 and bk.state_of(number) == "running"


# -- rate limits ------------------------------------------------------------------------------


def test_429_waits_the_reset_then_succeeds() -> None:
    with StandIn(time_scale=50, user_limit=5, window_s=100) as bk:
        launcher = make(bk, client_kw={"rate_gate": False})
        for _ in range(5):  # spend the window, so the create itself meets a 429
            launcher.client.list_builds()
        t0 = bk.clock.now()
        result = launcher.run(PAYLOAD)
        assert result.passed
        first_429 = next(e for e in bk.log if e.status == 429)
        assert first_429.method == "POST"
        # the retry came after the window's reset, not before
        retry = next(e for e in bk.log if e.method == "POST" and e.status == 201)
        assert retry.t >= (t0 // 100 + 1) * 100
        assert len(bk.builds) == 1


def test_gate_avoids_429s() -> None:
    with StandIn(time_scale=SCALE, user_limit=4) as bk:
        result = make(bk, client_kw={"reserve": 1}).run(PAYLOAD)
        assert result.passed
        assert bk.count(status=429) == 0


# -- idempotent create ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500_after", "drop_after", "slow_after"])
def test_ambiguous_create_failure_makes_exactly_one_build(bk: StandIn, kind: str) -> None:
    bk.add_fault("POST", r"/builds$", kind, delay_s=3.0)
    client_kw = {"timeout": (2.0, 1.0)} if kind == "slow_after" else {}
    result = make(bk, client_kw=client_kw).run(PAYLOAD)
    assert len(bk.builds) == 1
    assert bk.count(method="POST") == 1
    assert result.passed


def test_create_500_before_creating_is_retried_once(bk: StandIn) -> None:
    bk.add_fault("POST", r"/builds$", "500")
    result = make(bk).run(PAYLOAD)
    assert len(bk.builds) == 1 and bk.count(method="POST") == 2
    assert result.passed


def test_transient_get_faults_are_retried(bk: StandIn) -> None:
    bk.add_fault("GET", r"/builds$", "500", times=2)
    bk.add_fault("GET", r"/artifacts$", "drop")
    assert make(bk).run(PAYLOAD).passed


def test_polling_that_keeps_failing_names_the_build(bk: StandIn) -> None:
    bk.planner = plan(run_s=10_000)
    bk.add_fault("GET", r"/builds$", "500", times=10_000)
    with pytest.raises(InfraError) as e:
        make(bk, max_poll_failures=2).run(PAYLOAD)
    assert "HTTP 500" in e.value.message and "kitebench wait 1" in e.value.message
    assert len(bk.builds) == 1


def test_bad_token_is_a_usage_error(bk: StandIn) -> None:
    client = BuildkiteClient(env={**bk.env(), "BUILDKITE_API_TOKEN": "bkua_wrong"})
    with pytest.raises(AuthError) as e:
        BuildkiteLauncher(client, queue="h100").run(PAYLOAD)
    assert e.value.exit_code == 2 and "bkua_wrong" not in e.value.message


def test_missing_scope_is_named() -> None:
    token = "bkua_readonly_0000"
    with StandIn(tokens={token: {"read_builds"}}) as bk:
        client = BuildkiteClient(env={**bk.env(), "BUILDKITE_API_TOKEN": token})
        with pytest.raises(AuthError, match="lacks the write_builds scope"):
            BuildkiteLauncher(client, queue="h100").run(PAYLOAD)


def test_payload_over_the_inline_limit_is_a_usage_error(bk: StandIn) -> None:
    import random

    rnd = random.Random(1)
    big = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(200_000))
    payload = {**PAYLOAD, "sources": {"submission.cu": big}}
    with pytest.raises(UsageError, match="too large"):
        make(bk).run(payload)
    assert not bk.builds


# -- secrets ----------------------------------------------------------------------------------


def test_token_never_reaches_logs_events_or_store(bk: StandIn,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bk.add_fault("POST", r"/builds$", "500_after")
    bk.add_fault("GET", r"/builds$", "drop")
    bk.planner = plan(state="failed", result=None, log=f"env dump: {bk.api_url}\n")
    events: list[StatusEvent] = []
    result = make(bk).run(PAYLOAD, on_status=events.append)
    texts = [caplog.text, result.to_json(), *(repr(e) for e in events)]
    texts += [json.dumps(e["headers"]) for e in bk.store_log]
    assert all(bk.token not in t for t in texts)
    # The stand-in's store would have caught a leaked header: prove it answers 400.
    url = bk.store_log[0]["path"] if bk.store_log else "/objects/x"
    r = requests.get(bk.store_url + url + "?X-Amz-Signature=x",
                     headers={"Authorization": "Bearer x"}, timeout=10)
    assert r.status_code == 400 and b"Only one auth mechanism" in r.content


# -- many builds, existing builds -------------------------------------------------------------


def test_submit_many_uses_batched_list_requests(bk: StandIn) -> None:
    n = 6
    bk.planner = lambda body: BuildPlan(queue_s=1, run_s=5)
    results = make(bk).submit_many([PAYLOAD] * n)
    assert len(results) == n and all(r.passed for r in results)
    assert len(bk.builds) == n
    single_gets = [e for e in bk.log if e.method == "GET" and e.path.rstrip("/").split("/")[-2]
                   == "builds"]
    assert single_gets == []  # no GET per build: only list requests
    polls = [e for e in bk.log if e.method == "GET" and e.path.endswith("/builds")]
    assert len(polls) > 0
    batches = {b.body["meta_data"]["kitebench_batch"] for b in bk.builds.values()}
    assert len(batches) == 1


def test_submit_many_keeps_order_and_isolates_failures(bk: StandIn) -> None:
    def planner(body: dict[str, Any]) -> BuildPlan:
        p = codec.decode(body["env"]["SUBMISSION_PAYLOAD"])
        seed = p.tests[0]["seed"]
        return BuildPlan(state="passed" if seed % 2 else "failed", run_s=seed,
                         result=passing_result() if seed % 2 else None)

    bk.planner = planner
    payloads = [{**PAYLOAD, "tests": [{"size": 1, "seed": s}]} for s in (5, 2, 3, 4)]
    results = make(bk).submit_many(payloads)
    assert [r.passed for r in results] == [True, False, True, False]
    assert "without result.json" in results[1].error


def test_wait_follows_an_existing_build(bk: StandIn) -> None:
    launcher = make(bk)
    build = launcher.client.create_build(
        env={"SUBMISSION_PAYLOAD": codec.encode(PAYLOAD), "GPU_QUEUE": "h100"})
    result = launcher.wait(build["number"])
    assert result.passed
    assert bk.count(method="GET") >= 2


def test_status_and_cancel_by_number(bk: StandIn) -> None:
    bk.planner = plan(run_s=10_000)
    launcher = make(bk)
    number = launcher.client.create_build()["number"]
    assert launcher.status(number).state in ("scheduled", "running")
    st = launcher.cancel(number)
    assert st.state in ("canceling", "canceled")
    bk.clock.sleep(3)
    assert launcher.cancel(number).state == "canceled"  # already finished: reported, no error
    with pytest.raises(UsageError):
        launcher.status(999)


# -- from_options and the GPU registry --------------------------------------------------------


def test_from_options_routes_by_gpu_or_queue(bk: StandIn, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    for k, v in bk.env().items():
        monkeypatch.setenv(k, v)
    launcher = BuildkiteLauncher.from_options(SubmitOptions(task_dir=tmp_path, gpu="h100"))
    assert (launcher.queue, launcher.arch, launcher.gpu) == ("h100", "90a", "H100")
    launcher = BuildkiteLauncher.from_options(SubmitOptions(task_dir=tmp_path, queue="lab-x",
                                                            timeout_s=42))
    assert (launcher.queue, launcher.arch, launcher.timeout_s) == ("lab-x", None, 42)
    with pytest.raises(UsageError, match=r"unknown GPU 'V100' \(known: A100, B200, H100"):
        BuildkiteLauncher.from_options(SubmitOptions(task_dir=tmp_path, gpu="V100"))
    with pytest.raises(UsageError, match="--gpu NAME"):
        BuildkiteLauncher.from_options(SubmitOptions(task_dir=tmp_path))


def test_registry_user_file_overrides_and_extends(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "gpus.yml"
    f.write_text("gpus:\n  h100: {queue: h100-lab, arch: 90a}\n  RTX4090: {queue: ada, arch: 89}\n")
    reg = load_registry(f)
    assert reg.resolve("H100").queue == "h100-lab" and reg.resolve("rtx4090").arch == "89"
    assert "H100" not in reg.gpus and "A100" in reg.gpus
    monkeypatch.setenv("KITEBENCH_GPUS_FILE", str(f))
    assert load_registry().resolve("h100").queue == "h100-lab"
    f.write_text("gpus:\n  X: {queue: 'bad queue!'}\n")
    with pytest.raises(UsageError, match="GPU 'X': queue"):
        load_registry(f)
    f.write_text("gpus: [1, 2]\n")
    with pytest.raises(UsageError, match="expected a mapping"):
        load_registry(f)


# -- CLI --------------------------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from kitebench import main

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_status_cancel_wait(bk: StandIn, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bk.planner = plan(state="failed", exit_status=2, result=None, log="boom\n")
    launcher = make(bk)
    n = launcher.client.create_build(env={"SUBMISSION_PAYLOAD": codec.encode(PAYLOAD)})["number"]
    code, out, _ = _cli(["status", str(n)], bk.env(), monkeypatch, capsys)
    assert code == 0 and (f"build #{n}: scheduled" in out or f"build #{n}: running" in out)
    code, out, err = _cli(["wait", str(n), "--json", "-o", str(tmp_path / "r.json")], bk.env(),
                          monkeypatch, capsys)
    assert code == 3, err
    assert json.loads(out)["success"] is False and "exit_status 2" in json.loads(out)["error"]
    assert json.loads((tmp_path / "r.json").read_text())["kitebench"]["stage"] == "internal"
    code, out, _ = _cli(["wait", str(n), "-q"], bk.env(), monkeypatch, capsys)
    assert code == 3 and "exit_status 2" in out and "boom" in out  # the human report
    code, out, _ = _cli(["cancel", str(n)], bk.env(), monkeypatch, capsys)
    assert code == 0 and "failed" in out
    code, out, _ = _cli(["status", str(n), "--json"], bk.env(), monkeypatch, capsys)
    assert json.loads(out)["jobs"][0]["exit_status"] == 2
    code, _, err = _cli(["status", "12345"], bk.env(), monkeypatch, capsys)
    assert code == 2 and err.startswith("Error: GET ") and "404" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_gpus(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                  tmp_path: Path) -> None:
    code, out, _ = _cli(["gpus"], {}, monkeypatch, capsys)
    assert code == 0 and "H100" in out and "90a" in out
    f = tmp_path / "g.yml"
    f.write_text("gpus:\n  Z9: {queue: z9}\n")
    code, out, _ = _cli(["gpus", "--json", "--gpus-file", str(f)], {}, monkeypatch, capsys)
    assert json.loads(out)["Z9"]["queue"] == "z9"


def test_cli_without_token_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("BUILDKITE_API_TOKEN", raising=False)
    code, _, err = _cli(["wait", "1"], {}, monkeypatch, capsys)
    assert code == 2 and "BUILDKITE_API_TOKEN is not set" in err


def test_infra_errors_are_exit_3() -> None:
    assert InfraError("x").exit_code == 3
