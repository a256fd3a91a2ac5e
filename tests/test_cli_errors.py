"""The CLI as users get it wrong: every error is one line on stderr with the documented exit code
(2 usage/bad input, 3 infrastructure), and the API token never shows."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernels_support import REPO

TASK = REPO / "examples" / "vectoradd_np"
GOOD = TASK / "solutions" / "correct" / "submission.py"


def kb(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    base = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "kitebench", *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, cwd=cwd or REPO, timeout=300)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args", [
    ["sumbit"],
    ["schema"],
    ["submit", str(TASK), "--submision", "x.py"],
    ["status", "abc"],
])
def test_click_usage_errors_are_one_line_exit_2(args: list[str]) -> None:
    p = kb(*args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), p.stderr
    assert "--help" in lines[0]


def test_bare_group_still_shows_its_help() -> None:
    p = kb("payload")
    assert p.returncode == 2
    assert "Commands:" in p.stderr and "encode" in p.stderr and not p.stderr.startswith("Error")


def test_token_with_a_newline_is_refused_without_showing_it() -> None:
    env = {"BUILDKITE_API_TOKEN": "bkua_SECRET\nMORE", "BUILDKITE_ORG": "o",
           "BUILDKITE_PIPELINE": "p", "BUILDKITE_API_URL": f"http://127.0.0.1:{closed_port()}"}
    p = kb("status", "1", env=env)
    assert p.returncode == 2, p.stderr
    assert "SECRET" not in p.stderr + p.stdout
    assert p.stderr.count("\n") == 1 and "BUILDKITE_API_TOKEN" in p.stderr


def test_submit_takes_org_pipeline_and_api_url_flags() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v2"
    p = kb("submit", str(TASK), "-s", str(GOOD), "--queue", "h100", "--org", "o2",
           "--pipeline", "p2", "--api-url", url, env={"BUILDKITE_API_TOKEN": "bkua_SECRET"})
    assert p.returncode == 3, p.stderr
    assert f"{url}/organizations/o2/pipelines/p2/builds" in p.stderr
    assert "SECRET" not in p.stderr + p.stdout


def test_output_with_trailing_slash_makes_a_directory(tmp_path: Path) -> None:
    p = kb("submit", str(TASK), "-s", str(GOOD), "-q", "--isolation", "process",
           "-o", "newdir/", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "newdir" / "result.json").is_file()


def test_unwritable_output_is_a_usage_error_after_the_verdict(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file, not a dir")
    p = kb("submit", str(TASK), "-s", str(GOOD), "-q", "--isolation", "process",
           "-o", str(tmp_path / "f" / "r.json"))
    assert p.returncode == 2, p.stderr
    assert "verdict: PASSED" in p.stdout
    assert p.stderr.strip().splitlines()[-1].startswith("Error: cannot write the result to ")


def test_vendor_check_summary_counts_the_failures() -> None:
    from host.provision.check import CheckResult, Status, format_table

    results = [CheckResult("a", Status.FAIL, "x"), CheckResult("b", Status.PASS, "y"),
               CheckResult("c", Status.FAIL, "z"), CheckResult("d", Status.SKIP, "w")]
    assert format_table(results).splitlines()[-1] == "FAIL: 2 of 4 checks failed, 1 skipped"
    assert format_table(results[1:2]).splitlines()[-1] == "PASS: 0 of 1 checks failed"


def test_pipeline_render_of_an_empty_registry_is_exit_2(monkeypatch, capsys) -> None:
    import launcher.gpus
    from kitebench import main

    monkeypatch.setattr(launcher.gpus, "load_registry", lambda path=None: launcher.gpus.GpuRegistry(gpus={}))
    assert main(["pipeline", "render"]) == 2
    assert capsys.readouterr().err == "Error: the GPU registry is empty: nothing to render\n"
