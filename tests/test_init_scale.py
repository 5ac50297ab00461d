"""Inits start on the scale of the backbone's real tokens: they read what the embedding
module returns (Gemma scales its table by sqrt(d)), and the ``scaled`` inits (DPT's factors,
ULPT's scale and shift, Residual's LayerNorm gain) match the token embeddings' standard
deviation, while the authors' inits stay bit-exact."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import softprompt
from softprompt.backbones import backbone_info
from softprompt.prompts import REGISTRY, BackboneInfo, ConfigError, build_method, make_config
from softprompt.prompts.base import INIT_VOCAB_POOL, PromptConfig


def tiny_gemma(seed: int = 0, d: int = 32):
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(seed)
    config = GemmaConfig(vocab_size=128, hidden_size=d, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    return GemmaForCausalLM(config).eval()


def tiny_llama_with_std(std: float, d: int = 64, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=128, hidden_size=d, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, std, generator=torch.Generator().manual_seed(seed))
    return model


# -- inits read the embedding module, not the raw table ---------------------------------------


def test_vocab_init_copies_what_gemmas_embedding_module_returns():
    gemma = tiny_gemma()
    module = gemma.get_input_embeddings()
    model = softprompt.attach(gemma, "prompt", length=6, init="vocab", seed=3)
    ids = torch.randint(0, 128, (6,), generator=torch.Generator().manual_seed(3))  # token_init's draw
    with torch.no_grad():
        expected = module(ids)
    assert torch.equal(model.prompt.embedding.detach(), expected)
    # and not the raw table: Gemma's module multiplies it by sqrt(d)
    raw = module.weight.detach()[ids]
    assert not torch.allclose(expected, raw)
    torch.testing.assert_close(expected, raw * math.sqrt(32))


def test_text_init_copies_what_the_embedding_module_returns():
    class Tokenizer:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [5, 9]}

    gemma = tiny_gemma()
    model = softprompt.attach(gemma, "prompt", length=5, init="text", init_text="five nine", tokenizer=Tokenizer())
    with torch.no_grad():
        expected = gemma.get_input_embeddings()(torch.tensor([5, 9, 5, 9, 5]))
    assert torch.equal(model.prompt.embedding.detach(), expected)


def test_embed_std_is_the_modules_output_std_over_the_vocab_pool():
    gemma = tiny_gemma()
    info = backbone_info(gemma)
    with torch.no_grad():
        out = gemma.get_input_embeddings()(torch.arange(128))
    assert info.embed_std == pytest.approx(float(out.std()), rel=1e-6)
    assert info.embed_std == pytest.approx(float(gemma.get_input_embeddings().weight.detach().std()) * math.sqrt(32), rel=1e-4)


def test_normal_init_matches_embed_std():
    gemma = tiny_gemma()
    info = backbone_info(gemma)
    model = softprompt.attach(gemma, "prompt", length=200, init="normal", seed=0)
    assert float(model.prompt.embedding.detach().std()) == pytest.approx(info.embed_std, rel=0.05)


def test_embed_std_reads_only_the_first_ids():
    """A large vocabulary is never run through the module whole (Llama-3's table is 2 GB)."""
    vocab, d = 3 * INIT_VOCAB_POOL, 8
    table = torch.randn(vocab, d, generator=torch.Generator().manual_seed(0))
    table[INIT_VOCAB_POOL:] *= 100.0  # rare ids far off scale: they must not count
    seen: list[int] = []

    def embed(ids: torch.Tensor) -> torch.Tensor:
        seen.append(ids.numel())
        return table[ids]

    info = BackboneInfo(embed_dim=d, vocab_size=vocab, embed=embed)
    assert max(seen) == INIT_VOCAB_POOL
    assert info.embed_std == pytest.approx(float(table[:INIT_VOCAB_POOL].std()), rel=1e-6)


def test_embeddings_alone_still_work_as_a_row_lookup():
    table = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)) * 0.1
    info = BackboneInfo(embed_dim=8, vocab_size=50, embeddings=table)
    assert torch.equal(info.embed(torch.tensor([3, 7])), table[[3, 7]])
    assert info.embed_std == pytest.approx(float(table.std()), rel=1e-6)
    assert BackboneInfo(embed_dim=8, vocab_size=50).embed_std is None


# -- DPT: scaled ---------------------------------------------------------------------------


