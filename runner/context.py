"""What a job's executor gets from the entry point: its env, output dir and checkpointing."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# The contract (pydantic) is imported where it is used: ``python -m runner`` imports this module
# before anything heavy (runner.entry).
if TYPE_CHECKING:
    from contract.result import FullResult


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error class
    """Raised in the main thread by SIGTERM/SIGINT (a Buildkite cancel, Ctrl-C).

    A BaseException so that ``except Exception`` in executors does not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


@dataclass
class RunContext:
    env: Mapping[str, str]
    output_dir: Path
    last_checkpoint: FullResult | None = field(default=None, repr=False)
    #: The per-job key that signs every result.json written (contract.resultio); never logged.
    key: str | None = field(default=None, repr=False)

    def checkpoint(self, partial: FullResult, after: str) -> None:
        """Record what finished so far. The file on disk says the job is incomplete, so a hard
        kill (SIGKILL, OOM) still leaves a truthful result.json; the final write replaces it."""
        from contract.result import RunnerExit
        from contract.resultio import write_result

        self.last_checkpoint = partial
        marked = partial.model_copy(deep=True)
        marked.success = False
        marked.error = f"incomplete: the job stopped after {after}"
        marked.kitebench.stage = "interrupted"
        marked.kitebench.exit_code = int(RunnerExit.INTERRUPTED)
        marked.kitebench.interrupted = True
        # not fsynced: the final write replaces it (and is); see write_result
        write_result(marked, self.output_dir, key=self.key, durable=False)
