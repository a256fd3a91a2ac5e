"""Campaigns on the Buildkite backend against the stand-in API (real HTTP on 127.0.0.1): 52
cells with injected faults (500s on create, lost agents, cancels), and a campaign killed with
SIGKILL after its builds exist, resumed by re-attaching to them (never a second build)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from contract import codec
from contract.result import FullResult, RunnerExit
from launcher.buildkite import BuildkiteLauncher
from launcher.campaign.execute import Campaign
from launcher.campaign.matrix import parse_matrix
from launcher.campaign.plan import Cell, plan
from launcher.campaign.store import Store
from launcher.client import BuildkiteClient
from launcher.gpus import load_registry
from tests.bk_standin import BuildPlan, StandIn, passing_result
from tests.taskdirs import write_py_task

REPO = Path(__file__).resolve().parent.parent
SCALE = 20.0
KINDS = {"pass": 6, "fail": 3, "lost": 2, "cancel": 2}
_FAILED = FullResult.failure("test: check failed", "run", RunnerExit.FAILED).model_dump(mode="json")


def _planner(run_s: float = 2.0) -> Any:
    def planner(body: dict[str, Any]) -> BuildPlan:
        src = codec.decode(body["env"]["SUBMISSION_PAYLOAD"]).sources["submission.py"]
        kind = re.search(r"# plan: (\w+)", src).group(1)
        if kind == "pass":
            score = float(re.search(r"# score: (\S+)", src).group(1))
            return BuildPlan(run_s=run_s, result=passing_result(score=score))
        if kind == "fail":
            return BuildPlan(run_s=run_s, state="failed", exit_status=1, result=_FAILED)
        if kind == "lost":
            return BuildPlan(run_s=run_s, state="failed", exit_status=-1,
                             signal_reason="agent_stop", result=None)
        return BuildPlan(run_s=run_s, state="canceled", exit_status=-1, result=None)

    return planner


def _matrix(tmp_path: Path, kinds: dict[str, int], modes: str = "[test, benchmark]") -> list[Cell]:
    task = write_py_task(tmp_path)
    subs = tmp_path / "subs"
    subs.mkdir()
    for kind, n in kinds.items():
        for i in range(n):
            (subs / f"{kind}_{i}.py").write_text(
                f"# plan: {kind}\n# score: {(i + 1) * 1e-5}\ndef custom_kernel(x):\n    return 2 * x\n")
    m = parse_matrix({"name": "bk", "defaults": {"gpus": ["H100", "A100"]}, "entries": [
        {"task": str(task), "submissions": [f"{subs}/*.py"], "modes": yaml_list(modes)}]})
    return plan(m)


def yaml_list(text: str) -> list[str]:
    return [x.strip() for x in text.strip("[]").split(",")]


def _launcher_for(bk: StandIn, **kw: Any) -> Any:
    registry = load_registry()

    def make(cell: Cell) -> BuildkiteLauncher:
        client = BuildkiteClient(env=bk.env(), clock=bk.clock.now, sleep=bk.clock.sleep)
        return BuildkiteLauncher(client, queue=registry.resolve(cell.gpu).queue, gpu=cell.gpu,
                                 lookup_delay_s=0.5, **kw)

    return make


@pytest.fixture
def bk() -> Any:
    with StandIn(time_scale=SCALE) as server:
        yield server


def test_52_cells_with_faults_every_attempt_recorded(bk: StandIn, tmp_path: Path) -> None:
    bk.planner = _planner()
    # the first creates fail: twice a plain 500, twice a 500 after the build was made (the
    # launcher looks it up by its kitebench_id: still one build per cell)
    bk.add_fault("POST", r"/builds$", "500", times=2)
    bk.add_fault("POST", r"/builds$", "500_after", times=2)
    cells = _matrix(tmp_path, KINDS)
    assert len(cells) == 52
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store.open(url) as store:
        campaign = Campaign(store=store, cells=cells, backend="buildkite", name="bk",
                            launcher_for=_launcher_for(bk))
        t0 = time.monotonic()
        states = campaign.run()
        wall = time.monotonic() - t0
        rows = store.attempts(run_id=campaign.run_id, with_result=True)
    assert len(rows) == 52 and len(bk.builds) == 52  # one attempt, one build per cell
    assert bk.count(status=500) >= 4
    assert campaign.exit_code() == 3  # lost agents are an infrastructure failure
    by_kind: dict[str, set[tuple[Any, ...]]] = {}
    for r in rows:
        kind = Path(r["submission"]).name.split("_")[0]
        by_kind.setdefault(kind, set()).add((r["status"], r["failure_stage"], r["exit_code"]))
        assert r["build_number"] and r["build_url"] and r["queue"] in ("h100", "a100")
        assert r["agent"] == "gpu-host-1-0" and r["finished_at"] and r["result_json"]
    assert by_kind == {"pass": {("success", None, 0)}, "fail": {("failed", "run", 1)},
                       "lost": {("failed", "internal", 3)},
                       "cancel": {("partial", "interrupted", 3)}}
    lost = next(r for r in rows if "lost" in r["submission"])
    assert "the agent was lost" in lost["error"]
    assert {s.status for s in states} == {"success", "failed", "partial"}
    print(f"52 cells through the stand-in in {wall:.1f}s")


WORKER = """
import sys
sys.path.insert(0, {repo!r})
from launcher.buildkite import BuildkiteLauncher
from launcher.campaign.execute import Campaign
from launcher.campaign.matrix import load_matrix
from launcher.campaign.plan import plan
from launcher.campaign.store import Store
from launcher.client import BuildkiteClient
from launcher.gpus import load_registry

