"""Tiny random models built from configs (no network), and paths to the real data and model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SOFTPROMPT_TEST_DATA", ROOT.parent / "shared" / "data"))


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(config).eval()


def tiny_t5(seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    return T5ForConditionalGeneration(config).eval()


BUILDERS = {"llama": tiny_llama, "gpt2": tiny_gpt2, "t5": tiny_t5}


@pytest.fixture(params=["llama", "t5"])
def backbone_name(request):
    return request.param


def batch_for(backbone, batch: int = 3, length: int = 7, seed: int = 0, padding: str = "right"):
    """Random ``input_ids``, ``attention_mask`` (rows of different lengths) and ``labels``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 128, (batch, length), generator=g)
    lengths = torch.tensor([length - (i % 3) for i in range(batch)])
    pos = torch.arange(length).unsqueeze(0)
    if padding == "right":
        mask = (pos < lengths.unsqueeze(1)).long()
    else:
        mask = (pos >= (length - lengths).unsqueeze(1)).long()
    ids = ids.masked_fill(mask == 0, 0)
    if backbone.config.is_encoder_decoder:
        labels = torch.randint(3, 128, (batch, 3), generator=g)
    else:
        labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def tiny_qwen2(seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
    return Qwen2ForCausalLM(config).eval()


def tiny_bart(seed: int = 0):
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    config = BartConfig(vocab_size=128, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)
    return BartForConditionalGeneration(config).eval()


BUILDERS.update({"qwen2": tiny_qwen2, "bart": tiny_bart})


@pytest.fixture(scope="session")
def gemma3():
    """The real Gemma 3 270M (base), float32, loaded once per test session: ``(model, tokenizer)``.
    Skips, saying what to install, when its packages are missing. Tests must leave it as they
    found it (frozen, eval mode)."""
    from softprompt.backbones import load_backbone
    from softprompt.backbones.load import model_available
    from softprompt.backbones.packaged import GEMMA3

    if not model_available("gemma-3-270m"):
        pytest.skip(f"Gemma 3 270M is not installed: {GEMMA3.install}")
    return load_backbone("gemma-3-270m")


@pytest.fixture(scope="module")
def gemma3_as_found(gemma3):
    """Checks, after a module's tests, that they left the real Gemma as they found it: a few
    tensors (embedding table, a middle layer, the final norm) unchanged, eval mode, frozen, no
    gradient. Use it as ``pytest.mark.usefixtures("gemma3_as_found")``."""
    backbone = gemma3[0]
    named = list(backbone.named_parameters())
    before = {n: p.detach().clone() for n, p in (named[0], named[1], named[len(named) // 2], named[-1])}
    yield
    now = dict(backbone.named_parameters())
    assert all(torch.equal(now[n], v) for n, v in before.items())
    assert not backbone.training
    assert all(not p.requires_grad and p.grad is None for p in backbone.parameters())
