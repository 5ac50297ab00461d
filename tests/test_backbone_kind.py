"""One rule for a backbone's kind (``backbones.kind_of``): the kind peeked from a model's config
before loading (``backbone_facts``, which picks a run's task template) is the kind of the join
the loaded model takes (``join_for``, which encodes the batches). The class name and
``is_decoder`` never decide the kind; they only decide whether a decoder-only model is refused."""

from __future__ import annotations

import pytest
import torch

from softprompt.backbones import (
    DECODER_ONLY,
    ENCODER_DECODER,
    UnsupportedModelError,
    backbone_facts,
    backbone_record,
    join_for,
    kind_of,
    load_backbone,
)
from conftest import BUILDERS
from helpers import tiny_tokenizer


def saved(model, path):
    """``model`` and a tokenizer saved as a transformers directory at ``path``."""
    model.save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    return path


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_peeked_kind_is_the_loaded_joins_kind(name, tmp_path):
    model = BUILDERS[name]()
    path = saved(model, tmp_path / name)
    peeked = backbone_facts(path)[0]
    loaded, _ = load_backbone(path)
    assert peeked == join_for(loaded).kind == join_for(model).kind == kind_of(model.config)
    assert backbone_record(loaded)["kind"] == peeked
    assert peeked == (ENCODER_DECODER if name in ("t5", "bart") else DECODER_ONLY)


def bert_generation_decoder(is_decoder: bool):
    from transformers import BertGenerationConfig, BertGenerationDecoder

    torch.manual_seed(0)
    config = BertGenerationConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, is_decoder=is_decoder)
    return BertGenerationDecoder(config).eval()


def test_a_causal_lm_whose_class_name_says_nothing_is_decoder_only(tmp_path):
    """``BertGenerationDecoder`` ends in neither ``ForCausalLM`` nor ``LMHeadModel``: with
    ``is_decoder`` it is a causal LM, decoder-only before and after loading."""
    model = bert_generation_decoder(is_decoder=True)
    path = saved(model, tmp_path / "bert-generation")
    assert backbone_facts(path)[0] == DECODER_ONLY
    assert join_for(load_backbone(path)[0]).kind == DECODER_ONLY


def test_a_decoder_only_model_that_reads_both_ways_is_refused_not_given_another_kind(tmp_path):
    """Without ``is_decoder`` the same class attends both ways: its kind is still the config's
    (decoder-only), and ``join_for`` refuses it with its one-line error."""
    model = bert_generation_decoder(is_decoder=False)
    assert backbone_facts(saved(model, tmp_path / "bidirectional"))[0] == DECODER_ONLY
    with pytest.raises(UnsupportedModelError, match="BertGenerationDecoder is not supported"):
        join_for(model)


def test_is_encoder_decoder_alone_decides():
    """A T5 config that also says ``is_decoder`` is encoder-decoder (the old class-and-head rule
    would have counted it a causal LM had it not asked ``is_encoder_decoder`` first)."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, decoder_start_token_id=0,
                      is_decoder=True)
    assert kind_of(config) == ENCODER_DECODER
    assert join_for(T5ForConditionalGeneration(config).eval()).kind == ENCODER_DECODER


def test_a_causal_lm_built_from_an_encoder_decoder_config_is_decoder_only(tmp_path):
    """``BartForCausalLM`` takes a ``BartConfig`` (``is_encoder_decoder=True``) and keeps its own
    copy saying False: that copy is what is saved, peeked and joined, so all three say decoder-only."""
    from transformers import BartConfig, BartForCausalLM

    torch.manual_seed(0)
    config = BartConfig(vocab_size=128, d_model=32, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64,
                        max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    assert kind_of(config) == ENCODER_DECODER
    model = BartForCausalLM(config).eval()
    assert kind_of(model.config) == DECODER_ONLY
    path = saved(model, tmp_path / "bart-causal")
    assert backbone_facts(path)[0] == DECODER_ONLY
    assert join_for(load_backbone(path)[0]).kind == DECODER_ONLY


def test_what_cannot_be_joined_keeps_its_one_line_errors():
    from transformers import T5Config, T5EncoderModel

    encoder = T5EncoderModel(T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4))
    with pytest.raises(UnsupportedModelError, match="T5EncoderModel is not supported"):  # no LM head
        join_for(encoder)
    with pytest.raises(UnsupportedModelError, match="Linear is not a Hugging Face transformers model"):
        join_for(torch.nn.Linear(2, 2))