def test_dpt_scaled_matches_the_embedding_std():
    llama = tiny_llama_with_std(0.05)
    info = backbone_info(llama)
    assert info.embed_std == pytest.approx(0.05, rel=0.05)
    model = softprompt.attach(llama, "dpt", length=100, bottleneck=10, init="scaled", seed=0)
    prompt = model.prompt_embeddings().detach()
    assert prompt.shape == (100, 64)
    assert abs(float(prompt.std()) - info.embed_std) < 0.1 * info.embed_std
    c = math.sqrt(3 * info.embed_std / math.sqrt(10))
    for factor in (model.prompt.a, model.prompt.b):
        assert float(factor.abs().max()) <= c


# Golden values of the authors' U(-0.5, 0.5) init (n=100, b=10, d=64, seed 0), taken before
# the scaled init and the embedding statistics were added.
UNIFORM_GOLDEN = {("a", 0, 0): -0.003743410110473633, ("a", 99, 9): -0.09613656997680664, ("b", 9, 63): 0.08320951461791992}


def test_dpt_uniform_is_unchanged():
    for info in (BackboneInfo(embed_dim=64, vocab_size=50, embeddings=torch.zeros(50, 64)), backbone_info(tiny_llama_with_std(0.05))):
        module = build_method(make_config("dpt", length=100, bottleneck=10), info, seed=0)
        assert module.config.init == "uniform"  # still the default
        for (name, i, j), value in UNIFORM_GOLDEN.items():
            assert getattr(module, name)[i, j].item() == value


def test_dpt_scaled_needs_embedding_statistics():
    config = make_config("dpt", length=4, bottleneck=2, init="scaled")
    with pytest.raises(ConfigError, match="embed_std"):
        build_method(config, BackboneInfo(embed_dim=8, vocab_size=50))
    # loading saved values needs none: zeros of the right shapes
    module = build_method(config, BackboneInfo(embed_dim=8, vocab_size=50, skip_init=True))
    assert module.a.shape == (4, 2) and module.b.shape == (2, 8)
    assert not module.a.any() and not module.b.any()


@pytest.mark.parametrize("method, options", [
    ("dpt", {"bottleneck": 3, "init": "scaled"}),
    ("ulpt", {"rank": 2, "init": "scaled"}),
    ("residual", {"bottleneck": 4, "norm_init": "scaled"}),
])
def test_scaled_saves_and_loads_with_its_learning_rates(tmp_path, method, options):
    """Loading measures nothing (skip_init): what the scaled init measured is stored, so the
    prompt and its optimizer groups (ULPT's rates follow embed_std) come back the same."""
    llama = tiny_llama_with_std(0.05)
    model = softprompt.attach(llama, method, length=5, seed=1, **options)
    model.save(tmp_path / "p")
    again = softprompt.load(llama, tmp_path / "p")
    assert torch.equal(again.prompt_embeddings(), model.prompt_embeddings())
    assert again.prompt.config == model.prompt.config

    def groups(m):
        return [(g.name, g.lr, g.lr_factor) for g in m.prompt.param_groups()]

    assert groups(again) == groups(model)


# -- Residual: the LayerNorm's gain, paper and scaled ---------------------------------------


def _residual_branch(module) -> torch.Tensor:  # [n, d]: what the MLP adds to E
    return module() - module.embedding


def test_residual_paper_norm_starts_at_one():
    module = build_method(make_config("residual", length=50, bottleneck=16), backbone_info(tiny_llama_with_std(0.05)), seed=0)
    assert module.config.norm_init == "paper"  # still the default
    assert torch.equal(module.norm.weight, torch.ones(64)) and not module.norm.bias.any()
    assert float(_residual_branch(module).detach().std()) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("std", [0.02, 0.3])
def test_residual_scaled_norm_starts_at_the_embedding_std(std):
    info = backbone_info(tiny_llama_with_std(std))
    module = build_method(make_config("residual", length=50, bottleneck=16, norm_init="scaled"), info, seed=0)
    assert torch.equal(module.norm.weight, torch.full((64,), info.embed_std)) and not module.norm.bias.any()
    branch = _residual_branch(module).detach()
    # LayerNorm gives each row mean 0 and variance 1 (up to eps) before the gain
    assert float(branch.std(dim=-1, unbiased=False).mean()) == pytest.approx(info.embed_std, rel=1e-3)
    assert float(module.embedding.detach().std()) == pytest.approx(info.embed_std, rel=0.2)  # E: real tokens
    # only the gain's start differs from the paper's init: same draws for E and the MLP
    paper = build_method(make_config("residual", length=50, bottleneck=16), info, seed=0)
    for name in ("embedding", "down.weight", "down.bias", "up.weight", "up.bias", "norm.bias"):
        assert torch.equal(module.get_parameter(name), paper.get_parameter(name)), name


