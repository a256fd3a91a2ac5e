"""The launcher's side of the model path: task.yml + a fork archive → a validated payload
(inline, a local path, a user URL or the archive store)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from contract.payload import ModelPayload
from launcher.errors import TaskError, UsageError
from launcher.model_task import build_model_payload
from tests.common import EXAMPLES
from tests.model_support import fork_archive as _archive

TASK = EXAMPLES / "vllm_tiny"


def test_small_archive_travels_inline_with_the_task_config(tmp_path: Path) -> None:
    arc = _archive(tmp_path)
    p = build_model_payload(TASK, arc, mode="benchmark")
    assert isinstance(p, ModelPayload) and p.mode == "benchmark"
    assert base64.b64decode(p.submission_archive or "") == arc.read_bytes()
    assert p.model_cfg.model_name == "tiny-llama"
    assert p.model_cfg.perplexity_corpus == (TASK / "heldout.txt").read_text()
    assert p.model_cfg.benchmark_shapes[0].num_prompts >= 20
    assert p.test_timeout == 300


def test_local_path_and_user_url(tmp_path: Path) -> None:

    arc = _archive(tmp_path)
    digest = hashlib.sha256(arc.read_bytes()).hexdigest()
    p = build_model_payload(TASK, arc, local_path=True)
    assert p.archive_path == str(arc.resolve()) and p.archive_sha256 == digest
    p = build_model_payload(TASK, arc, archive_url="https://example.org/fork.tar.gz")
    assert (p.archive_url, p.archive_sha256, p.submission_archive) == (
        "https://example.org/fork.tar.gz",
        digest,
        None,
    )


def test_big_archive_needs_a_url_or_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KITEBENCH_ARCHIVE_BUCKET", raising=False)
    arc = _archive(tmp_path, size=200 * 1024)  # random bytes: incompressible
    with pytest.raises(UsageError, match="too big to travel inline"):
        build_model_payload(TASK, arc)

    class DirStore:  # a store that "uploads" by copying and returns where it is served
        def __init__(self) -> None:
            self.calls: list[tuple[Path, str]] = []

        def upload(self, archive: Path, sha256: str) -> str:
            self.calls.append((archive, sha256))
            return f"https://store.example/{sha256}.tar.gz"

    store = DirStore()
    p = build_model_payload(TASK, arc, store=store)
    assert store.calls and p.archive_url == f"https://store.example/{store.calls[0][1]}.tar.gz"
    assert p.archive_sha256 == store.calls[0][1]


def test_model_task_errors(tmp_path: Path) -> None:
    arc = _archive(tmp_path)
    with pytest.raises(UsageError, match="not found"):
        build_model_payload(TASK, tmp_path / "nope.tar.gz")
    with pytest.raises(UsageError, match="must be a"):
        build_model_payload(TASK, TASK / "heldout.txt")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "task.yml").write_text(
        "lang: model\nmodel_config: {model_name: m, tensor_parallel: 0}\n"
    )
    with pytest.raises(TaskError, match="tensor_parallel"):
        build_model_payload(tmp_path / "t", arc)
    (tmp_path / "t" / "task.yml").write_text(
        "lang: model\nheldout: gone.txt\nmodel_config: {model_name: m}\n"
    )
    with pytest.raises(TaskError, match="heldout file 'gone.txt' not found"):
        build_model_payload(tmp_path / "t", arc)


def test_s3_store_uploads_and_the_runner_downloads_the_presigned_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real S3-compatible server (moto's, over HTTP on 127.0.0.1) and boto3's presigning."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    from launcher.model_task import S3Store
    from runner.model import archive as arch

    for k, v in {
        "AWS_ACCESS_KEY_ID": "kitebench-test",
        "AWS_SECRET_ACCESS_KEY": "kitebench-test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="forks")
        monkeypatch.setenv("KITEBENCH_ARCHIVE_BUCKET", "forks")
        monkeypatch.setenv("KITEBENCH_ARCHIVE_ENDPOINT", endpoint)
        arc = _archive(tmp_path, size=200 * 1024)
        p = build_model_payload(TASK, arc)  # too big inline: the configured store takes it
        assert p.submission_archive is None and p.archive_url and p.archive_url.startswith(endpoint)
        assert "X-Amz-Signature=" in p.archive_url or "Signature=" in p.archive_url
        got = arch.download(p.archive_url, tmp_path / "dl", p.archive_sha256 or "", arch.Limits())
        assert got.read_bytes() == arc.read_bytes()
        store = S3Store.from_env()
        assert store is not None and store.bucket == "forks"
    finally:
        server.stop()
