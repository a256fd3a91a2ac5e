"""``python -m runner``: decode ``$SUBMISSION_PAYLOAD``, run it, ALWAYS write result.json.

Environment:
  SUBMISSION_PAYLOAD            base64(zlib(json)) payload (required unless the next is set)
  KITEBENCH_PAYLOAD_FILE        a file holding the encoded payload (for payloads over 128 KiB)
  KITEBENCH_OUTPUT_DIR          where result.json goes (default: the current directory)
  KITEBENCH_RESULT_KEY          the per-job key that signs result.json (removed from the env at
                                start; children never see it)
  KITEBENCH_INPUT=stdin         the key and the payload come on stdin instead: the key's line,
                                then the encoded payload (the local backend: nothing on disk or in
                                an environment another process of the user could read)
  KITEBENCH_MAX_PAYLOAD_BYTES   cap on the decompressed payload (default 64 MiB)
  KITEBENCH_WORK_DIR            where per-run private work dirs are made (default: the temp dir)
  KITEBENCH_VLLM_PYTHON         model path: the interpreter with vLLM installed (default: this one)
  KITEBENCH_MODELS_DIR          model path: where model dirs are looked up (default /models)

Exit codes: see :class:`contract.result.RunnerExit` (0 passed, 1 failed, 2 bad payload,
3 internal, 4 interrupted).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Cheap modules only at the top: main() makes the runner undumpable and starts the GPU query
# before the contract (pydantic) and the executors are imported, in run().
from runner import sandbox, system
from runner.context import Interrupted, RunContext

if TYPE_CHECKING:
    from contract.payload import AnyPayload
    from contract.result import FullResult, RunnerExit

#: Bytes read from stdin at most with KITEBENCH_INPUT=stdin (the key line + an encoded payload).
_STDIN_CAP = 256 * 1024 * 1024
_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4
#: pydantic's switch for its plugins (entry points of the group "pydantic").
_PYDANTIC_PLUGINS_ENV = "PYDANTIC_DISABLE_PLUGINS"


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def execute(payload: AnyPayload, ctx: RunContext) -> FullResult:
    """Run a validated payload; each lang's executor lives in its own module."""
    if payload.lang == "model":
        from runner.model import run_model

        return run_model(payload, ctx)
    from runner.kernels import run_kernel

    return run_kernel(payload, ctx)


def _read_stdin() -> tuple[str | None, bytes]:
    data = sys.stdin.buffer.read(_STDIN_CAP + 1)
    key, _, rest = data.partition(b"\n")
    return (key.decode("ascii", "replace").strip() or None), rest


def run(env: Mapping[str, str]) -> tuple[FullResult, RunnerExit]:
    from contract import codec
    from contract.result import FullResult, RunnerExit
    from contract.resultio import KEY_ENV, exit_code_for, write_result

    out_dir = Path(env.get("KITEBENCH_OUTPUT_DIR") or os.getcwd())
    key = _valid_key(env.get(KEY_ENV))
    env = {k: v for k, v in env.items() if k != KEY_ENV}
    os.environ.pop(KEY_ENV, None)  # nothing started from here inherits it
    stdin_payload: bytes | None = None
    if env.get("KITEBENCH_INPUT") == "stdin":
        stdin_key, stdin_payload = _read_stdin()
        key = _valid_key(stdin_key) or key
    ctx = RunContext(env=env, output_dir=out_dir, key=key)
    try:
        max_bytes = _max_bytes(env)
        text: str | bytes | None = env.get("SUBMISSION_PAYLOAD")
        if stdin_payload is not None:
            text = stdin_payload
        elif text is None and env.get("KITEBENCH_PAYLOAD_FILE"):
            text = codec.read_payload_file(env["KITEBENCH_PAYLOAD_FILE"], max_bytes=max_bytes)
        payload = codec.decode(text, max_bytes=max_bytes)
        result = execute(payload, ctx)
    except codec.PayloadError as e:
        result = FullResult.failure(
            e.message, e.stage, RunnerExit.BAD_PAYLOAD,
            system=system.collect_system(probe_gpu=False),
        )
    except Interrupted as e:
        result = _interrupted(ctx, e)
    except Exception as e:  # the last line of defence: a runner bug still yields a result
        result = FullResult.failure(
            f"internal error: {type(e).__name__}: {e}", "internal", RunnerExit.INTERNAL
        )
    write_result(result, out_dir, key=key)
    return result, exit_code_for(result)


