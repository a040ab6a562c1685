"""Chat latency at batch 1: time to first token and decode speed, base vs unmerged LoRA vs merged.

    python bench/chat_latency.py --device cuda       # Llama-3.2-1B shape, random weights, bf16
    python bench/chat_latency.py --device cpu        # the bundled SmolLM2-135M-Instruct, fp32, this CPU
    python bench/chat_latency.py --device cuda --variants merged --caches dynamic,aot+spaces,compile
                                                     # the Spaces before (dynamic) and after (aot+spaces, needs
                                                     # the spaces package), dedicated GPUs (compile), with
                                                     # GPU-seconds per 300-token answer

The decoder rows (``aot``, ``aot+spaces``, ``compile``, ``eager``) run the serving code itself
(``lorallama.serving.decoding``):

- ``aot``: the static-cache step exported with a dynamic token count, compiled ahead of time by torch's AOTInductor
  and loaded by ``serving.ahead_of_time``, the one-token step replayed as a CUDA graph; ``compile_s`` is the
  start-up cost (export + compile + warm-up);
- ``aot+spaces``: what a ZeroGPU Space runs: the same, compiled by ``spaces.aoti_compile`` and pickled on to the
  serving worker as the platform does; ``spaces_own_loader`` times the same package run by ``spaces``' own loader
  (whose runner a CUDA graph cannot capture);
- ``compile``: dedicated GPUs and ``lorallama chat --ui``: the one-token step ``torch.compile``d once and captured
  in a CUDA graph, the prompt run eagerly;
- ``eager``: the same step uncompiled.

For them ``recompile_s`` is the first answer at another prompt length (nothing compiles: it should equal a warm
answer), ``gpu_s_300`` the wall time of a whole 300-token answer (prefill + 300 tokens: the GPU time one answer
costs a ZeroGPU visitor) and ``requested_s`` the ``duration`` the Space asks ``spaces.GPU`` for such an answer from
the measured speed. ``gpu_s_300`` is measured for the ``dynamic`` row too (the Spaces before).

A 1,000-token prompt, then 128 new tokens (min_new_tokens forces the full count). Each variant runs with

- ``dynamic``: the dynamic cache (transformers' default);
- ``static``: the static cache with ``disable_compile=True`` — the fastest thing ZeroGPU permits (it forbids
  torch.compile);
- ``static+compile`` (CUDA, merged and base): transformers' own default, which compiles the decoding step
  (CUDA graphs) whenever the static cache is used on CUDA; ``recompile_s`` is the first call at another prompt
  length, which the compiled step pays again;
- ``lean+compile`` (CUDA, merged): the same compiled step driven by a minimal greedy loop with one reused static
  cache, no logits processors and no per-token host sync — what is left once generate's own per-token work is gone.

Times are medians of --repeats runs. TTFT is the prefill and first token (generate with max_new_tokens=1); decode
tokens/s is (N - 1) / (time for N tokens - TTFT). The GPU decode bound is memory bandwidth / bytes of weights read
per token.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

# datasheet bytes/s; the RTX PRO 6000 Blackwell is ZeroGPU's card
BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "L4": 0.3e12, "T4": 0.32e12, "RTX PRO 6000": 1.792e12}


def timed(fn, device: str) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def lean_generator(model):
    """Greedy decoding with transformers' compiled step, one static cache reused across calls, no per-token sync."""
    import torch
    from transformers import StaticCache

    caches: dict[int, StaticCache] = {}

    def generate(prompt, max_new_tokens: int, **_):
        length = prompt.shape[1] + max_new_tokens
        cache = caches.get(length)
        if cache is None:  # one per total length, the shape generate's own static cache has
            cache = caches[length] = StaticCache(config=model.config, max_cache_len=length)
        cache.reset()
        position = torch.arange(prompt.shape[1], device=prompt.device)
        logits = model(input_ids=prompt, past_key_values=cache, cache_position=position, use_cache=True).logits
        token = logits[:, -1:].argmax(-1)
        tokens = [token]
        step = model.get_compiled_call(model.generation_config.compile_config)  # generate's own compiled step
        for _ in range(max_new_tokens - 1):
            torch.compiler.cudagraph_mark_step_begin()
            position = position[-1:] + 1
            logits = step(input_ids=token, past_key_values=cache, cache_position=position, use_cache=True).logits
            token = logits[:, -1:].argmax(-1)  # read before the next replay overwrites the graph's output
            tokens.append(token)
        return torch.cat([prompt, *tokens], dim=1)

    return generate


ANSWER_TOKENS = 300


