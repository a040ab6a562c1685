"""Where a decoding step's time goes on a GPU, and whether inductor's autotuning changes it.

    python bench/decode_profile.py --out bench/results     # CUDA only: the Llama-3.2-1B shape, bf16, random weights

The serving decoder in ``compile`` mode (the one-token step ``torch.compile``d and captured in a CUDA graph), after
a 1,000-token prompt, three ways: inductor's defaults, ``coordinate_descent_tuning`` and
``mode="max-autotune-no-cudagraphs"`` (each timed as ``chat_latency.py`` times its decoder rows). For the default
one, torch's profiler records the prompt and 30 decoding steps and writes its kernel table: the GPU is busy the whole
step, so the table says which kernels a faster step would have to shorten.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    import chat_latency
    from torch.profiler import ProfilerActivity, profile

    from lorallama.serving import decoding
    from lorallama.serving.chat import Sampling

    variants, weight_bytes = chat_latency.load_variants("cuda", ("merged",))
    model = variants[0][1]
    torch.manual_seed(1)
    ids = torch.randint(100, model.config.vocab_size - 100, (1000,)).tolist()
    card = torch.cuda.get_device_name(0)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "card": card, "prompt_tokens": len(ids), "rows": {}}
    report["weight_bytes"] = weight_bytes
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"decode_profile_{card.replace(' ', '_')}"
    ways = {
        "default": {},
        "coordinate_descent_tuning": {"options": {"coordinate_descent_tuning": True}},
        "max-autotune-no-cudagraphs": {"mode": "max-autotune-no-cudagraphs"},
    }
    for name, kwargs in ways.items():
        torch._dynamo.reset()
        decoder = decoding.Decoder(model, len(ids) + 37 + chat_latency.ANSWER_TOKENS + 8, "compile")
        decoder.eos = set()  # random weights: every row decodes the same number of tokens
        start = time.perf_counter()
        try:
            decoder.compiled = torch.compile(decoder.step, fullgraph=True, dynamic=False, **kwargs)
            decoder.warm_up()
        except Exception as e:  # a failed way is a result too; the others still run
            report["rows"][name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            continue
        row = {"compile_s": round(time.perf_counter() - start, 1)}
        row.update(chat_latency.time_decoder(decoder, ids, "cuda", 128, 3))
        report["rows"][name] = row
        print(name, json.dumps(row), flush=True)
        if name == "default":
            for _ in decoder.tokens(ids, Sampling(max_new_tokens=8, temperature=0.0)):
                pass
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in decoder.tokens(ids, Sampling(max_new_tokens=31, temperature=0.0)):
                    pass
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70)
            stem.with_suffix(".txt").write_text(table)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(f"wrote {stem}.json and .txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
