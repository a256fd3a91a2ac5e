"""Build a tiny Llama model directory (config + byte-level BPE tokenizer, no weights) for vLLM.

Served with ``--load-format dummy`` (random weights), it lets the whole model path run on a CPU
with no download: the tests and ``examples/vllm_tiny`` use it. Run with the vLLM venv's python:

    python runner/model/tinymodel.py OUT_DIR

The output is deterministic and written atomically (a temp dir renamed into place), so a cached
copy is either complete or absent.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

VOCAB = 512
# head_dim 64: the CPU attention backend rejects small head sizes such as 16.
HIDDEN, HEADS, LAYERS, MAX_POS = 128, 2, 2, 512
#: Written last: its presence means the directory is complete.
MARKER = "kitebench-tiny-model.txt"

_TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog while the river runs past the old mill.
Benchmarks measure what they measure; a careful reader asks what was held constant.
Numbers, like 12, 345 and 6789, appear in text as often as words such as model, token and cache.
A server answers requests; a client counts how many answers arrive in each second.
"""


def build(out: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_TRAINING_TEXT] * 50, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=MAX_POS,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        torch_dtype="float32",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fast.save_pretrained(tmp)
        config.save_pretrained(tmp)
        (tmp / MARKER).write_text(f"vocab={config.vocab_size} hidden={HIDDEN} layers={LAYERS}\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: tinymodel.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    if not (out / MARKER).is_file():
        build(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
