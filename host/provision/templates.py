"""Render the agent units, drop-ins, slices and hooks from the Jinja2 templates.

The templates live once, in ``systemd/templates`` (this package's ``templates`` is a link to it,
and so is the Ansible role's ``templates``). The Jinja2 options match Ansible's ``template``
module (``trim_blocks``, trailing newline kept) so both render byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from host.provision.plan import GpuPlan, KitSettings

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
UNIT_DIR = "/etc/systemd/system"
AGENT_UNIT = "kitebench-agent@.service"
DROPIN_NAME = "10-kitebench.conf"
#: The agent hooks in hooks-path, each with its template. pre-bootstrap and pre-command are one
#: script (hooks/job-policy.j2): the job policy, checked before the job starts and again right
#: before its command (docs/vendor-provisioning.md, "The job policy").
HOOK_TEMPLATES = {
    "environment": "hooks/environment.j2",
    "pre-exit": "hooks/pre-exit.j2",
    "pre-bootstrap": "hooks/job-policy.j2",
    "pre-command": "hooks/job-policy.j2",
}
HOOKS = tuple(HOOK_TEMPLATES)
#: The hooks whose content must be exactly what render produces (they use no host setting).
POLICY_HOOKS = ("pre-bootstrap", "pre-command")
#: The one command the job policy lets an agent run: the step of pipeline.yml and of
#: ``kitebench pipeline render`` (host.pipeline). The hook spells it out; tests tie the two.
ALLOWED_COMMAND = "kitebench job"


def agent_instance(index: int) -> str:
    return f"kitebench-agent@{index}.service"


def gpu_slice(index: int) -> str:
    return f"kitebench-gpu{index}.slice"


@dataclass(frozen=True)
class RenderedFile:
    path: str  # absolute path on the host
    content: str
    mode: int


def _env():
    import jinja2  # only render needs it

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # unit files and shell, not HTML
    )


def render_hook(hook: str, kit: KitSettings) -> str:
    """The content of one agent hook, as render writes it (``vendor check`` compares with it)."""
    return _env().get_template(HOOK_TEMPLATES[hook]).render(kit=kit.model_dump())


def render_files(kit: KitSettings, gpus: list[GpuPlan]) -> list[RenderedFile]:
    env = _env()
    k = kit.model_dump()

    def render(name: str, **ctx: object) -> str:
        return env.get_template(name).render(kit=k, **ctx)

    files = [
        RenderedFile(f"{UNIT_DIR}/{AGENT_UNIT}", render("kitebench-agent@.service.j2"), 0o644),
        RenderedFile(f"{UNIT_DIR}/kitebench.slice", render("kitebench.slice.j2"), 0o644),
    ]
    for gpu in gpus:
        g = gpu.model_dump()
        files.append(
            RenderedFile(
                f"{UNIT_DIR}/{agent_instance(gpu.index)}.d/{DROPIN_NAME}",
                render("kitebench-agent-gpu.conf.j2", gpu=g),
                0o644,
            )
        )
        files.append(
            RenderedFile(
                f"{UNIT_DIR}/{gpu_slice(gpu.index)}", render("kitebench-gpu.slice.j2", gpu=g), 0o644
            )
        )
    for hook, template in HOOK_TEMPLATES.items():
        files.append(RenderedFile(f"{kit.hooks_dir}/{hook}", render(template), 0o755))
    return files
