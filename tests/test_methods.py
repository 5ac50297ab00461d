"""Every registered method: exact parameter counts, config validation, JSON round trip,
and the prompt equals the naive computation of its formula."""

from __future__ import annotations

import json
import math

import pytest
import torch

import softprompt
from softprompt.prompts import REGISTRY, BackboneInfo, ConfigError, build_method, make_config
from softprompt.prompts.ulpt import make_projection

D = 24


def two_token_tokenizer(text, add_special_tokens=False):
    """A tokenizer that reads every text as the ids 3, 4."""
    return {"input_ids": [3, 4]}


def info(d: int = D, vocab: int = 50):
    torch.manual_seed(0)
    return BackboneInfo(embed_dim=d, vocab_size=vocab, embeddings=torch.randn(vocab, d) * 0.1)


def test_registry_is_the_public_list():
    assert softprompt.METHODS == ("prompt", "residual", "dpt", "ulpt", "dept", "rank_probe")


# The papers' figures (issue 2). Each row: method, options, {embed_dim: count}.
PAPER_COUNTS = [
    ("dpt", dict(length=100, bottleneck=10), {512: 6_120, 768: 8_680, 1024: 11_240}),
    ("prompt", dict(length=100), {512: 51_200, 768: 76_800, 1024: 102_400}),
    ("ulpt", dict(length=100, rank=2), {768: 1_736}),
    ("dept", dict(length=60, rank=30, max_length=256), {768: 76_800}),
    ("residual", dict(length=100, bottleneck=400), {512: 462_736, 768: 693_904, 1024: 925_072}),
]


@pytest.mark.parametrize("method,options,counts", PAPER_COUNTS)
def test_paper_parameter_counts(method, options, counts):
    config = make_config(method, **options)
    for d, expected in counts.items():
        assert config.num_parameters(d) == expected
        # the module really has that many trainable parameters
        module = build_method(config, info(d))
        assert module.num_trainable() == expected


def test_rank_probe_count():
    config = make_config("rank_probe", length=7)
    assert config.num_parameters(D) == 7 * 7 + 7 + 7 * D
    assert build_method(config, info()).num_trainable() == 7 * 7 + 7 + 7 * D


@pytest.mark.parametrize("method", softprompt.METHODS)
def test_config_json_round_trip(method):
    config = make_config(method, length=5)
    again = type(config).from_dict(json.loads(config.to_json()))
    assert again == config


@pytest.mark.parametrize(
    "method,options,field",
    [
        ("prompt", dict(length=0), "length"),
        ("prompt", dict(init="zeros"), "init"),
        ("dpt", dict(bottleneck=-1), "bottleneck"),
        ("ulpt", dict(rank=0), "rank"),
        ("ulpt", dict(projection="orthogonal"), "projection"),
        ("dept", dict(alpha=0), "alpha"),
        ("residual", dict(bottleneck=1.5), "bottleneck"),
        ("dpt", dict(rank=2), "rank"),  # not an option of dpt
    ],
)
def test_bad_config_names_the_field(method, options, field):
    with pytest.raises(ConfigError, match=field):
        make_config(method, **options)


def test_unknown_method():
    with pytest.raises(ConfigError, match="unknown method 'lora'"):
        make_config("lora")


@pytest.mark.parametrize("method", softprompt.METHODS)
def test_same_seed_same_init_other_seed_differs(method):
    config = make_config(method, length=6)
    a = build_method(config, info(), seed=3)()
    b = build_method(config, info(), seed=3)()
    c = build_method(config, info(), seed=4)()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_dpt_is_a_low_rank_product():
    m = build_method(make_config("dpt", length=12, bottleneck=3), info())
    p = m()
    assert torch.allclose(p, m.a @ m.b)
    assert torch.linalg.matrix_rank(p) == 3
    assert m.a.abs().max() <= 0.5 and m.b.abs().max() <= 0.5  # U(-0.5, 0.5), the authors' code


