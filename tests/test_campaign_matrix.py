"""The matrix file and its plan: validation, globs, defaults, variants, excludes, secret seeds,
``kitebench matrix plan`` and ``kitebench schema matrix``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kitebench import main
from launcher.campaign.matrix import load_matrix, parse_matrix
from launcher.campaign.plan import plan
from launcher.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
SMOKE = """name: smoke
entries:
  - task: examples/vectoradd_np
    submissions: ["examples/vectoradd_np/solutions/correct/*.py", "examples/vectoradd_np/solutions/wrong/*.py"]
    modes: [test, leaderboard]
"""


def test_issue_example_plans_from_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "smoke.yml"  # elsewhere than the tasks: paths resolve against the cwd
    f.write_text(SMOKE)
    monkeypatch.chdir(REPO)
    assert main(["matrix", "plan", str(f), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    cells = doc["cells"]
    assert doc["name"] == "smoke" and len(cells) == 6  # 3 submissions × 2 modes × 1 GPU
    assert {c["mode"] for c in cells} == {"test", "leaderboard"}
    assert {Path(c["submission"]).name for c in cells} == {"submission.py", "nan_tail.py",
                                                           "scaled.py"}
    assert {c["gpu"] for c in cells} == {"local"} and len({c["key"] for c in cells}) == 6
    assert all(len(c["submission_sha256"]) == 64 and c["lang"] == "py" for c in cells)


def test_defaults_variants_excludes_and_secret_seed(tmp_path: Path) -> None:
    (tmp_path / "m.yml").write_text(f"""
name: full
defaults: {{gpus: [H100, A100], modes: [test], secret_seed: 777}}
exclude: [{{gpu: A100, mode: private}}]
entries:
  - task: {REPO}/examples/vectoradd_np
    submissions: ["{REPO}/examples/vectoradd_np/solutions/*/*.py"]
    modes: [test, private]
    variants: [{{name: base}}, {{name: big, overrides: {{test_timeout: 60}}}}]
    exclude: [{{submission: "*/wrong/*", mode: private}}]
""")
    cells = plan(load_matrix(tmp_path / "m.yml"))
    # 3 subs × 2 GPUs × 2 modes × 2 variants = 24; minus private on A100 (6) and private for
    # the two wrong subs on H100 (4)
    assert len(cells) == 14
    private = [c for c in cells if c.mode == "private"]
    assert {c.gpu for c in private} == {"H100"} and len(private) == 2
    assert all(c.overrides.get("seed") == 777 for c in private)
    assert all("seed" not in c.overrides for c in cells if c.mode == "test")
    assert {c.overrides.get("test_timeout") for c in cells if c.variant == "big"} == {60}


def test_duplicate_globs_give_one_cell_and_keys_are_stable() -> None:
    m = parse_matrix({"name": "d", "entries": [{
        "task": str(REPO / "examples/vectoradd_np"),
        "submissions": [str(REPO / "examples/vectoradd_np/solutions/correct/submission.py"),
                        str(REPO / "examples/vectoradd_np/solutions/correct/*.py")]}]})
    a, b = plan(m), plan(m)
    assert len(a) == 1 and a[0].key == b[0].key


@pytest.mark.parametrize("data, msg", [
    ({"name": "x", "entries": []}, "entries"),
    ({"name": "x", "entries": [{"task": "t", "submissions": ["s"], "modez": ["test"]}]}, "modez"),
    ({"name": "x", "entries": [{"task": "t", "submissions": ["s"], "modes": ["fast"]}]}, "modes"),
    ({"name": "x", "entries": [{"task": "t", "submissions": ["s"],
                                "variants": [{"name": "v", "overrides": {"lang": "cu"}}]}]},
     "cannot override lang"),
])
def test_bad_matrix_is_one_usage_error(data: dict, msg: str) -> None:
    with pytest.raises(UsageError, match=msg):
        parse_matrix(data)


def test_missing_files_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "m.yml"
    f.write_text(f"name: x\nentries:\n  - task: {REPO}/examples/vectoradd_np\n"
                 f"    submissions: [\"{tmp_path}/nothing/*.py\"]\n")
    assert main(["matrix", "plan", str(f)]) == 2
    assert "matches no file" in capsys.readouterr().err
    assert main(["matrix", "plan", str(tmp_path / "absent.yml")]) == 2
    f.write_text("name: [unclosed\n")
    assert main(["matrix", "plan", str(f)]) == 2


def test_schema_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "matrix"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "kitebench matrix" and "entries" in schema["properties"]


def test_paths_resolve_against_the_matrix_file_first(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.taskdirs import write_py_task

    task = write_py_task(tmp_path / "camp")
    (tmp_path / "camp" / "m.yml").write_text(
        "name: rel\nentries:\n  - task: problems/double_py\n"
        "    submissions: [problems/double_py/submission_ok.py]\n")
    monkeypatch.chdir(REPO)  # elsewhere: the file's own directory wins
    (cell,) = plan(load_matrix(tmp_path / "camp" / "m.yml"))
    assert Path(cell.task_dir) == task and cell.task == "double_py"
