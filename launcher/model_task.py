"""A ``lang: model`` task + a fork archive → a validated model payload.

task.yml of a model task::

    lang: model
    model_config:            # the field's model_config keys (plus kitebench's optional ones)
      model_name: tiny-llama
      benchmark_shapes: [{num_prompts: 20, input_len: 32, output_len: 16}]
      perplexity_baseline: 429.1
    heldout: heldout.txt     # held-out text for the perplexity gate (else the kit's default)
    test_timeout: 300        # common keys as for kernel tasks

Archive transport, in order of preference:

* ``archive_path`` (local backend only): the runner reads the file where it is;
* ``archive_url`` given by the user (any http(s) URL serving exactly this file): the payload
  carries the URL and the file's SHA-256, which the runner verifies;
* inline base64 when the encoded payload fits :data:`contract.codec.INLINE_LIMIT`;
* else an :class:`ArchiveStore` (e.g. an S3-compatible bucket handing out presigned GET URLs)
  uploads it and returns the URL.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

from contract import codec
from contract.payload import MODES, ModelPayload
from launcher.errors import InfraError, TaskError, UsageError
from launcher.task import Task, load_task

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


class ArchiveStore(Protocol):
    """Somewhere to put an archive too big to travel inline; returns a URL the runner can GET."""

    def upload(self, archive: Path, sha256: str) -> str: ...


class S3Store:
    """An S3-compatible bucket (AWS, MinIO, R2, ...): upload the archive, hand the runner a
    presigned GET URL (no credentials travel in the payload). Needs ``boto3``; credentials come
    from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, roles).

    Configured from the environment by :meth:`from_env`:
    ``KITEBENCH_ARCHIVE_BUCKET`` (required), ``KITEBENCH_ARCHIVE_ENDPOINT`` (non-AWS endpoints),
    ``KITEBENCH_ARCHIVE_PREFIX`` (default ``kitebench/archives/``),
    ``KITEBENCH_ARCHIVE_URL_EXPIRES`` (seconds, default 86400).
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        prefix: str = "kitebench/archives/",
        expires_s: int = 86400,
        client: Any = None,
    ) -> None:
        self.bucket, self.prefix, self.expires_s = bucket, prefix, expires_s
        if client is None:
            try:
                import boto3
            except ImportError:
                raise UsageError("the S3 archive store needs boto3 (pip install boto3)") from None
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self.client = client

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> S3Store | None:
        env = dict(os.environ) if env is None else env
        bucket = env.get("KITEBENCH_ARCHIVE_BUCKET")
        if not bucket:
            return None
        try:
            expires = int(env.get("KITEBENCH_ARCHIVE_URL_EXPIRES", "86400"))
        except ValueError:
            raise UsageError("KITEBENCH_ARCHIVE_URL_EXPIRES must be a number of seconds") from None
        return cls(
            bucket,
            endpoint_url=env.get("KITEBENCH_ARCHIVE_ENDPOINT") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            prefix=env.get("KITEBENCH_ARCHIVE_PREFIX", "kitebench/archives/"),
            expires_s=expires,
        )

    def upload(self, archive: Path, sha256: str) -> str:
        # Content-addressed key: re-submitting the same fork re-uses the object.
        suffix = next((s for s in ARCHIVE_SUFFIXES if archive.name.endswith(s)), "")
        key = f"{self.prefix}{sha256}{suffix}"
        try:
            self.client.upload_file(str(archive), self.bucket, key)
            return str(
                self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": key},
                    ExpiresIn=self.expires_s,
                )
            )
        except Exception as e:  # botocore's errors, without importing botocore here
            raise InfraError(
                f"uploading the archive to s3://{self.bucket}/{key} failed: {type(e).__name__}: {e}"
            ) from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            h.update(chunk)
    return h.hexdigest()


def model_config_of(task_dir: str | Path | Task) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model_config, common keys)`` of a model task dir, the held-out text loaded."""
    task = load_task(task_dir)
    yml = task.path / "task.yml"
    if task.lang != "model":
        raise TaskError(f"{yml}: lang is {task.lang!r}; --archive is for lang: model tasks")
    cfg = task.raw.get("model_config", task.config)
    if not isinstance(cfg, dict) or not cfg:
        raise TaskError(f"{yml}: a model task needs a model_config mapping")
    cfg = dict(cfg)
    heldout = task.raw.get("heldout")
    if heldout is not None:
        path = task.path / str(heldout)
        try:
            cfg["perplexity_corpus"] = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TaskError(f"{yml}: heldout file {heldout!r} not found") from None
        except UnicodeDecodeError:
            raise TaskError(f"{yml}: heldout file {heldout!r} is not UTF-8 text") from None
    return cfg, dict(task.common)


def build_model_payload(
    task_dir: str | Path | Task,
    archive: str | Path,
    *,
    mode: str = "test",
    archive_url: str | None = None,
    local_path: bool = False,
    store: ArchiveStore | None = None,
    overrides: dict[str, Any] | None = None,
) -> ModelPayload:
    """The payload of ``archive`` (a .tar.gz/.tgz/.tar/.zip of ``<dir>/vllm/...``) for a task.

    ``local_path``: send ``archive_path`` (the local backend runs on this machine).
    ``archive_url``: the user serves the archive at this URL. ``store``: where to upload an
    archive too big to travel inline (default: :meth:`S3Store.from_env`, when configured).
    """
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r} (expected one of: {', '.join(MODES)})")
    path = Path(archive)
    if not path.is_file():
        raise UsageError(f"archive {path} not found")
    if not path.name.endswith(ARCHIVE_SUFFIXES):
        raise UsageError(f"archive {path} must be a {', '.join(ARCHIVE_SUFFIXES)} file")
    task = load_task(task_dir)
    cfg, common = model_config_of(task)
    digest = _sha256(path)
    base: dict[str, Any] = {"lang": "model", "mode": mode, **common, "model_config": cfg}
    base.update(overrides or {})

    if local_path:
        data = {**base, "archive_path": str(path.resolve()), "archive_sha256": digest}
        return _validate(data, task.path)
    if archive_url is not None:
        if not archive_url.startswith(("https://", "http://")):
            raise UsageError(f"--archive-url must be an http(s) URL, got {archive_url!r}")
        return _validate({**base, "archive_url": archive_url, "archive_sha256": digest}, task.path)

    inline = base64.b64encode(path.read_bytes()).decode("ascii")
    payload = _validate({**base, "submission_archive": inline}, task.path)
    try:
        codec.encode(payload)
        return payload
    except codec.PayloadTooLarge as e:
        store = store if store is not None else S3Store.from_env()
        if store is None:
            raise UsageError(
                f"the archive is too big to travel inline ({e.message}): give --archive-url "
                "(an http(s) URL serving this exact file), configure an archive store "
                "(KITEBENCH_ARCHIVE_BUCKET), or use the local backend"
            ) from None
    url = store.upload(path, digest)
    return _validate({**base, "archive_url": url, "archive_sha256": digest}, task.path)


def _validate(data: dict[str, Any], task_dir: str | Path) -> ModelPayload:
    try:
        payload = codec.validate(data)
    except codec.PayloadError as e:
        raise TaskError(f"{task_dir}: {e.message}") from None
    assert isinstance(payload, ModelPayload)
    return payload
