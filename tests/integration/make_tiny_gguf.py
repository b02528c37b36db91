"""Write a tiny Llama-architecture GGUF with seeded random weights and a small valid vocabulary.

No model can be downloaded here, so the integration tests generate one: two layers,
64-wide, a SentencePiece-style ("llama") vocabulary of control tokens, the 256 byte
tokens (byte fallback: any text tokenizes) and a few hundred letters, syllables and
words. The weights are random, so the text is gibberish, which is all streaming,
usage and cancellation tests need. The same seed writes the same file.

Run: ``python tests/integration/make_tiny_gguf.py OUT.gguf [--seed N]`` (needs ``gguf`` and ``numpy``).
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path

import gguf
import numpy as np

N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_LAYER = 2
N_CTX = 2048

SPACE = "\u2581"  # SentencePiece's word-boundary marker
_WORD_TEXT = (
    "the a and of to in is it that was for on are with as be at by this have from or one had "
    "word but not what all were we when your can said there use an each which she do how their "
    "if will up other about out many then them these so some her would make like him into time "
    "has look two more write go see number no way could people my than first water been call who"
)
WORDS = _WORD_TEXT.split()


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types: control tokens, 256 byte tokens, then text pieces."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces: list[str] = [SPACE]
    pieces += list(string.ascii_letters + string.digits + ".,!?;:'\"-()")
    pieces += [SPACE + c for c in string.ascii_letters]
    pieces += [a + b for a in "etaoinshr" for b in "etaoinshr"]
    pieces += [SPACE + w for w in WORDS]
    unique = list(dict.fromkeys(pieces))  # first occurrence of each, in order
    tokens += unique
    types += [gguf.TokenType.NORMAL] * len(unique)
    # Longer pieces score higher, so the tokenizer prefers whole words.
    scores = [0.0] * (3 + 256) + [-100.0 + 10.0 * len(p) for p in unique]
    return tokens, scores, [int(t) for t in types]


def write(path: Path, seed: int = 0) -> Path:
    """Write the model to *path* and return it."""
    rng = np.random.default_rng(seed)
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("rxllm-tiny-random")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    # numpy shapes are (rows, cols) = (out, in); gguf stores them reversed, as llama.cpp expects.
    writer.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", weight(n_vocab, N_EMBD))
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(N_HEAD_KV * head_dim, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(N_HEAD_KV * head_dim, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(N_EMBD, N_FF))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write(args.out, args.seed))


if __name__ == "__main__":
    main()
