"""Every decoder-only architecture transformers can build tiny from its config: the once-per-batch
prompt either equals the naive per-row concatenation (loss, gradients and scores within 1e-4) or
the model falls back to the naive path. There is no third outcome."""

from __future__ import annotations

import pytest
import torch

import softprompt

COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
              head_dim=8, tie_word_embeddings=False)
ARCHITECTURES = {
    "llama": {}, "mistral": {"sliding_window": None}, "qwen2": {}, "qwen3": {}, "gemma": {},
    "gemma2": {"final_logit_softcapping": 3.0, "sliding_window": 64}, "gemma3_text": {"final_logit_softcapping": 3.0, "sliding_window": 64},
    "phi3": {}, "gpt2": {}, "gpt_neox": {}, "falcon": {"new_decoder_architecture": True, "head_dim": ...}, "bloom": {"n_head": 4}, "opt": {"ffn_dim": 64, "word_embed_proj_dim": 32},
    "granite": {"logits_scaling": 8.0}, "cohere": {"logit_scale": 0.5}, "olmo": {}, "olmo2": {}, "stablelm": {}, "phi": {},
}
# known quirks, each with what must happen
QUIRKS = {
    "mistral-window": ("mistral", {"sliding_window": 4}),  # the text passes the window: fall back
}


def build(model_type: str, extra: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    options = {k: v for k, v in {**COMMON, **extra}.items() if v is not ...}  # ...: not this config's option
    config = AutoConfig.for_model(model_type, **options)
    try:
        return AutoModelForCausalLM.from_config(config).eval()
    except Exception as err:  # an architecture this transformers cannot build tiny
        pytest.skip(f"{model_type}: cannot be built from a tiny config here ({type(err).__name__})")


def batch(padding: str):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 128, (3, 6), generator=g)
    lengths = torch.tensor([6, 4, 5])
    pos = torch.arange(6).unsqueeze(0)
    mask = (pos < lengths[:, None]) if padding == "right" else (pos >= (6 - lengths)[:, None])
    mask = mask.long()
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask, ids.masked_fill(mask == 0, -100)


def shared_and_naive(model, ids, mask, labels):
    out = {}
    for shared in (True, False):
        model.zero_grad()
        loss = model(ids, mask, labels, return_logits=False, shared=shared).loss
        loss.backward()
        grads = [p.grad.clone() for p in model.trainable_parameters()]
        with torch.no_grad():
            scores = model.score(ids, mask, labels, shared=shared)
        out[shared] = (loss.detach(), grads, scores)
    return out


def agree(a, b) -> bool:
    def close(x, y):
        return torch.allclose(x, y, rtol=1e-4, atol=1e-4 * max(1.0, float(y.abs().max())))

    return close(a[0], b[0]) and all(close(x, y) for x, y in zip(a[1], b[1])) and close(a[2], b[2])


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("name", list(ARCHITECTURES) + list(QUIRKS))
def test_shared_prompt_equals_naive_or_falls_back(name, padding):
    model_type, extra = QUIRKS.get(name, (name, ARCHITECTURES.get(name, {})))
    backbone = build(model_type, extra)
    model = softprompt.attach(backbone, "prompt", length=3, seed=0, init="normal")
    ids, mask, labels = batch(padding)
    out = shared_and_naive(model, ids, mask, labels)
    uses_shared = model.join.use_shared(model.prompt_embeddings(), ids.shape[1])
    if name in QUIRKS:
        assert not uses_shared
    # the default path is either the shared one, and then it agrees, or the naive one
    assert not uses_shared or agree(out[True], out[False]), f"{name}: shared path differs and is used"
    default = model(ids, mask, labels, return_logits=False).loss.detach()
    torch.testing.assert_close(default, out[False][0], rtol=1e-4, atol=1e-4)


def test_logit_scaling_models_keep_the_shared_path():
    """Granite's logits_scaling and Cohere's logit_scale are applied on the shared path, so
    these models keep the once-per-batch prompt instead of falling back."""
    for model_type, extra in (("granite", ARCHITECTURES["granite"]), ("cohere", ARCHITECTURES["cohere"])):
        model = softprompt.attach(build(model_type, extra), "prompt", length=3, seed=0, init="normal")
        ids, mask, labels = batch("left")
        assert model.join.use_shared(model.prompt_embeddings(), ids.shape[1]), model_type
        out = shared_and_naive(model, ids, mask, labels)
        assert agree(out[True], out[False]), model_type


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "gemma", "gpt2"])
def test_common_architectures_keep_the_shared_path(model_type):
    """The once-per-batch prompt is the fast path; falling back is safe but slow, so the
    architectures most users run must keep it (transformers 5.2x renamed ``past_key_values`` to
    ``cache``, and a join that looked only for the old name fell back everywhere), and train on
    the packed layout."""
    model = softprompt.attach(build(model_type, ARCHITECTURES.get(model_type, {})), "prompt", length=3, seed=0, init="normal")
    ids, _, _ = batch("left")
    assert model.join.use_shared(model.prompt_embeddings(), ids.shape[1]), model_type
    assert model.join.packs, model_type


def test_a_model_whose_shared_path_differs_falls_back(monkeypatch):
    """An architecture with a quirk softprompt does not know: the probe catches it."""
    model = softprompt.attach(build("llama", {}), "prompt", length=3, seed=0, init="normal")
    model.join.logits_scaling = 8.0  # pretend the head is scaled in a way the model does not do
    ids, mask, labels = batch("left")
    assert not model.join.use_shared(model.prompt_embeddings(), ids.shape[1])
    naive = model(ids, mask, labels, return_logits=False, shared=False).loss
    torch.testing.assert_close(model(ids, mask, labels, return_logits=False).loss, naive)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_mixed_prompts_and_generation_from_kept_keys(name):
    """A batch mixing two prompts of different lengths: each row scores what it scores alone;
    generation that starts from the prompts' keys and values gives the tokens of the full run."""
    backbone = build(name, ARCHITECTURES[name])
    prompts = {"a": softprompt.attach(backbone, "prompt", length=2, seed=0, init="normal"),
               "b": softprompt.attach(backbone, "prompt", length=4, seed=1, init="normal")}
    bank = softprompt.PromptBank(backbone, prompts).eval()
    ids, mask, labels = batch("left")
    names = ["b", "a", "b"]
    with torch.no_grad():
        mixed = bank.score(ids, mask, labels, prompt=names)
        for row, which in enumerate(names):
            keep = mask[row].bool()
            alone = prompts[which].eval().score(ids[row][keep][None], None, labels[row][keep][None])[0]
            torch.testing.assert_close(mixed[row], alone, rtol=1e-4, atol=1e-4 * max(1.0, abs(float(alone))))
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(bank.generate(ids, mask, prompt=names, **kw), bank.generate(ids, mask, prompt=names, use_cache=False, **kw)), name
