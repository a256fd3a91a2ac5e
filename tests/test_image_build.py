"""Both Dockerfiles build with the BASE_IMAGE override and NO network (no registry, no index):
the offline Debian base + a wheelhouse in the build context. The vLLM image is built with a
stand-in wheel named ``vllm`` (the real vLLM is gigabytes of CUDA wheels)."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from host.image_validate import validate_image
from tests.common import REPO
from tests.docker_support import (
    BASE_IMAGE,
    build,
    docker_client,
    ensure_test_image,
    ensure_wheels,
    require_base,
    stage_context,
    standin_vllm_wheel,
)


def _run(client: Any, image: str, code: str) -> str:
    out = client.containers.run(image, entrypoint=["/opt/kitebench/venv/bin/python", "-c", code],
                                network_mode="none", remove=True, stdout=True, stderr=True)
    return out.decode().strip()


def test_dockerignore_sends_only_what_the_images_use() -> None:
    from docker.utils.build import exclude_paths

    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    sent = exclude_paths(str(REPO), patterns, dockerfile="images/runner/Dockerfile")
    top = {p.split("/")[0] for p in sent}
    assert top <= {"contract", "runner", "images", ".dockerignore"}, top
    assert "runner/entry.py" in sent and "contract/payload.py" in sent
    assert "images/runner/requirements.txt" in sent
    assert not any(p.startswith(("launcher/", "host/", "tests/", ".git/")) for p in sent)


@pytest.mark.docker
@pytest.mark.slow
def test_runner_image_builds_offline_and_holds_only_the_runner() -> None:
    client = docker_client()
    image = ensure_test_image(client)  # images/runner/Dockerfile, BASE_IMAGE override, no network
    img = client.images.get(image)
    cfg = img.attrs["Config"]
    assert cfg["User"] == "runner"
    assert cfg["Entrypoint"] == ["/opt/kitebench/venv/bin/python", "-m", "runner"]
    assert cfg["WorkingDir"] == "/kitebench/work"
    assert img.labels["org.opencontainers.image.version"] == "0.1.0"
    assert img.labels["org.opencontainers.image.revision"]
    probe = _run(client, image, (
        "import importlib.util as u, runner, numpy, pydantic;"
        "print(runner.__version__, numpy.__version__, pydantic.VERSION,"
        " [m for m in ('click','requests','yaml','docker','launcher','host','torch')"
        "  if u.find_spec(m)])"
    ))
    assert probe.startswith("0.1.0 2.2.6 2.13.4 []"), probe


@pytest.mark.docker
@pytest.mark.slow
def test_extra_ca_bundle_is_trusted(tmp_path: Path) -> None:
    client = docker_client()
    ensure_test_image(client)
    marker = f"kitebench-test-ca-{uuid.uuid4().hex[:8]}"
    pem = f"# {marker}\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    with tempfile.TemporaryDirectory(prefix="kitebench-ctx-") as tmp:
        ctx = stage_context(Path(tmp), ensure_wheels())
        (ctx / "images" / "certs" / "corp.pem").write_text(pem)
        tag = "kitebench-runner:test-ca"
        build(client, ctx, "images/runner/Dockerfile", tag,
              {"BASE_IMAGE": BASE_IMAGE, "INSTALL_TORCH": "0",
               "EXTRA_CA_BUNDLE": "images/certs/corp.pem"})
    try:
        assert marker in _run(client, tag, "print(open('/etc/ssl/certs/ca-certificates.crt').read())")
    finally:
        client.images.remove(tag, force=True)


@pytest.mark.docker
@pytest.mark.slow
def test_vllm_image_builds_offline_with_a_standin_vllm() -> None:
    client = docker_client()
    require_base(client)
    ensure_test_image(client)
    tag = "kitebench-vllm:test"
    with tempfile.TemporaryDirectory(prefix="kitebench-ctx-") as tmp:
        ctx = stage_context(Path(tmp), ensure_wheels())
        standin_vllm_wheel(ctx / "images" / "wheels")
        build(client, ctx, "images/vllm/Dockerfile", tag,
              {"BASE_IMAGE": BASE_IMAGE, "VLLM_SPEC": "vllm==0.0.0+standin"})
    try:
        img = client.images.get(tag)
        assert img.labels["dev.kitebench.image"] == "vllm"
        assert img.attrs["Config"]["User"] == "runner"
        out = _run(client, tag, "import vllm, runner; print(vllm.__version__, runner.__version__)")
        assert out == "0.0.0+standin 0.1.0"
        report = validate_image(tag, client=client)
        checks = {c.id: c for c in report.checks}
        for cid in ("image", "user", "python", "runner", "entrypoint", "limits", "timeout",
                    "missing_payload", "invalid_payload"):
            assert checks[cid].status == "PASS", (cid, checks[cid].detail)
    finally:
        client.images.remove(tag, force=True)
