"""Is a task's main file the built-in harness's documented stub?

The runner starts the judge itself (as the runner's user, not the submission's) only for a main
file that does nothing but call :func:`runner.harness.main`: then running our judge module is
exactly what the file would do. Accepted (docs/harness.md)::

    \"\"\"any docstring\"\"\"
    from runner.harness import main
    main()                      # or main(reference="...", submission="...", entry="...")

optionally under ``if __name__ == "__main__":``. Anything else is a foreign harness: it runs as
the submission, and only the cross-checks (runner.kernels.integrity) vouch for its numbers.
"""

from __future__ import annotations

import ast

#: main()'s keywords the stub may set, as string constants (they name modules / a function).
_KEYWORDS = ("reference", "submission", "entry")


def stub_options(source: str) -> dict[str, str] | None:
    """The ``main()`` keywords of a stub, or None when ``source`` is not the stub."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if len(body) != 2:
        return None
    imp, call = body
    if not (isinstance(imp, ast.ImportFrom) and imp.module == "runner.harness" and imp.level == 0
            and [(a.name, a.asname) for a in imp.names] == [("main", None)]):
        return None
    if isinstance(call, ast.If):
        test = call.test
        if not (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
                and test.left.id == "__name__" and len(test.ops) == 1
                and isinstance(test.ops[0], ast.Eq)
                and isinstance(test.comparators[0], ast.Constant)
                and test.comparators[0].value == "__main__"
                and len(call.body) == 1 and not call.orelse):
            return None
        call = call.body[0]
    if not (isinstance(call, ast.Expr) and isinstance(call.value, ast.Call)):
        return None
    fn = call.value
    if not (isinstance(fn.func, ast.Name) and fn.func.id == "main") or fn.args:
        return None
    opts: dict[str, str] = {}
    for kw in fn.keywords:
        if kw.arg not in _KEYWORDS or not isinstance(kw.value, ast.Constant) \
                or not isinstance(kw.value.value, str) or not kw.value.value.isidentifier():
            return None
        opts[kw.arg] = kw.value.value
    return opts
