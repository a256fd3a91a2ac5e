"""``python -m runner.harness <mode> <cases>``: the built-in harness in the current directory."""

from runner.harness import main

main()
