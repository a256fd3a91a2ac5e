"""The task's harness: kitebench's built-in one (POPCORN protocol, checks, timing)."""

from runner.harness import main

main()
