"""launcher.kernelbot: the async kernelbot-shaped adapter, against the stand-in Buildkite API."""

from __future__ import annotations

import asyncio
import enum
from typing import Any

import pytest

from contract.result import FullResult
from launcher.buildkite import BuildkiteLauncher  # noqa: E402
from launcher.client import BuildkiteClient  # noqa: E402
from launcher.kernelbot import BuildkiteKernelbotLauncher, gpu_name, run_submission  # noqa: E402
from tests.bk_standin import BuildPlan, StandIn

CONFIG = {"lang": "py", "mode": "test", "main": "eval.py",
          "sources": {"eval.py": "print('hi')", "submission.py": "x = 1"},
          "tests": [{"size": 8, "seed": 3}], "test_timeout": 60}


class GPU(enum.Enum):
    H100 = "H100"
    A100 = "A100"


class Reporter:
    """kernelbot's RunProgressReporter shape: async push (new line) / update (last line)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.history: list[tuple[str, str]] = []

    async def push(self, content: Any) -> None:
        self.history.append(("push", str(content)))
        self.lines.append(str(content))

    async def update(self, content: Any) -> None:
        self.history.append(("update", str(content)))
        self.lines[-1] = str(content)


@pytest.fixture
def bk() -> Any:
    with StandIn(time_scale=20) as server:
        yield server


def launcher_for(bk: StandIn) -> BuildkiteLauncher:
    client = BuildkiteClient(env=bk.env(), clock=bk.clock.now, sleep=bk.clock.sleep)
    return BuildkiteLauncher(client, queue="h100", gpu="H100", arch="90a")


def test_gpu_names() -> None:
    assert gpu_name(GPU.H100) == "H100" and gpu_name("B200") == "B200"

    class Rec:
        name = "L4"
        value = 3

    assert gpu_name(Rec()) == "L4"


def test_run_submission_returns_the_result_and_reports(bk: StandIn) -> None:
    rep = Reporter()
    result = asyncio.run(run_submission(CONFIG, GPU.H100, rep, launcher=launcher_for(bk)))
    assert isinstance(result, FullResult) and result.passed
    assert rep.history[0] == ("push", "Buildkite: submitting to H100 (queue h100)")
    assert rep.lines == ["Buildkite build #1: passed"]
    assert any(op == "update" and "build #1: scheduled" in text and "buildkite.com" in text
               for op, text in rep.history)
    env = bk.builds[1].body["env"]
    assert env["GPU_QUEUE"] == "h100"


def test_launcher_class_from_environment(bk: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in bk.env().items():
        monkeypatch.setenv(k, v)
    bk.planner = lambda body: BuildPlan(state="failed", exit_status=1, result=None,
                                        log="Traceback: boom\n")
    launcher = BuildkiteKernelbotLauncher(gpus=GPU, as_dict=True)
    rep = Reporter()
    out = asyncio.run(launcher.run_submission(CONFIG, GPU.A100, rep))
    assert isinstance(out, dict) and out["success"] is False
    assert "exit_status 1" in out["error"] and "Traceback: boom" in out["error"]
    assert bk.builds[1].body["env"]["GPU_QUEUE"] == "a100"  # from the GPU registry
    assert launcher.name == "Buildkite" and launcher.gpus is GPU
    assert rep.lines[-1].startswith("Buildkite build #1: failed: build #1 failed")


def test_errors_come_back_as_results(bk: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in bk.env().items():
        monkeypatch.setenv(k, v)
    rep = Reporter()
    res = asyncio.run(BuildkiteKernelbotLauncher().run_submission(CONFIG, "V100", rep))
    assert not res.success and "unknown GPU 'V100'" in res.error
    bad = {**CONFIG, "main": "missing.py"}
    res = asyncio.run(run_submission(bad, GPU.H100, Reporter(), launcher=launcher_for(bk)))
    assert not res.success and "missing.py" in res.error
    assert not bk.builds


def test_cancelling_the_task_cancels_the_build(bk: StandIn) -> None:
    bk.planner = lambda body: BuildPlan(run_s=100_000, queue_s=0)

    async def scenario() -> None:
        task = asyncio.create_task(run_submission(CONFIG, GPU.H100, Reporter(),
                                                  launcher=launcher_for(bk)))
        for _ in range(600):
            await asyncio.sleep(0.05)
            if bk.builds and bk.state_of(1) == "running":
                break
        await asyncio.sleep(0.3)  # let the launcher see the build number
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert bk.count(method="PUT") == 1
    assert bk.state_of(1) in ("canceling", "canceled")