def measure_decoder(model, prompt, device: str, new_tokens: int, repeats: int, mode: str) -> dict:
    """The serving decoder in ``mode``: start-up, TTFT, decode speed, another length, a 300-token answer.

    ``aot+spaces`` (needs ``spaces``): a ZeroGPU Space's own path: compiled by ``spaces.aoti_compile``, pickled as the
    platform sends it from the start-up GPU call to the worker that serves the chat, where a fresh process state
    loads it; its row also times ``spaces``' own loader (``ZeroGPUCompiledModel``) on the same package."""
    import pickle

    from lorallama.serving import decoding

    ids = prompt[0].tolist()
    max_len = len(ids) + 37 + max(new_tokens, ANSWER_TOKENS if device == "cuda" else 0) + 8
    decoder = decoding.Decoder(model, max_len, "aot" if mode == "aot+spaces" else mode)
    decoder.eos = set()  # random weights: never stop early, every row decodes the same number of tokens
    start = time.perf_counter()
    if mode in ("aot", "aot+spaces"):
        decoding._compile_aot(decoder, with_spaces=mode == "aot+spaces")
    elif mode == "compile":
        decoding._compile_step(decoder)
    else:
        decoder.warm_up()
    compile_s = time.perf_counter() - start
    if mode != "aot+spaces":
        return {"compile_s": round(compile_s, 1), **time_decoder(decoder, ids, device, new_tokens, repeats)}
    decoder.compiled = pickle.loads(pickle.dumps(decoder.compiled))
    decoder._state.clear()  # the serving worker is another process: its own cache, graph and loaded program
    row = {"compile_s": round(compile_s, 1), **time_decoder(decoder, ids, device, new_tokens, repeats)}
    decoder.compiled = decoder.compiled.source  # spaces' ZeroGPUCompiledModel, as spaces.aoti_apply would call it
    decoder._state.clear()
    row["spaces_own_loader"] = time_decoder(decoder, ids, device, new_tokens, repeats)
    return row


def time_decoder(decoder, ids, device: str, new_tokens: int, repeats: int) -> dict:
    from lorallama.serving import decoding, gpu_time
    from lorallama.serving.chat import Sampling

    def gen(n, ids=ids):
        for _ in decoder.tokens(ids, Sampling(max_new_tokens=n, temperature=0.0)):
            pass

    gen(new_tokens)
    ttft = statistics.median(timed(lambda: gen(1), device) for _ in range(repeats))
    full = statistics.median(timed(lambda: gen(new_tokens), device) for _ in range(repeats))
    other = ids + ids[:37]
    recompile = timed(lambda: gen(new_tokens, other), device)
    answer_tokens = ANSWER_TOKENS if device == "cuda" else new_tokens  # CPU: the row's own length
    answer = statistics.median(timed(lambda: gen(answer_tokens), device) for _ in range(repeats))
    decoding.MEASURED[:] = [decoder.timing]
    request = gpu_time.request_seconds(ids, {"max_new_tokens": ANSWER_TOKENS})
    return {
        "ttft_ms": round(ttft * 1000, 1),
        "decode_tokens_per_s": round((new_tokens - 1) / (full - ttft), 1),
        "recompile_s": round(recompile, 3),
        "warm_same_length_s": round(full, 3),
        f"gpu_s_{answer_tokens}": round(answer, 3),
        "requested_s": request,
        "cuda_graph": bool(decoder._state.get("graph")),
    }


def measure(model, prompt, device: str, new_tokens: int, repeats: int, cache: str) -> dict:
    if cache in ("aot", "aot+spaces", "compile", "eager"):
        return measure_decoder(model, prompt, device, new_tokens, repeats, cache)
    import torch

    kwargs = {"do_sample": False, "pad_token_id": 0}
    if cache.startswith("static"):
        kwargs["cache_implementation"] = "static"
        kwargs["disable_compile"] = cache == "static"
    generate = lean_generator(model) if cache.startswith("lean") else model.generate

    def gen(n, ids=prompt):
        with torch.inference_mode():
            generate(ids, max_new_tokens=n, min_new_tokens=n, **kwargs)

    gen(new_tokens)  # warm-up (and compilation)
    gen(1)
    ttft = statistics.median(timed(lambda: gen(1), device) for _ in range(repeats))
    full = statistics.median(timed(lambda: gen(new_tokens), device) for _ in range(repeats))
    row = {"ttft_ms": round(ttft * 1000, 1), "decode_tokens_per_s": round((new_tokens - 1) / (full - ttft), 1)}
    if cache == "dynamic" and device == "cuda":  # the Spaces before: what a 300-token answer costs
        row["gpu_s_300"] = round(
            statistics.median(timed(lambda: gen(ANSWER_TOKENS), device) for _ in range(repeats)), 3
        )
    if "compile" in cache:  # a chat's next prompt has another length: the compiled step pays again
        other = torch.cat([prompt, prompt[:, :37]], dim=1)
        row["recompile_s"] = round(timed(lambda: gen(new_tokens, other), device), 2)
    return row


