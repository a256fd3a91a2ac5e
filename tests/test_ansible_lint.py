"""The playbook parses (``ansible-playbook --syntax-check``) and the role is clean under
``ansible-lint`` with the production profile (FQCN, names, idempotence rules, meta)."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.common import REPO, missing_prereq

ANSIBLE_DIR = REPO / "ansible"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        missing_prereq(f"{name} not installed (.ci/setup.d/40-ansible.sh)")
    return path


def _env() -> dict[str, str]:
    return dict(
        os.environ,
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        NO_COLOR="1",
        ANSIBLE_NOCOLOR="1",
    )


def test_syntax_check():
    proc = subprocess.run(
        [_tool("ansible-playbook"), "--syntax-check", "-i", "inventory/example.yml", "site.yml"],
        cwd=ANSIBLE_DIR,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "playbook: site.yml" in proc.stdout


def test_ansible_lint_production_profile():
    proc = subprocess.run(
        [_tool("ansible-lint"), "--profile", "production", "--offline", "--nocolor"],
        cwd=ANSIBLE_DIR,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out


def test_role_templates_are_the_systemd_templates():
    """One source of truth: the role's and the package's template dirs are links to systemd/."""
    target = (REPO / "systemd" / "templates").resolve()
    assert (ANSIBLE_DIR / "roles/kitebench_agent/templates").resolve() == target
    assert (REPO / "host/provision/templates").resolve() == target