reg = load_registry()
env = dict(BUILDKITE_API_TOKEN={token!r}, BUILDKITE_API_URL={api!r}, BUILDKITE_ORG="acme",
           BUILDKITE_PIPELINE="gpu-bench")
launcher_for = lambda cell: BuildkiteLauncher(BuildkiteClient(env=env),
                                              queue=reg.resolve(cell.gpu).queue, gpu=cell.gpu,
                                              poll_interval_s=0.3)
Campaign(store=Store.open({url!r}), cells=plan(load_matrix({matrix!r})), backend="buildkite",
         launcher_for=launcher_for).run()
"""


@pytest.mark.slow
def test_kill_9_then_resume_reattaches_to_the_builds(bk: StandIn, tmp_path: Path) -> None:
    bk.planner = _planner(run_s=200)  # 10 s of real time per build: the kill comes first
    cells = _matrix(tmp_path, {"pass": 4, "fail": 2}, modes="[test]")
    assert len(cells) == 12
    mfile = tmp_path / "m.yml"
    mfile.write_text(f"""name: bk
defaults: {{gpus: [H100, A100]}}
entries:
  - task: {cells[0].task_dir}
    submissions: ["{tmp_path}/subs/*.py"]
""")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    code = WORKER.format(repo=str(REPO), token=bk.token, api=bk.api_url, url=url,
                         matrix=str(mfile))
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if proc.poll() is not None:
            break
        if (tmp_path / "store.db").exists():
            with Store.open(url) as s:
                rows = s.attempts()
            if len(rows) == 12 and all(r["build_number"] for r in rows):
                break
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert len(rows) == 12 and all(r["build_number"] for r in rows), err[-3000:]
    assert {r["status"] for r in rows} == {"running"} and len(bk.builds) == 12

    with Store.open(url) as store:
        (run,) = store.list_runs()
        # the window a kill can hit: builds made, their numbers not yet stored. The attempts'
        # idempotency keys (meta_data kitebench_id) find them again.
        for r in rows[::2]:
            store.update_attempt(r["id"], build_number=None)
        campaign = Campaign(store=store, cells=cells, backend="buildkite", run_id=run["id"],
                            launcher_for=_launcher_for(bk))
        campaign.run()
        after = store.attempts(run_id=run["id"])
    assert len(bk.builds) == 12  # re-attached: not one build more
    assert [r["id"] for r in after] == [r["id"] for r in rows]  # the same attempt rows
    assert [r["build_number"] for r in after] == [r["build_number"] for r in rows]
    assert {(Path(r["submission"]).name.split("_")[0], r["status"]) for r in after} == \
        {("pass", "success"), ("fail", "failed")}
    assert campaign.exit_code() == 1
