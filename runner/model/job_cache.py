"""The model job's use of the start-up cache (:mod:`runner.model.cache`): which entry a fork's
server may copy, the stock reference server's seed, and what it publishes afterwards.
A mixin of :class:`runner.model.job.ModelJob` (the job's state lives there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.model import cache as start_cache
from runner.model.audit import model_digest
from runner.model.audit_job import stock_version
from runner.model.install import (
    Installed,
    give_tree,
)


class StartCacheSteps:
    def _start_facts(self, inst: Installed, model: str) -> dict[str, Any]:
        """What the stock key covers (a fork's key adds its code delta)."""
        cfg = self.cfg
        return start_cache.about(
            installed=inst.installed_dir,
            version=stock_version(inst.installed_dir),
            python=self.python,
            torch=self.system.torch,
            model_digest=model_digest(model),
            config={
                "model": model,
                "served_model_name": cfg.model_name,
                "tensor_parallel": cfg.tensor_parallel,
                "vllm_args": list(cfg.vllm_args),
                "server_env": dict(cfg.server_env),
                "server_command": cfg.server_command,
            },
            delta=[],
            device=f"{self.system.gpu}|{self.system.cpu}|{self.system.device_count}",
        )

    def _seed_start_cache(self, inst: Installed, model: str) -> Path | None:
        """A copy of the agent's entry for exactly this code and config, handed to the fork's
        uid (its server may write the copy); None on a miss or without a usable root."""
        info: dict[str, Any] = {"used": False}
        self.details["start_cache"] = info
        if self.start_root is None:
            info["why"] = "no root" if not self.env.get(start_cache.ENV_ROOT) else "sandbox none"
            return None
        # the stock key: what a trusted server publishes after this job
        self.start_facts = self._start_facts(inst, model)
        self.start_key = start_cache.key(self.start_facts)
        if inst.method != "overlay":
            info["why"] = "native fork: no key"
            return None
        delta = start_cache.code_delta(inst.installed_dir, inst.package_dir, inst.fork_files)
        k = start_cache.key({**self.start_facts, "delta": delta})
        info.update(used=True, key=k, changed_files=len(delta))
        into = self.work / "start-cache"
        into.mkdir(mode=0o700)
        try:
            info["hit"] = start_cache.seed(self.start_root, k, into)
        except OSError as e:  # a broken entry costs a cold start, not the job
            info.update(hit=False, error=str(e)[:300])
        if self.sb.separate_uid:
            give_tree(self.sb, into)
        return into

    def _seed_reference_cache(self) -> None:
        """The stock entry (trusted, stock code) for the stock reference server, if it starts."""
        if self.start_root is None or self.start_key is None:
            return
        into = Path(self.reference_env[start_cache.PARTS["vllm"]]).parent
        try:
            into.mkdir(mode=0o700)
            start_cache.seed(self.start_root, self.start_key, into)
        except OSError as e:
            self.warnings.append(f"start-up cache not read for the reference server: {e}")

    def _publish_start_cache(self) -> None:
        """The stock reference server's caches as the entry of the stock key (first wins)."""
        if self.start_root is None or self.start_key is None or "reference" not in self.details:
            return
        src = Path(self.reference_env[start_cache.PARTS["vllm"]]).parent
        try:
            done = start_cache.publish(self.start_root, self.start_key, src, self.start_facts)
        except OSError as e:
            self.warnings.append(f"start-up cache not published: {e}")
            return
        self.details.setdefault("start_cache", {})["published"] = done
