"""Build a tiny Llama model directory (config, byte-level BPE tokenizer, weights) for vLLM.

It lets the whole model path run on a CPU with no download: the tests and ``examples/vllm_tiny``
use it. The weights are written, not random: vLLM's dummy weights are ~0, so every next token is
about equally likely and greedy decoding is decided by float noise (it can flip between two
servers or batch layouts), which makes outputs impossible to audit. Here the next-token
distribution is peaked, a fixed function of the current token (see :func:`weights`), so honest
greedy outputs agree token for token and garbage is far off. Run with the vLLM venv's python:

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
#: Logit of the successor token; the others get ~N(0, (SCALE / sqrt(HIDDEN))^2). 8 keeps the
#: greedy margin at ~5 nats while a +5 logit on one token still moves the perplexity by ~5 %.
SCALE = 8.0
WEIGHTS_SEED = 1234
#: Written last: its presence means the directory is complete (the name changes with the format).
MARKER = "kitebench-tiny-model-v2.txt"

_TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog while the river runs past the old mill.
Benchmarks measure what they measure; a careful reader asks what was held constant.
Numbers, like 12, 345 and 6789, appear in text as often as words such as model, token and cache.
A server answers requests; a client counts how many answers arrive in each second.
"""


def build(out: Path) -> Path:
    from safetensors.torch import save_file
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
        tie_word_embeddings=False,
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
        save_file(weights(config.vocab_size), str(tmp / "model.safetensors"))
        # Readable by the submission's uid too (its server loads the weights); mkdtemp gave 0700.
        os.chmod(tmp, 0o755)
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        (tmp / MARKER).write_text(f"vocab={config.vocab_size} hidden={HIDDEN} layers={LAYERS}\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def weights(vocab: int) -> dict:
    """A Llama whose layers add nothing (o_proj = down_proj = 0), so the last hidden state is
    the current token's embedding, and whose lm_head maps each token's embedding to a fixed
    successor (a seeded permutation): next token = f(current token), by a wide margin."""
    import torch

    g = torch.Generator().manual_seed(WEIGHTS_SEED)
    emb = torch.randn(vocab, HIDDEN, generator=g)
    emb = emb / emb.norm(dim=1, keepdim=True) * HIDDEN**0.5  # RMS 1: RMSNorm leaves it as is
    succ = torch.randperm(vocab, generator=g)
    head = torch.zeros(vocab, HIDDEN)
    head[succ] = emb * (SCALE / HIDDEN)  # row succ[t] · norm(emb[t]) = SCALE
    inter = 4 * HIDDEN
    w: dict = {
        "model.embed_tokens.weight": emb,
        "model.norm.weight": torch.ones(HIDDEN),
        "lm_head.weight": head,
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        small = lambda *shape: torch.randn(*shape, generator=g) * 0.02  # noqa: E731
        w.update(
            {
                p + "input_layernorm.weight": torch.ones(HIDDEN),
                p + "post_attention_layernorm.weight": torch.ones(HIDDEN),
                p + "self_attn.q_proj.weight": small(HIDDEN, HIDDEN),
                p + "self_attn.k_proj.weight": small(HIDDEN, HIDDEN),
                p + "self_attn.v_proj.weight": small(HIDDEN, HIDDEN),
                p + "self_attn.o_proj.weight": torch.zeros(HIDDEN, HIDDEN),
                p + "mlp.gate_proj.weight": small(inter, HIDDEN),
                p + "mlp.up_proj.weight": small(inter, HIDDEN),
                p + "mlp.down_proj.weight": torch.zeros(HIDDEN, inter),
            }
        )
    return {k: v.contiguous() for k, v in w.items()}


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
