"""What fits where: memory of a prompt-tuning run on 1B, 8B and 70B Llama-style models, estimated
from their published shapes, for the docs' table (docs/large-models.md).

    python -m benchmarks.memory_table            # the markdown table
    python -m benchmarks.memory_table --tokens 512 --batch 4

An estimate, not a measurement (the measured SmolLM2 figures are in benchmarks/README.md):
* weights: float32 4 bytes a parameter, bf16 2; 4-bit (bitsandbytes NF4 with double
  quantization) ~0.53 bytes for the parameters of linear layers, while the embedding and the
  output head stay bf16, as transformers' BitsAndBytesConfig leaves them;
* activations kept for the backward pass: the gradient must reach the prompt at the input, so
  every layer keeps what its backward needs, as in full fine-tuning but without weight
  gradients. Per token and layer ~34·d bytes in 16-bit with a fused attention (Korthikanti et
  al. 2022, "Reducing Activation Recomputation", without the s² term flash/SDPA attention avoids;
  a SwiGLU block of width ~3.5·d keeps about what a 4·d GELU block keeps), twice that in
  float32. With gradient checkpointing only each layer's input (2·d bytes) plus one layer's
  working set. Tokens: the packed step's n + B·T (the prompt once per batch);
* the prompt: n·d float32 parameters, gradient and AdamW's two moments (16 bytes each);
* the head: softprompt computes logits only where labels are (a few per row); a full-logits
  step (what PEFT computes) adds B·T·V·4 bytes of float32 logits and as much for their gradient.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Shape:
    name: str
    params: float  # all parameters
    d: int  # hidden size
    layers: int
    vocab: int
    tied: bool  # the output head shares the embedding matrix


# Published configurations: Llama 3.2 1B, Llama 3.1 8B, Llama 3.1 70B.
MODELS = (
    Shape("1B (Llama 3.2 1B)", 1.236e9, 2048, 16, 128_256, True),
    Shape("8B (Llama 3.1 8B)", 8.030e9, 4096, 32, 128_256, False),
    Shape("70B (Llama 3.1 70B)", 70.55e9, 8192, 80, 128_256, False),
)
DEVICES = (("1 × 24 GB", 1, 24), ("1 × 80 GB", 1, 80), ("8 × 80 GB", 8, 80))


def weights(m: Shape, dtype: str) -> float:
    if dtype == "float32":
        return 4 * m.params
    if dtype == "bfloat16":
        return 2 * m.params
    embedding = m.vocab * m.d * (1 if m.tied else 2)  # embedding and head stay 16-bit
    return 0.53 * (m.params - embedding) + 2 * embedding


def activations(m: Shape, dtype: str, tokens: int, checkpointing: bool) -> float:
    width = 4 if dtype == "float32" else 2
    per_layer = 17 * width * m.d * tokens  # ~34·d bytes a token in 16-bit
    if checkpointing:
        return m.layers * width * m.d * tokens + per_layer
    return m.layers * per_layer


def prompt_state(m: Shape, n: int) -> float:
    return 16 * n * m.d


def fits(total_per_device: float, memory_gb: float) -> str:
    return "fits" if total_per_device <= 0.9 * memory_gb * GB else "no"  # 10% for the CUDA context, fragmentation


def verdict(w: float, act: float, ckpt: float, count: int, memory: float) -> str:
    """Whether a run fits: on one device; on several, data parallel (each device a whole copy of
    the weights, its share of the batch) or else FSDP (the weights sharded too)."""
    share = 1 if count == 1 else count
    for how, weight in (("", w), (" (FSDP)", w / count)) if count > 1 else (("", w),):
        if fits(weight + act / share, memory) == "fits":
            return "fits" + (how or (" (data parallel)" if count > 1 else ""))
        if fits(weight + ckpt / share, memory) == "fits":
            return "with checkpointing" + (how or (" (data parallel)" if count > 1 else ""))
    return "no"


def table(batch: int, seq: int, n: int) -> str:
    tokens = n + batch * seq
    lines = [f"Batch {batch} × {seq} tokens, a {n}-token prompt ({tokens:,} tokens in the packed step). GB = 10⁹ bytes.", "",
             "| model | backbone | weights | activations | with checkpointing | prompt + AdamW | full logits (PEFT) | " +
             " | ".join(name for name, _, _ in DEVICES) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(DEVICES)]
    for m in MODELS:
        for dtype in ("float32", "bfloat16", "4bit"):
            w = weights(m, dtype)
            act = activations(m, "float32" if dtype == "float32" else "bfloat16", tokens, False)
            ckpt = activations(m, "float32" if dtype == "float32" else "bfloat16", tokens, True)
            cells = [verdict(w, act, ckpt, count, memory) for _, count, memory in DEVICES]
            lines.append(f"| {m.name} | {dtype} | {w / GB:.1f} | {act / GB:.1f} | {ckpt / GB:.1f} | "
                         f"{prompt_state(m, n) / 1e6:.1f} MB | {2 * batch * seq * m.vocab * 4 / GB:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256, help="text tokens a row")
    parser.add_argument("--length", type=int, default=100, help="prompt tokens")
    args = parser.parse_args(argv)
    print(table(args.batch, args.tokens, args.length))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
