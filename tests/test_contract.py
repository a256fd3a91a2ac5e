"""The payload/result contract: field names, aliases, defaults, validation, schema export."""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import sys
from typing import Optional

import pytest

from contract import codec
from contract.base import EXTENSION_KEY
from contract.payload import (
    ModelPayload,
    PyPayload,
    dump_payload,
    payload_json_schema,
    runs_for_mode,
)
from contract.result import (
    CompileResult,
    EvalResult,
    FullResult,
    KitebenchInfo,
    ProfileResult,
    RunResult,
    SystemInfo,
    result_json_schema,
    runs_passed,
)


def _py(**kw):
    base = {"lang": "py", "main": "eval.py", "sources": {"eval.py": "pass"}}
    base.update(kw)
    return base


def test_files_is_an_alias_of_sources_and_defaults_are_the_fields():
    p = codec.validate({"lang": "py", "main": "eval.py", "files": {"eval.py": "x"}, "tests": []})
    assert isinstance(p, PyPayload)
    assert p.sources == {"eval.py": "x"}
    assert (p.mode, p.test_timeout, p.benchmark_timeout, p.ranked_timeout) == ("test", 180, 180, 180)
    assert p.ranking_by == "last"
    # dumped with kernelbot's key name, not the alias
    assert "sources" in dump_payload(p) and "files" not in dump_payload(p)


def test_arch_accepts_int_and_string():
    assert codec.validate(_py(arch=90)).arch == "90"
    assert codec.validate(_py(arch="90a")).arch == "90a"
    with pytest.raises(codec.PayloadError, match="arch"):
        codec.validate(_py(arch="sm_90"))


@pytest.mark.parametrize(
    "name", ["../x.py", "/etc/passwd", "a/../../b", "", "a\\b", "./x", "a//b", "x\x00y"]
)
def test_file_names_cannot_escape_the_work_dir(name):
    with pytest.raises(codec.PayloadError, match="file name"):
        codec.validate(_py(sources={"eval.py": "", name: "evil"}))


def test_nested_relative_file_names_are_allowed():
    p = codec.validate(_py(sources={"eval.py": "", "pkg/mod.py": ""}))
    assert "pkg/mod.py" in p.sources


def test_model_payload_reads_model_config_key_and_writes_it_back():
    p = codec.validate(
        {"lang": "model", "mode": "benchmark", "submission_archive": "AAAA",
         "model_config": {"model_name": "tiny", "perplexity_baseline": 3.5}}
    )
    assert isinstance(p, ModelPayload)
    assert p.model_cfg.install_timeout == 600
    assert p.model_cfg.server_startup_timeout == 300
    assert p.model_cfg.benchmark_timeout == 1200
    out = dump_payload(p)
    assert out["model_config"]["model_name"] == "tiny" and "model_cfg" not in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "exactly one of"),
        ({"submission_archive": "AAAA", "archive_url": "https://x/y"}, "exactly one of"),
        ({"archive_url": "https://x/y"}, "archive_sha256"),
        ({"archive_url": "file:///etc/passwd", "archive_sha256": "a" * 64}, "http"),
        ({"submission_archive": "AAAA", "mode": "profile"}, "profile"),
    ],
)
def test_model_payload_archive_rules(extra, message):
    with pytest.raises(codec.PayloadError, match=message):
        codec.validate({"lang": "model", "model_config": {"model_name": "m"}, **extra})


def test_runs_for_mode_follows_the_field():
    assert runs_for_mode("test") == ["test"]
    assert runs_for_mode("benchmark") == ["benchmark"]
    assert runs_for_mode("leaderboard") == runs_for_mode("private") == ["test", "benchmark", "leaderboard"]
    assert runs_for_mode("profile", 3) == ["profile.0", "profile.1", "profile.2"]


def test_total_timeout_covers_every_run_of_the_mode():
    p = codec.validate(_py(mode="leaderboard", test_timeout=10, benchmark_timeout=20, ranked_timeout=30))
    assert p.total_timeout == 60
    assert p.timeout_for("leaderboard") == 30 and p.timeout_for("profile.1") == 20


def _now():
    return datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def _sample_result() -> FullResult:
    run = RunResult(success=True, passed=True, command="python eval.py test cases", stdout="o",
                    stderr="", exit_code=0, duration=1.25, result={"check": "pass", "test-count": "1"})
    comp = CompileResult(nvcc_found=True, nvcc_version="12.4", success=True, command="nvcc",
                         stdout="", stderr="", exit_code=0)
    return FullResult(
        success=True,
        system=SystemInfo(gpu="H100", device_count=1, cpu="x", runtime="CUDA", platform="linux",
                          torch="2.5", hostname="h"),
        runs={"test": EvalResult(start=_now(), end=_now(), compilation=comp, run=run,
                                 profile=ProfileResult(profiler="nsight", trace="t", download_url=None))},
        kitebench=KitebenchInfo(passed=True, score=1.5e-6),
    )


