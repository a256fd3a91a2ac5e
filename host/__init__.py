"""The vendor plane: everything that runs on the vendor's GPU host, never in the image.

- the job wrapper (``kitebench job``, the pipeline step): :mod:`host.job`, :mod:`host.container`,
  :mod:`host.cgroup`, :mod:`host.publish`, :mod:`host.settings`;
- provisioning of per-GPU agents and the go-live check: :mod:`host.provision`;
- the runner image check (``kitebench image validate``): :mod:`host.image_validate`;
- the pipeline a vendor uploads (``kitebench pipeline render``): :mod:`host.pipeline`.

``kitebench job`` (the pipeline step) = :func:`host.job.run_job` + :mod:`host.publish`:
validate the payload on the host, run ``python -m runner`` in a container isolated by
:func:`host.container.container_kwargs` (one GPU by UUID, cpuset, memory, pids, no network,
read-only root, non-root, no capabilities, an env allow-list), read result.json back, and publish
it through ``buildkite-agent``.

Modules here may import the docker SDK, lazily (the runner image does not install it).
"""