def test_residual_scaled_norm_needs_embedding_statistics():
    config = make_config("residual", length=4, bottleneck=2, norm_init="scaled")
    info = BackboneInfo(embed_dim=8, vocab_size=50, embeddings=torch.randn(50, 8))
    info.embed_std = None  # E's vocab init has its rows; the gain has no statistics
    with pytest.raises(ConfigError, match="norm_init='scaled' needs the standard deviation"):
        build_method(config, info)
    with pytest.raises(ConfigError, match="norm_init"):
        make_config("residual", length=4, norm_init="unit")


# -- ULPT: the paper's initial scale as documented; scaled -----------------------------------


def test_ulpt_initial_std_is_as_documented():
    r, d = 2, 64
    module = build_method(make_config("ulpt", length=400, rank=r), BackboneInfo(embed_dim=d, vocab_size=50), seed=0)
    assert module.config.init == "paper"  # still the default
    assert torch.equal(module.scale, torch.ones(d)) and torch.equal(module.shift, torch.zeros(d))
    assert float(module().std()) == pytest.approx(math.sqrt(r * 2 / (r + d)), rel=0.15)
    assert [(g.name, len(g.params)) for g in module.param_groups()] == [("prompt", 3)]


@pytest.mark.parametrize("std", [0.02, 0.3])
def test_ulpt_scaled_starts_at_the_embedding_std(std):
    r, d = 2, 64
    info = backbone_info(tiny_llama_with_std(std, d=d))
    module = build_method(make_config("ulpt", length=400, rank=r, init="scaled"), info, seed=0)
    assert module.config.embed_std == info.embed_std  # measured once, stored with the prompt
    c = info.embed_std / math.sqrt(r * 2 / (r + d))
    assert torch.equal(module.scale, torch.full((d,), c)) and torch.equal(module.shift, torch.zeros(d))
    assert float(module().std()) == pytest.approx(info.embed_std, rel=0.15)
    groups = module.param_groups()
    assert [(g.name, g.lr, g.lr_factor) for g in groups] == [("prompt", None, 1.0), ("scale", None, c), ("shift", None, info.embed_std)]
    assert [g.peak(0.1) for g in groups] == [0.1, 0.1 * c, 0.1 * info.embed_std]
    assert sum(p.numel() for g in groups for p in g.params) == module.num_trainable()


def test_ulpt_scaled_needs_embedding_statistics():
    config = make_config("ulpt", length=4, init="scaled")
    with pytest.raises(ConfigError, match="embed_std"):
        build_method(config, BackboneInfo(embed_dim=8, vocab_size=50))
    given = build_method(make_config("ulpt", length=4, init="scaled", embed_std=0.5), BackboneInfo(embed_dim=8, vocab_size=50))
    assert given.config.embed_std == 0.5
    with pytest.raises(ConfigError, match="embed_std"):
        make_config("ulpt", length=4, init="scaled", embed_std=0.0)


def test_ulpt_scaled_is_adam_on_the_prompt_in_embedding_units():
    """The docstring's claim: training z, s, beta with the scaled groups' rates is Adam at one
    rate on s = c*s_hat, beta = sigma*beta_hat (exact up to Adam's eps and weight decay, both
    set to nothing here)."""
    info = backbone_info(tiny_llama_with_std(0.05))
    module = build_method(make_config("ulpt", length=6, rank=2, init="scaled"), info, seed=2)
    c, sigma = module.config.unit_scale(64), module.config.embed_std
    z, s_hat, b_hat = (torch.nn.Parameter(t.detach().clone()) for t in (module.z, module.scale / c, module.shift / sigma))
    target = torch.randn(6, 64, generator=torch.Generator().manual_seed(0)) * 0.05
    lr = 0.1
    ours = torch.optim.Adam([{"params": g.params, "lr": g.peak(lr)} for g in module.param_groups()], eps=1e-30)
    naive = torch.optim.Adam([z, s_hat, b_hat], lr=lr, eps=1e-30)
    for _ in range(4):
        for opt, prompt in ((ours, module), (naive, lambda: (z @ module.projection) * (c * s_hat) + sigma * b_hat)):
            opt.zero_grad()
            ((prompt() - target) ** 2).sum().backward()
            opt.step()
    assert torch.allclose(module.z, z, atol=1e-5)
    assert torch.allclose(module.scale, c * s_hat, rtol=1e-5) and torch.allclose(module.shift, sigma * b_hat, atol=1e-6)


# -- recipes placeholder ---------------------------------------------------------------------


def test_recipes_is_a_class_level_placeholder():
    assert PromptConfig.recipes == {}
    for config_cls, _ in REGISTRY.values():
        assert "recipes" not in {f.name for f in dataclasses.fields(config_cls)}
        assert isinstance(config_cls.recipes, dict)
        assert "recipes" not in config_cls(length=3).to_dict()
