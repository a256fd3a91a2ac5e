"""Hostile submissions against the vectoradd_np task, in every way a submission can be run.

Each attack (tests/adversarial/attacks/*.py) is a WRONG solution that tries to end with a PASS
anyway (forging result.json, starving or signalling the runner, lying in the protocol) or to
break the verdict or the host (odd result.json, disk fill, markup, persistence, secrets). Each
runs through ``kitebench job`` (Docker), ``submit --isolation docker``, ``submit --isolation
process`` as root and as a normal user, and must leave (tests/adversarial/support.py:
``problems``): an honest failed verdict in a valid result.json, no traceback in ``error`` or
the annotation, no process of the submission, /tmp at 1777, nothing written outside its work
dir, the host's bytes bounded. The honest examples must still pass and fail as they should.

``KBADV_TABLE=path`` writes the attack × mode outcome table (Markdown) at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.support import (
    ATTACKS,
    HONEST,
    MODES,
    Outcome,
    ensure_image,
    problems,
    run_case,
)
from tests.adversarial.world import World, new_world, user_venv_python
from tests.common import missing_prereq

CASES = [*ATTACKS, *HONEST]
_DOCKER = [pytest.mark.docker, pytest.mark.slow]
MODE_PARAMS = [pytest.param(m, marks=_DOCKER if m in ("job", "local-docker") else [], id=m)
               for m in MODES]
#: mode → case → "held" / the problems found (the table).
OUTCOMES: dict[str, dict[str, str]] = {}


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    w = new_world()
    yield w
    shutil.rmtree(w.root, ignore_errors=True)
    table = os.environ.get("KBADV_TABLE")
    if table and OUTCOMES:
        Path(table).write_text(render_table(OUTCOMES), encoding="utf-8")


@pytest.fixture(scope="session")
def docker_image(world: World) -> str:
    from tests.docker_support import docker_client

    world.image = ensure_image(docker_client())
    return world.image


@pytest.fixture(scope="session")
def user_python(world: World) -> Path:
    if os.geteuid() != 0:
        world.user_python = Path(sys.executable)  # already a normal user
    else:
        world.user_python = user_venv_python()
    return world.user_python


def _prepare(mode: str, request: pytest.FixtureRequest) -> None:
    if mode in ("job", "local-docker"):
        request.getfixturevalue("docker_image")
    if mode == "process-root" and os.geteuid() != 0:
        missing_prereq("process isolation as root needs root")
    if mode == "process-user":
        if os.geteuid() == 0 and shutil.which("setpriv") is None:
            missing_prereq("setpriv (util-linux) is needed to run as a normal user")
        request.getfixturevalue("user_python")


def _record(o: Outcome, bad: list[str]) -> None:
    OUTCOMES.setdefault(o.mode, {})[o.case] = "held" if not bad else "; ".join(bad)


@pytest.mark.parametrize("mode", MODE_PARAMS)
@pytest.mark.parametrize("case", list(ATTACKS))
def test_attack_is_contained(case: str, mode: str, world: World,
                             request: pytest.FixtureRequest) -> None:
    _prepare(mode, request)
    o = run_case(world, mode, case)
    bad = problems(o)
    _record(o, bad)
    assert not bad, f"{case} in {mode} ({o.wall_s:.1f} s): " + "; ".join(bad)


@pytest.mark.parametrize("mode", MODE_PARAMS)
@pytest.mark.parametrize("case", list(HONEST))
def test_honest_examples_keep_their_verdict(case: str, mode: str, world: World,
                                            request: pytest.FixtureRequest) -> None:
    _prepare(mode, request)
    o = run_case(world, mode, case)
    expect = HONEST[case][1]
    bad = problems(o, expect_pass=expect)
    _record(o, bad)
    assert not bad, f"{case} in {mode}: " + "; ".join(bad)
    assert o.result is not None
    if not expect:
        assert "check failed" in o.result.error, o.result.error
    if o.mode == "job":
        assert o.annotation is not None
        assert ("passed" if expect else "failed") in o.annotation.splitlines()[0]


def render_table(outcomes: dict[str, dict[str, str]]) -> str:
    modes = [m for m in MODES if m in outcomes]
    rows = ["| attack | class | " + " | ".join(modes) + " |",
            "|---|---|" + "---|" * len(modes)]
    for case in CASES:
        kind = ATTACKS[case].kind if case in ATTACKS else "honest example"
        cells = []
        for m in modes:
            v = outcomes[m].get(case)
            cells.append("—" if v is None else ("held" if v == "held" else "**WON**: " + v[:160]))
        rows.append(f"| {case} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def test_every_attack_file_is_listed() -> None:
    here = Path(__file__).resolve().parent / "attacks"
    files = {p.stem for p in here.glob("*.py")} - {"hostile"}
    assert files == set(ATTACKS), files ^ set(ATTACKS)
    assert len(ATTACKS) >= 25




@pytest.mark.parametrize("case", list(ATTACKS))
def test_attack_is_one_valid_submission_file(case: str) -> None:
    """What is submitted is a single file: the shared tools inlined, the token filled in, and a
    custom_kernel that really is wrong (a - b) unless the attack ends before it is called."""
    from tests.adversarial.support import submission_source

    text = submission_source(case, "0123abcd")
    compile(text, f"{case}.py", "exec")
    assert "\nfrom hostile import *\n" not in text and "@TOKEN@" not in text
    assert "def custom_kernel(data):" in text