# kernelbot's dataclasses, field names exactly as its run_eval defines them (the reference file).
@dataclasses.dataclass
class KbCompileResult:
    nvcc_found: bool
    nvcc_version: str
    success: bool
    command: str
    stdout: str
    stderr: str
    exit_code: int


@dataclasses.dataclass
class KbRunResult:
    success: bool
    passed: bool
    command: str
    stdout: str
    stderr: str
    exit_code: int
    duration: float
    result: dict


@dataclasses.dataclass
class KbProfileResult:
    profiler: str
    trace: Optional[str]  # noqa: UP045 - mirrors the upstream annotation
    download_url: Optional[str]  # noqa: UP045


@dataclasses.dataclass
class KbSystemInfo:
    gpu: str = ""
    device_count: int = 1
    cpu: str = ""
    runtime: str = ""
    platform: str = ""
    torch: str = ""
    hostname: str = ""


def test_result_json_rebuilds_into_kernelbot_dataclasses():
    """Compatibility evidence: kernelbot's parser does Cls(**dict) on each inner object."""
    doc = json.loads(_sample_result().to_json())
    assert set(doc) == {"success", "error", "system", "runs", EXTENSION_KEY}
    system = KbSystemInfo(**doc["system"])
    assert system.gpu == "H100"
    for run in doc["runs"].values():
        assert set(run) == {"start", "end", "compilation", "run", "profile"}
        datetime.datetime.fromisoformat(run["start"])
        assert KbCompileResult(**run["compilation"]).success
        assert KbRunResult(**run["run"]).passed
        assert KbProfileResult(**run["profile"]).profiler == "nsight"


def test_result_round_trips_and_ignores_unknown_top_level_keys():
    r = _sample_result()
    doc = json.loads(r.to_json())
    doc["from_a_newer_runner"] = {"x": 1}
    back = FullResult.model_validate(doc)
    assert back == r
    assert back.passed


def test_inner_objects_reject_unknown_keys():
    doc = json.loads(_sample_result().to_json())
    doc["runs"]["test"]["run"]["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        FullResult.model_validate(doc)


def test_failure_helper_and_runs_passed():
    f = FullResult.failure("boom", "compile")
    assert not f.success and f.error == "boom" and f.kitebench.stage == "compile"
    assert f.runs == {} and not f.passed
    r = _sample_result()
    assert runs_passed(r.runs)
    r.runs["test"].run.passed = False
    assert not runs_passed(r.runs)
    assert not runs_passed({})


def test_schemas_are_generated_from_the_models_and_accept_real_documents():
    import jsonschema

    ps = payload_json_schema()
    assert {m["$ref"].rsplit("/", 1)[-1] for m in ps["oneOf"]} == {
        "PyPayload", "CuPayload", "ModelPayload"}
    assert set(ps["discriminator"]["mapping"]) == {"py", "cu", "model"}
    jsonschema.validate(dump_payload(codec.validate(_py(mode="benchmark"))), ps)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**_py(), "test_timeout": -1}, ps)

    rs = result_json_schema()
    assert {"success", "error", "system", "runs", "kitebench"} <= set(rs["properties"])
    jsonschema.validate(json.loads(_sample_result().to_json()), rs)
    bad = json.loads(_sample_result().to_json())
    bad["runs"]["test"]["run"]["exit_code"] = "zero"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, rs)


def test_schema_command_prints_json_schema():
    for which in ("payload", "result"):
        out = subprocess.run([sys.executable, "-m", "kitebench", "schema", which],
                             capture_output=True, text=True, check=True).stdout
        doc = json.loads(out)
        assert doc["$schema"].startswith("https://json-schema.org/")


def test_modes_and_langs_are_named_once() -> None:
    from typing import get_args

    from contract import payload as models
    from runner.harness import protocol

    assert get_args(models.Mode) == models.MODES and "private" in models.MODES
    assert set(models.LANGS) == {get_args(m.model_fields["lang"].annotation)[0]
                                 for m in (models.PyPayload, models.CuPayload, models.ModelPayload)}
    assert set(protocol.MODES) == set(models.MODES) - {"private"}  # private runs as leaderboard


def test_one_ranking_combiner() -> None:
    from contract.ranking import combine

    assert combine([2.0, 8.0], "last") == 8.0
    assert combine([2.0, 8.0], "mean") == 5.0
    assert combine([2.0, 8.0], "geom") == pytest.approx(4.0)
    for bad in ([], [1.0, 0.0], [1.0, float("nan")], [float("inf")], [-1.0]):
        assert combine(bad, "mean") is None, bad
    with pytest.raises(ValueError):
        combine([1.0], "custom")
