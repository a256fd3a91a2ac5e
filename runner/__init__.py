"""kitebench vendor plane: the contract, the codec and the in-container runner.

Nothing here imports ``launcher``: the runner image installs only this package (and pydantic).
"""

__version__ = "0.1.0"
