"""Host side of a job: runs on the vendor GPU host (as the agent user), never in the image.

``kitebench job`` (the pipeline step) = :func:`runner.host.job.run_job` + :mod:`runner.host.publish`:
validate the payload on the host, run ``python -m runner`` in a container isolated by
:func:`runner.host.container.container_kwargs` (one GPU by UUID, cpuset, memory, pids, no network,
read-only root, non-root, no capabilities, an env allow-list), read result.json back, and publish
it through ``buildkite-agent``.

Modules here may import the docker SDK, lazily (the runner image does not install it).
"""