def _valid_key(raw: str | None) -> str | None:
    """A hex key, or None (a malformed one signs nothing: the reader then refuses the result)."""
    if not raw:
        return None
    try:
        bytes.fromhex(raw)
    except ValueError:
        return None
    return raw


def _max_bytes(env: Mapping[str, str]) -> int:
    # a host misconfiguration raises ValueError: reported as an internal error, not a bad payload
    from contract import codec

    return codec.max_bytes_from(env)


def _interrupted(ctx: RunContext, e: Interrupted) -> FullResult:
    from contract.result import FullResult, RunnerExit

    partial = ctx.last_checkpoint
    msg = f"interrupted by {e.signal_name}"
    if partial is None:
        return FullResult.failure(
            msg + " before any run finished", "interrupted", RunnerExit.INTERRUPTED, interrupted=True
        )
    result = partial.model_copy(deep=True)
    # runs are what kernelbot reads; phases (model path) say how far a run got
    finished = list(result.runs) or [p.name for p in result.kitebench.phases if p.success]
    done = ", ".join(finished) or "nothing"
    result.success = False
    result.error = f"{msg}; finished before the interruption: {done}"
    result.kitebench.stage = "interrupted"
    result.kitebench.exit_code = int(RunnerExit.INTERRUPTED)
    result.kitebench.interrupted = True
    result.kitebench.passed = False
    return result


def _hide_from_same_user() -> bool:
    """:func:`runner.kernels.process.hide_from_same_user` as the very first thing: the same
    ``prctl(PR_SET_DUMPABLE, 0)``, called through the symbols this interpreter already has
    (``CDLL(None)``), checked with ``PR_GET_DUMPABLE``. Importing that module first would leave
    the runner dumpable through the ~0.2 s of imports behind ``runner.kernels``; where this
    fails, that function is the fallback."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        zero = ctypes.c_ulong(0)
        if (
            libc.prctl(_PR_SET_DUMPABLE, zero, zero, zero, zero) == 0
            and libc.prctl(_PR_GET_DUMPABLE, zero, zero, zero, zero) == 0
        ):
            return True
    except (OSError, AttributeError, ImportError):
        pass
    from runner.kernels.process import hide_from_same_user

    return hide_from_same_user()


def main() -> int:
    # First, before the key or the payload is read: processes of the same user can then neither
    # ptrace the runner nor read its /proc/<pid>/environ, mem or fds.
    _hide_from_same_user()
    # Then the GPU query (its tools get neither this environment nor stdin): it answers while
    # the contract is imported and the payload decoded; collect_system() reads it.
    system.start_probe()
    sandbox.start_probe(os.environ)  # bubblewrap's probe likewise (an empty env, no stdin)
    # The job's processes get the environment as it came; the runner itself runs without
    # pydantic plugins: their discovery reads every installed distribution's entry points
    # (~8 ms) and would load third-party code into the process that holds the key.
    env = dict(os.environ)
    os.environ[_PYDANTIC_PLUGINS_ENV] = "__all__"
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        result, code = run(env)
    except Interrupted:  # a signal while result.json was being written: exit with its class
        from contract.result import RunnerExit

        return int(RunnerExit.INTERRUPTED)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        system.stop_probe()  # a job that never read it (a bad payload): its tools are killed
        sandbox.stop_probe()
    from contract.result import RunnerExit

    verdict = "passed" if code == RunnerExit.PASSED else code.name.lower().replace("_", " ")
    line = f"kitebench runner: {verdict}"
    if result.error:
        line += f": {result.error}"
    print(line[:2000], file=sys.stderr)
    return int(code)
