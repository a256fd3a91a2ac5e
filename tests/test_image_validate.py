"""`kitebench image validate` against the CI-built image and two deliberately broken ones."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

from host.image_validate import PLAN, Report, validate_image
from tests.common import REPO
from tests.docker_support import docker_client, ensure_test_image

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GPU_CHECKS = {"gpu_visible", "cuda_matmul"}
#: Not GPU checks, but they need what the offline test image leaves out (torch, a CUDA devel base).
OMITTED_IN_TEST_IMAGE = {"torch", "cuda"}


@pytest.fixture(scope="module")
def client() -> Any:
    return docker_client()


@pytest.fixture(scope="module")
def image(client: Any) -> str:
    return ensure_test_image(client)


def _broken(client: Any, base: str, name: str, body: str) -> str:
    tag = f"kitebench-broken-{name}:test"
    dockerfile = f"FROM {base}\n{body}\n"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, pull=False, rm=True,
                        forcerm=True, network_mode="none")
    return tag


@pytest.fixture(scope="module")
def no_runner_image(client: Any, image: str) -> Any:
    tag = _broken(client, image, "no-runner", (
        "USER root\n"
        "RUN rm -rf \"$(python -c 'import runner, os; print(os.path.dirname(runner.__file__))')\"\n"
        "USER runner"
    ))
    yield tag
    client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def crashing_image(client: Any, image: str) -> Any:
    tag = _broken(client, image, "crashing-entrypoint", (
        'ENTRYPOINT ["/opt/kitebench/venv/bin/python", "-c", '
        '"raise SystemExit(\'fatal: kitebench.cfg not found\')"]'
    ))
    yield tag
    client.images.remove(tag, force=True)


def _by_id(report: Report) -> dict[str, Any]:
    return {c.id: c for c in report.checks}


def test_ci_image_passes_every_non_gpu_check(image: str, client: Any) -> None:
    report = validate_image(image, client=client)
    checks = _by_id(report)
    assert [c.id for c in report.checks] == [cid for cid, _t, _w in PLAN]
    for cid, c in checks.items():
        if cid in GPU_CHECKS | OMITTED_IN_TEST_IMAGE:
            assert c.status == "SKIP", (cid, c.detail)
            assert len(c.detail) > 20  # a reason a vendor can read
        else:
            assert c.status == "PASS", (cid, c.detail)
    assert "no --gpu" in checks["gpu_visible"].detail
    assert "torch is not installed" in checks["torch"].detail
    assert checks["python"].data["python"].startswith("3.")
    assert report.failed is False


def test_gpu_checks_skip_without_an_nvidia_runtime(image: str, client: Any) -> None:
    if "nvidia" in (client.info().get("Runtimes") or {}):
        pytest.skip("this engine has an NVIDIA runtime")
    report = validate_image(image, gpu="GPU-8f6e2c1a-4b3d-11ee-9c2a-0242ac120002", client=client)
    checks = _by_id(report)
    for cid in GPU_CHECKS:
        assert checks[cid].status == "SKIP" and "NVIDIA runtime" in checks[cid].detail


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kitebench", "image", "validate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)


def test_cli_prints_the_plan_then_the_table(image: str) -> None:
    proc = _cli(image)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.index("Plan (") < out.index("Results:")
    assert "FIT to go live" in out
    for _cid, title, _what in PLAN:
        assert out.count(title) >= 2  # once in the plan, once in the table


def test_cli_json(image: str) -> None:
    proc = _cli(image, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] is True and data["counts"]["FAIL"] == 0
    assert {c["status"] for c in data["checks"]} <= {"PASS", "SKIP"}


def test_image_without_the_runner_fails_with_a_fix(no_runner_image: str) -> None:
    proc = _cli(no_runner_image, "--json")
    assert proc.returncode == 1, proc.stderr
    checks = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["runner"]["status"] == "FAIL"
    assert "No module named 'runner'" in checks["runner"]["detail"]
    assert "install the runner" in checks["runner"]["detail"]
    assert checks["entrypoint"]["status"] == "FAIL"
    assert "No module named runner" in checks["entrypoint"]["detail"]
    assert "ENTRYPOINT must be" in checks["entrypoint"]["detail"]
    assert checks["python"]["status"] == "PASS"  # the rest of the image is fine


def test_crashing_entry_point_fails_with_a_fix(crashing_image: str) -> None:
    proc = _cli(crashing_image)
    assert proc.returncode == 1
    line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("entry point"))
    assert "FAIL" in line
    assert "exited with code 1" in line and "kitebench.cfg not found" in line
    assert "ENTRYPOINT must be" in line
    assert "NOT fit to go live" in proc.stdout


def test_missing_image_fails_and_is_not_pulled(client: Any) -> None:
    from docker.errors import ImageNotFound

    missing = f"kitebench-absent:{uuid.uuid4().hex[:8]}"
    proc = _cli(missing)
    assert proc.returncode == 1
    assert "is not on this host" in proc.stdout
    assert proc.stdout.count("SKIP") == len(PLAN) - 1
    with pytest.raises(ImageNotFound):
        client.images.get(missing)
