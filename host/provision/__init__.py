"""Vendor provisioning: per-GPU Buildkite agents (render) and the go-live checklist (check).

``render`` turns the host's GPUs into systemd units, drop-ins, slices and agent hooks from the
Jinja2 templates in ``systemd/templates`` (the Ansible role renders the same files);
``check`` proves a provisioned host is ready. Both read the host through :class:`~.host.Host`
(a root directory plus a command runner), so tests run them against a fake host.
"""
