"""Write the CLIP tokenizer files the single-file loader ships (`vocab.json`, `merges.txt`).

Source: OpenAI CLIP's byte-pair vocabulary `bpe_simple_vocab_16e6.txt.gz` (MIT licence, (c) 2021
OpenAI), as shipped inside the `open_clip_torch` wheel on PyPI (MIT licence). Every Stable
Diffusion text encoder (SD1.x's CLIP ViT-L, SD2.x's OpenCLIP ViT-H, SDXL's two) uses this one
vocabulary; they differ only in the padding token, which the loader sets.

Reproduce:

    pip download --no-deps open_clip_torch==3.3.0 -d /tmp/wheels
    python scripts/make_clip_tokenizer.py /tmp/wheels/open_clip_torch-3.3.0-py3-none-any.whl

The conversion is the one OpenAI's `clip/simple_tokenizer.py` does in memory: the 256 byte
symbols, the same with the end-of-word mark `</w>`, one token per merge (the first 48,894 merges
of the file), then `<|startoftext|>` and `<|endoftext|>`: 49,408 tokens.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import zipfile
from pathlib import Path

VOCAB_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
VOCAB_SIZE = 49408
NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48,894
DEFAULT_OUT = (
    Path(__file__).resolve().parents[1] / "src/t2i_adapter/generation/single_file_configs/clip_tokenizer"
)


def bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table, in byte order of its listing."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def read_bpe_file(source: Path) -> bytes:
    """The gzipped merges file, from the wheel (or given directly), checked against its known hash."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            data = wheel.read(VOCAB_MEMBER)
    else:
        data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != VOCAB_SHA256:
        raise SystemExit(f"{source}: {VOCAB_MEMBER} has sha256 {digest}, expected {VOCAB_SHA256}")
    return data


def tokenizer_files(gzipped: bytes) -> tuple[dict[str, int], list[str]]:
    """(vocab token -> id, merges as 'a b' lines) exactly as OpenAI's simple tokenizer builds them."""
    lines = gzip.decompress(gzipped).decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]  # line 0 is a header
    alphabet = bytes_to_unicode()
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != VOCAB_SIZE or len(set(tokens)) != VOCAB_SIZE:
        raise SystemExit(f"expected {VOCAB_SIZE} distinct tokens, got {len(set(tokens))}")
    return {token: index for index, token in enumerate(tokens)}, merges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder ({DEFAULT_OUT})")
    args = parser.parse_args()
    vocab, merges = tokenizer_files(read_bpe_file(args.source))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
