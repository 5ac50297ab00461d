"""Named row transforms: the few task-specific text rewrites that a template alone cannot do.

Each takes a row dict (hub field names) and returns a new dict with derived fields added. They
reproduce T5's preprocessors, which DePT and ULPT copy: MultiRC markup removal, ReCoRD
highlights, the two WSC span markings, and T5's punctuation padding used for MRQA.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable


def remove_markup(text: str) -> str:
    """MultiRC paragraphs carry HTML: ``<br>`` becomes a space, ``<b>``/``</b>`` go."""
    text = re.sub(r"<br>", " ", text)
    return re.sub(r"<(/)?b>", "", text)


def multirc(row: dict) -> dict:
    out = dict(row)
    for key in ("paragraph", "question", "answer"):
        out[key] = remove_markup(row[key])
    out["group_id"] = f"{row['idx']['paragraph']}-{row['idx']['question']}"
    return out


def record(row: dict) -> dict:
    """ReCoRD: ``@highlight`` lines join the passage as sentences; entities listed with ", "."""
    passage = re.sub(r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ", row["passage"])
    passage = re.sub(r"\n@highlight\n", ". ", passage)
    out = dict(row, passage=passage)
    out["entities_text"] = ", ".join(row["entities"])
    out["group_id"] = f"{row['idx']['passage']}-{row['idx']['query']}"
    return out


def _mark_span(text: str, span: str, index: int, mark: str) -> str:
    # T5's _mark_span: the span must start after exactly `index` space-separated words.
    # (T5 inserts the span unescaped into the regex; escaping only avoids crashes on "(".)
    pattern = r"^((?:\S+\s){%d})(%s)" % (index, re.escape(span))
    return re.sub(pattern, r"\g<1>%s \g<2> %s" % (mark, mark), text)


def wsc_marked(row: dict) -> dict:
    """WSC as classification (T5 ``wsc``, DePT, ULPT): ``* noun *`` and ``# pronoun #``."""
    text = _mark_span(row["text"], row["span1_text"], int(row["span1_index"]), "*")
    # The first marking added two words before span2 when span1 came first.
    span2_index = int(row["span2_index"]) + 2 * int(int(row["span1_index"]) < int(row["span2_index"]))
    text = _mark_span(text, row["span2_text"], span2_index, "#")
    return dict(row, marked_text=text)


# T5's _wsc_inputs special-cases two texts whose span2_index points at the wrong word.
_WSC_SPECIAL = {
    'The boy continued to whip the pony , and eventually the pony threw him over. John laughed '
    'out quite loud. "Good for him," he said. ':
        'The boy continued to whip the pony , and eventually the pony threw him over. John '
        'laughed out quite loud. "Good for X ," he said.',
    "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the magic "
    "pebble in an iron safe . Some day they might want to use it , but really for now, what more "
    "could they wish for?":
        "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the "
        "magic pebble in an iron safe . Some day they might want to use X , but really for now, "
        "what more could they wish for?",
}


def wsc_simple(row: dict) -> dict:
    """WSC as generation (T5 ``wsc_simple``): ``wsc: ... *pronoun* ...`` -> the referent noun."""
    text = row["text"]
    blanked = _WSC_SPECIAL.get(text)
    if blanked is None:
        words = text.split(" ")
        i = int(row["span2_index"])
        blanked = " ".join([" ".join(words[:i]), "X", " ".join(words[i + 1:])])
    # T5 replaces every " X " (tf.strings.regex_replace is global).
    return dict(row, wsc_text=blanked.replace(" X ", " *" + row["span2_text"] + "* "))


def wsc_dpt(row: dict) -> dict:
    """WSC as the DPT code gives it (XYaoooo/DPT data_utils.py, SuperGLUEWSCFixed): the text
    with ``* pronoun *`` marked (spaces inside the stars) and no prefix; the target is the
    referent noun."""
    return dict(row, pronoun_marked=_mark_span(row["text"], row["span2_text"], int(row["span2_index"]), "*"))


def pad_punctuation(text: str) -> str:
    """T5's _pad_punctuation (DePT's copy for MRQA): spaces around every character that is not
    a letter, number, mark, underscore or whitespace; whitespace runs collapse to one space."""
    out = []
    for ch in str(text):
        if ch == "_" or ch.isspace() or unicodedata.category(ch)[0] in "LNM":
            out.append(ch)
        else:
            out.append(f" {ch} ")
    return re.sub(r"\s+", " ", "".join(out))


def mrqa(row: dict) -> dict:
    answers = row["answers"]
    answers = [answers] if isinstance(answers, str) else list(answers)
    return dict(row, question=pad_punctuation(row["question"]),
                context=pad_punctuation(row["context"]),
                answers=[pad_punctuation(a) for a in answers])


def copa_continuation(row: dict) -> dict:
    """COPA as a sentence to continue (the GPT-3 paper's scoring, what a base model reads best):
    the premise without its full stop, joined by ``because`` (a cause is asked for) or ``so``
    (an effect), then each choice with a lower-case first letter:
    ``The man turned on the faucet so`` + `` water flowed from the spout.``"""
    def lower_first(text: str) -> str:
        return text[:1].lower() + text[1:]

    return dict(row, premise_clause=str(row["premise"]).rstrip().rstrip("."),
                connective="because" if row["question"] == "cause" else "so",
                choice1_continued=lower_first(str(row["choice1"])), choice2_continued=lower_first(str(row["choice2"])))


TRANSFORMS: dict[str, Callable[[dict], dict]] = {
    "copa_continuation": copa_continuation,
    "multirc": multirc,
    "record": record,
    "wsc_marked": wsc_marked,
    "wsc_simple": wsc_simple,
    "wsc_dpt": wsc_dpt,
    "mrqa": mrqa,
}
