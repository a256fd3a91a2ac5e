# torch (CPU build) and NumPy for the example tasks and the harness's torch/NumPy paths. Pinned
# torch: the tests need a torch, not the newest one (a CPU wheel of this version is cached).
if ! python3 -c "import torch" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
if ! python3 -c "import numpy" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check numpy
fi