def load_variants(device: str, wanted: tuple[str, ...] = ("base", "lora_unmerged", "merged")):
    """(name, model) for base, base + unmerged LoRA, merged; plus the weight bytes read per decoded token."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if device == "cuda":
        from train_throughput import LLAMA_1B
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)

        def make():
            with torch.device("cuda"):  # built on the GPU directly (a 1B model on the CPU takes seconds)
                return LlamaForCausalLM(LlamaConfig(**LLAMA_1B, bos_token_id=0, eos_token_id=4)).to(torch.bfloat16)

        base = make()
    else:
        from lorallama import models

        path = models.bundled_dir("smollm2-135m-instruct")
        make = lambda: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # noqa: E731
        base = make()
    base.eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    lora_cfg = LoraConfig(
        r=16,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,  # non-zero B, as after training
    )
    built = {
        "base": lambda: base,
        "lora_unmerged": lambda: get_peft_model(make(), lora_cfg).eval(),
        "merged": lambda: get_peft_model(make(), lora_cfg).merge_and_unload().eval(),
    }
    return [(name, build()) for name, build in built.items() if name in wanted], weight_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the target machine has 2 cores)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--variants", default="base,lora_unmerged,merged", help="comma-separated: which models")
    parser.add_argument(
        "--caches",
        help="comma-separated rows per model (default: dynamic,static and, on CUDA, static+compile and lean+compile;"
        " the serving decoder: aot, aot+spaces, compile, eager)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    variants, weight_bytes = load_variants(args.device, tuple(args.variants.split(",")))
    vocab = variants[0][1].config.vocab_size
    torch.manual_seed(1)
    prompt = torch.randint(100, vocab - 100, (1, args.prompt_tokens), device=args.device)
    card = (
        torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({args.threads} threads of {os.cpu_count()})"
    )
    compiled = {"base": ["static+compile"], "merged": ["static+compile", "lean+compile"]}
    rows = []
    for name, model in variants:
        caches = (
            args.caches.split(",")
            if args.caches
            else ["dynamic", "static"]
            + (compiled.get(name, []) if args.device == "cuda" and not args.no_compile else [])
        )
        for cache in caches:
            try:
                result = measure(model, prompt, args.device, args.new_tokens, args.repeats, cache)
            except Exception as e:  # a compilation failure is a result too; the other rows still run
                result = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            row = {"variant": name, "cache": cache, **result}
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "card": card, "prompt_tokens": args.prompt_tokens, "rows": rows}
    bw = next((v for k, v in BANDWIDTH.items() if k in card), None)
    if bw:
        report["decode_bound_tokens_per_s"] = round(bw / weight_bytes, 1)
        report["weight_bytes"] = weight_bytes
    by = {(r["variant"], r["cache"]): r for r in rows if "error" not in r}
    for cache in {r["cache"] for r in rows}:
        if ("merged", cache) in by and ("base", cache) in by:
            report[f"merged_over_base_{cache}"] = round(
                by[("merged", cache)]["decode_tokens_per_s"] / by[("base", cache)]["decode_tokens_per_s"], 3
            )
    before = by.get(("merged", "dynamic"))
    after = by.get(("merged", "aot+spaces")) or by.get(("merged", "aot"))  # the Space's own configuration first
    if before and after and "gpu_s_300" in before:
        # Quota per day (huggingface.co/docs/hub/spaces-zerogpu): what one visitor gets in 300-token answers.
        tiers = {"unauthenticated": 120, "free": 300, "pro": 2400, "team": 2400, "enterprise": 3600}
        report["space_speedup"] = round(after["decode_tokens_per_s"] / before["decode_tokens_per_s"], 2)
        report["answers_per_day_300_tokens"] = {
            tier: {"before": int(q // before["gpu_s_300"]), "after": int(q // after["gpu_s_300"])}
            for tier, q in tiers.items()
        }
    args.out.mkdir(parents=True, exist_ok=True)
    out = (
        args.out
        / f"chat_latency_{'cuda' if args.device == 'cuda' else 'cpu'}_{card.split(' (')[0].replace(' ', '_')}.json"
    )
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
