"""The in-container runner: decodes the payload, runs the kernel harness or the vLLM benchmark
and always writes a signed ``result.json``.

It imports only ``contract`` (and pydantic), never ``launcher`` or ``host``: the runner image
installs exactly ``contract`` and ``runner``.
"""

from contract import __version__

__all__ = ["__version__"]