def test_dpt_text_init_is_the_text_where_its_rank_fits_and_spare_directions_learn():
    i = info()
    i.tokenizer = two_token_tokenizer  # rows 3, 4, 3, 4, 3: rank 2
    m = build_method(make_config("dpt", length=5, bottleneck=4, init="text", init_text="hi"), i)
    text = i.embeddings[torch.tensor([3, 4, 3, 4, 3])]
    assert torch.allclose(m(), text, atol=1e-6)
    a, b = m.a.detach(), m.b.detach()
    assert torch.equal(a[:, 2:], torch.zeros(5, 2))  # the two directions the text lacks
    rms = lambda x: x.pow(2).mean().sqrt()  # noqa: E731
    assert torch.allclose(rms(a[:, :2]), rms(b[:2]), rtol=1e-5)  # balanced: one Adam step moves both alike
    assert torch.allclose(rms(b[2:]), rms(b[:2]), rtol=1e-5) and (b[2:].abs() > 0).all()
    (m() * torch.randn(5, D)).sum().backward()
    assert (m.a.grad[:, 2:].abs().sum(0) > 0).all()  # spare columns get a gradient from step one


def test_dpt_text_init_is_the_best_rank_b_approximation():
    i = info(vocab=50)
    ids = list(range(10, 18))
    i.tokenizer = lambda text, add_special_tokens=False: {"input_ids": ids}
    m = build_method(make_config("dpt", length=8, bottleneck=3, init="text", init_text="x"), i)
    text = i.embeddings[torch.tensor(ids)].double()
    u, s, vh = torch.linalg.svd(text, full_matrices=False)
    naive = (u[:, :3] * s[:3]) @ vh[:3]  # Eckart-Young: the truncated SVD
    assert torch.allclose(m().double(), naive, atol=1e-6)
    assert torch.isclose(torch.linalg.norm(m().double() - text), s[3:].pow(2).sum().sqrt(), rtol=1e-4)
    with pytest.raises(ConfigError, match="dpt: init"):
        make_config("dpt", init="vocab")


def test_ulpt_formula_and_frozen_projection():
    m = build_method(make_config("ulpt", length=5, rank=2, projection_seed=11), info())
    manual = (m.z @ m.projection) * m.scale + m.shift
    assert torch.equal(m(), manual)
    assert torch.equal(m.projection, make_projection(2, D, "xavier", 11))
    assert not m.projection.requires_grad
    assert "projection" not in dict(m.named_parameters())
    assert "projection" not in m.state_dict()  # rebuilt from the seed, never saved
    bound = math.sqrt(6 / (2 + D))
    assert m.projection.abs().max() <= bound
    assert torch.equal(m.scale, torch.ones(D)) and torch.equal(m.shift, torch.zeros(D))


def test_ulpt_projection_depends_only_on_seed():
    torch.manual_seed(123)  # the global RNG must not matter
    a = make_projection(2, 16, "normal", 5)
    torch.manual_seed(456)
    b = make_projection(2, 16, "normal", 5)
    assert torch.equal(a, b)
    assert not torch.equal(a, make_projection(2, 16, "normal", 6))


def test_residual_formula():
    m = build_method(make_config("residual", length=4, bottleneck=8), info())
    e = m.embedding
    h = torch.relu(e @ m.down.weight.T + m.down.bias) @ m.up.weight.T + m.up.bias
    manual = e + torch.nn.functional.layer_norm(h, (D,), m.norm.weight, m.norm.bias, m.norm.eps)
    assert torch.allclose(m(), manual, atol=1e-6)


def test_rank_probe_formula_and_positive_count():
    m = build_method(make_config("rank_probe", length=5), info())
    manual = m.u @ torch.diag(torch.relu(m.sigma)) @ m.v
    assert torch.allclose(m(), manual, atol=1e-6)
    assert m.positive_count() == 5
    with torch.no_grad():
        m.sigma[:2] = -0.1
    assert m.positive_count() == 3
    assert m.diagnostics() == {"positive_sigma": 3.0}
    assert torch.linalg.matrix_rank(m()) == 3


