"""Pack the example vLLM fork archives from the INSTALLED vLLM (run with the vLLM env's python).

    python examples/vllm_tiny/make_forks.py OUT_DIR

Writes, each as ``vllm-fork/vllm/...`` in a .tar.gz:
  baseline.tar.gz       a few files copied unchanged (a Python-only fork that changes nothing)
  perturbed.tar.gz      the logits processor adds +5 to token 0's logit (quality changes)
  broken_import.tar.gz  vllm/__init__.py imports a module that does not exist
"""

import importlib.util
import io
import sys
import tarfile
from pathlib import Path

COPIED = ["model_executor/layers/logits_processor.py", "sampling_params.py"]
LOGITS = "model_executor/layers/logits_processor.py"
# The scale step ends LogitsProcessor.forward; the perturbation goes right after it.
ANCHOR = "            if self.scale != 1.0:\n                logits *= self.scale\n"
PERTURB = ANCHOR + "            logits[..., 0] += 5.0  # example fork: changes the model's output\n"


def installed_vllm() -> Path:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("vLLM is not installed for this python")
    return Path(spec.submodule_search_locations[0])


def pack(out: Path, files: dict) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        for rel, text in sorted(files.items()):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"vllm-fork/vllm/{rel}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tf.addfile(info, io.BytesIO(data))
    return out


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    src = installed_vllm()
    base = {rel: (src / rel).read_text(encoding="utf-8") for rel in COPIED}
    pack(out / "baseline.tar.gz", base)
    if ANCHOR not in base[LOGITS]:
        sys.exit(f"cannot patch {LOGITS}: its scale step changed in this vLLM version")
    pack(out / "perturbed.tar.gz", {**base, LOGITS: base[LOGITS].replace(ANCHOR, PERTURB, 1)})
    init = (src / "__init__.py").read_text(encoding="utf-8")
    broken = init + "\nimport vllm._kitebench_no_such_module  # example fork: breaks the import\n"
    pack(out / "broken_import.tar.gz", {**base, "__init__.py": broken})
    for name in ("baseline", "perturbed", "broken_import"):
        print(out / f"{name}.tar.gz")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
