"""Kernel submissions (``lang`` py and cu): the field's harness protocol.

workdir      a fresh private dir per run; sources and the ``k: v; k: v`` cases file
process      spawn, capture with a cap, kill the whole process tree
capture      bounded pipe readers
protocol     POPCORN_FD ``key: value`` lines → run.result
compile      nvcc
environment  what the submission's environment holds (and what it must not)
execute      modes → runs, results, score
"""

from runner.kernels.execute import run_kernel

__all__ = ["run_kernel"]