def test_rank_probe_vocab_init_is_the_draw_it_always_was():
    # the default init consumes the generator as before (a rotation from a QR of a Gaussian draw,
    # then vocabulary ids), so every saved seed and SmolLM2/T5 run builds the same prompt
    from softprompt.prompts.base import token_init

    i, n = info(), 6
    m = build_method(make_config("rank_probe", length=n), i, seed=3)
    generator = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator))
    assert torch.equal(m.u.data, q) and torch.equal(m.sigma.data, torch.ones(n))
    assert torch.equal(m.v.data, token_init("vocab", n, i, generator))
    assert [g.name for g in m.param_groups()] == ["prompt"] and len(m.param_groups()[0].params) == 3


def test_rank_probe_text_init_starts_as_the_text_and_lr_mix_is_its_own_group():
    i = info()
    i.tokenizer = two_token_tokenizer
    m = build_method(make_config("rank_probe", length=5, init="text", init_text="hi there", lr_mix=0.003), i)
    assert torch.equal(m.u.data, torch.eye(5))
    assert torch.equal(m(), i.embeddings[torch.tensor([3, 4, 3, 4, 3])])  # vanilla's text init, exactly
    groups = {g.name: g for g in m.param_groups()}
    assert [p is m.v for p in groups["prompt"].params] == [True]
    assert groups["mix"].params[0] is m.u and groups["mix"].params[1] is m.sigma
    assert groups["mix"].peak(0.03) == 0.003 and groups["prompt"].peak(0.03) == 0.03
    for bad in ({"init": "normal"}, {"lr_mix": 0.0}, {"lr_mix": -1e-3}):
        with pytest.raises(ConfigError, match="rank_probe: (init|lr_mix)"):
            make_config("rank_probe", length=5, **bad)


def test_dept_update_follows_real_token_positions():
    m = build_method(make_config("dept", length=2, rank=3, max_length=4, alpha=8.0), info())
    with torch.no_grad():
        m.lora_b.normal_()
    update = (m.lora_a @ m.lora_b) * (8.0 / math.sqrt(3))  # [L, d]
    embeds = torch.zeros(2, 6, D)
    right = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    out = m.adjust_input_embeds(embeds, right)
    assert torch.allclose(out[0, :4], update) and torch.equal(out[0, 4:], torch.zeros(2, D))
    assert torch.allclose(out[1, :4], update) and torch.equal(out[1, 4:], torch.zeros(2, D))
    left = torch.tensor([[0, 0, 1, 1, 1, 1]])
    out = m.adjust_input_embeds(torch.zeros(1, 6, D), left)
    assert torch.equal(out[0, :2], torch.zeros(2, D)) and torch.allclose(out[0, 2:], update)


def test_dept_starts_as_plain_prompt():
    m = build_method(make_config("dept", length=2), info())
    x = torch.randn(2, 5, D)
    assert torch.equal(m.adjust_input_embeds(x, torch.ones(2, 5, dtype=torch.long)), x)


def test_vocab_init_copies_token_embeddings():
    i = info()
    m = build_method(make_config("prompt", length=6), i)
    rows = [any(torch.equal(r, e) for e in i.embeddings[:50]) for r in m.embedding]
    assert all(rows)


def test_text_init_repeats_the_text():
    i = info()
    i.tokenizer = two_token_tokenizer
    m = build_method(make_config("prompt", length=5, init="text", init_text="hi there"), i)
    expected = i.embeddings[torch.tensor([3, 4, 3, 4, 3])]
    assert torch.equal(m.embedding.data, expected)


def test_text_init_without_tokenizer_is_a_clear_error():
    with pytest.raises(ConfigError, match="tokenizer"):
        build_method(make_config("prompt", length=5, init="text", init_text="x"), info())


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_prompt_is_computed_in_full_precision_under_autocast(method):
    """Mixed precision runs the backbone in bf16, but the prompt's reparameterization (ULPT's
    Z·P̃, DPT's A·B, the residual MLP) stays float32: autocast used to round it to bf16 first."""
    from conftest import tiny_llama

    model = softprompt.attach(tiny_llama(), method, length=4, seed=0)
    reference = model.prompt_embeddings()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = model.prompt_embeddings()
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, reference)
