"""Why a run did not pass, in one line: the ``error`` of result.json. Everything quoted from the
run is the submission's text, so it is cut short, a traceback reduced to its last line."""

from __future__ import annotations

from contract.result import EvalResult, HarnessExit
from runner.kernels.protocol import count_problem, indices

_EXIT_MEANING = {
    int(HarnessExit.CUDA_FAIL): "CUDA failure",
    int(HarnessExit.PIPE_FAILED): "the harness could not write to POPCORN_FD",
    int(HarnessExit.VALIDATE_FAIL): "validation failed",
    int(HarnessExit.TEST_SPEC): "bad test spec",
}



def describe_failure(name: str, ev: EvalResult, cases: int | None = None) -> str:
    """One line saying why a run did not pass. Everything quoted from the run (stderr, harness
    errors) is the submission's text: cut to one short line, a traceback reduced to its last
    line (result.json's stderr, the log, keeps all of it). ``cases``: how many cases the run had
    (the bound on the harness's counts)."""
    comp = ev.compilation
    if comp is not None and not comp.success:
        if not comp.nvcc_found:
            return "compilation failed: nvcc was not found on PATH"
        tail = last_line(comp.stderr)
        return f"compilation failed (nvcc exit {comp.exit_code})" + (f": {tail}" if tail else "")
    run = ev.run
    if run is None:
        return f"{name}: did not run"
    if run.exit_code == HarnessExit.TIMEOUT_EXPIRED and not run.success:
        return f"{name}: timed out after {run.duration:g} s (the process tree was killed)"
    if run.exit_code < 0:
        return f"{name}: the process was killed by signal {-run.exit_code}"
    if run.exit_code not in (0, int(HarnessExit.VALIDATE_FAIL)):
        meaning = _EXIT_MEANING.get(run.exit_code, "")
        tail = last_line(run.stderr)
        return (
            f"{name}: exited with code {run.exit_code}"
            + (f" ({meaning})" if meaning else "")
            + (f": {tail}" if tail else "")
        )
    if cases is not None:
        problem = count_problem(run.result, cases)
        if problem is not None:
            return f"{name}: {problem}"
    if "check" not in run.result:
        return f"{name}: the harness reported no verdict (no 'check' key on POPCORN_FD)"
    if run.result.get("check") == "pass" and run.exit_code == 0:
        # the harness said pass, the runner did not take it: its output was cut at the limit
        return f"{name}: the harness output on POPCORN_FD was over its size limit"
    first = first_error(run.result, cases)
    return f"{name}: check failed" + (f": {first}" if first else "")


#: What one quoted line of the submission's output may take in an error.
_QUOTE_CHARS = 300
_TRACEBACK = "Traceback (most recent call last)"


def one_line(text: str, limit: int = _QUOTE_CHARS) -> str:
    """The submission's text as one short line for ``error``: newlines (real ones or the
    harness's escaped ``\\n``) joined, a traceback reduced to its last line, non-printable
    characters dropped."""
    text = text.replace("\\r", "\n").replace("\\n", "\n").replace("\r", "\n")
    if _TRACEBACK in text:
        before, _, after = text.partition(_TRACEBACK)
        rows = [ln.strip() for ln in after.splitlines() if ln.strip()]
        # frames are "File ..." lines and their source lines; the last row is the exception
        text = before + " " + (rows[-1] if rows else "")
    text = "".join(ch for ch in " ".join(text.split()) if ch.isprintable())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # the runner's own notes ("[kitebench: ...]") come after the submission's output
    own = [ln for ln in lines if not ln.startswith("[kitebench:")]
    return one_line((own or lines)[-1]) if lines else ""


def first_error(result: dict[str, str], cases: int | None = None) -> str:
    """The first failed case, found among the keys the harness wrote (bounded by their number
    and by ``cases``), never by counting up to a claimed ``{kind}-count``."""
    for kind in ("test", "benchmark"):
        for i in indices(result, kind):
            if cases is not None and i >= cases:
                break
            if result.get(f"{kind}.{i}.status") == "fail":
                err = one_line(result.get(f"{kind}.{i}.error", ""))
                spec = one_line(result.get(f"{kind}.{i}.spec", ""), 100)
                return f"{kind} {i} ({spec}): {err}"[:400] if spec else f"{kind} {i}: {err}"[:400]
    return ""
