"""The contract every plane shares: the payload and result models, the payload codec, the signed
result file and the job budget.

The control plane (``launcher``), the vendor host (``host``) and the in-container runner
(``runner``) all import it; it imports none of them, so the runner image installs exactly
``contract`` and ``runner`` (and pydantic).
"""

__version__ = "0.1.0"
