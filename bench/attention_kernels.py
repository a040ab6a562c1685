"""One attention layer, forward + backward, over a packed padding-free batch: which kernel keeps conversations apart fastest.

    python bench/attention_kernels.py                 # on a CUDA GPU: the issue's shape, JSON to bench/results/
    python bench/attention_kernels.py --iters 50

The batch is 16 packed rows of 2,048 tokens (32,768 tokens) holding 45 conversations whose lengths follow the same
FineTome-like lognormal as ``bench/train_throughput.py`` (median 600, sigma 0.8, clipped to [48, 2048]), scaled to
fill the rows; 32 query / 8 key-value heads of 64 (the Llama-3.2-1B attention), bfloat16. Timed: forward and
backward of attention alone (query, key and value require grad), median of ``--iters`` runs after warm-up, CUDA
events around each. Variants:

- ``segments``: one causal SDPA call per conversation (what Unsloth does without a varlen kernel);
- ``varlen``: ``torch.nn.attention.varlen.varlen_attn`` through ``lorallama.training.attention.varlen``;
- ``flex``: compiled FlexAttention with the causal document mask, through ``lorallama.training.attention.flex``
  (the BlockMask is built once per batch, outside the timing, as training builds it once per step for all layers);
- ``dense``: causal SDPA over whole 2,048-token rows — wrong for packed data (it mixes conversations), the ceiling.

Each variant's output and gradients are compared with ``segments`` (max abs error, bf16). The JSON names the faster
of varlen and flex: ``training/attention.py`` keeps that one as ``KERNEL``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def conversation_lengths(n: int, total: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    raw = [min(2048, max(48, rng.lognormvariate(math.log(600), 0.8))) for _ in range(n)]
    scale = total / sum(raw)
    lengths = [max(16, min(2048, int(x * scale))) for x in raw]
    lengths[-1] += total - sum(lengths)
    return lengths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--row-length", type=int, default=2048)
    parser.add_argument("--conversations", type=int, default=45)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from lorallama.training import attention

    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (varlen_attn and FlexAttention's backward run on CUDA only)")
    dev, dt = "cuda", torch.bfloat16
    total = args.rows * args.row_length
    lengths = conversation_lengths(args.conversations, total)
    pos = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0).to(dev)
    seg = attention.segments(pos)
    torch.manual_seed(0)
    H, KV, D = args.heads, args.kv_heads, args.head_dim
    base = [torch.randn(1, h, total, D, device=dev, dtype=dt) for h in (H, KV, KV)]
    grad_out = torch.randn(1, total, H, D, device=dev, dtype=dt)

    def segments_fn(q, k, v):
        outs, s = [], 0
        for n in lengths:
            part = F.scaled_dot_product_attention(
                q[:, :, s : s + n], k[:, :, s : s + n], v[:, :, s : s + n], is_causal=True, enable_gqa=True
            )
            outs.append(part.transpose(1, 2))
            s += n
        return torch.cat(outs, 1)

    def dense_fn(q, k, v):
        rows = [x.view(x.shape[1], args.rows, args.row_length, D).transpose(0, 1) for x in (q, k, v)]
        out = F.scaled_dot_product_attention(*rows, is_causal=True, enable_gqa=True)  # (rows, H, L, D)
        return out.transpose(1, 2).reshape(1, total, H, D)

    variants = {"segments": segments_fn, "dense": dense_fn}
    errors = {}
    if attention.varlen_available():
        variants["varlen"] = lambda q, k, v: attention.varlen(q, k, v, seg, None)
    else:
        errors["varlen"] = "this torch has no varlen_attn with window_size"
    if attention.flex_available():
        attention.document_mask(seg, compiled=True)  # built once per batch, shared by every layer
        variants["flex"] = lambda q, k, v: attention.flex(q, k, v, seg, None, compiled=True)
    else:
        errors["flex"] = "FlexAttention or Triton missing"

    def run(fn):
        q, k, v = (x.detach().requires_grad_() for x in base)
        out = fn(q, k, v)
        out.backward(grad_out)
        return out, (q.grad, k.grad, v.grad)

    reference = run(segments_fn)
    results = {}
    for name, fn in variants.items():
        try:
            t0 = time.perf_counter()
            out, grads = run(fn)  # first call: compilation, plans
            first = time.perf_counter() - t0
        except Exception as e:  # a kernel that cannot run on this card is a result, not a crash
            errors[name] = f"{type(e).__name__}: {e}"[:500]
            continue
        for _ in range(args.warmup):
            run(fn)
        times = []
        for _ in range(args.iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run(fn)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        row = {"fwd_bwd_ms": round(statistics.median(times), 3), "first_call_s": round(first, 2)}
        if name != "dense":
            row["max_abs_err_out"] = float((out - reference[0]).abs().max())
            row["max_abs_err_grads"] = max(float((g - r).abs().max()) for g, r in zip(grads, reference[1], strict=True))
        results[name] = row
        print(name, json.dumps(row), flush=True)
    timed = {k: results[k]["fwd_bwd_ms"] for k in ("varlen", "flex") if k in results}
    card = torch.cuda.get_device_name(0)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "card": card,
        "torch": torch.__version__,
        "shape": {
            "rows": args.rows,
            "row_length": args.row_length,
            "conversations": args.conversations,
            "heads": H,
            "kv_heads": KV,
            "head_dim": D,
            "dtype": "bfloat16",
        },
        "segment_lengths": lengths,
        "results": results,
        "errors": errors,
        "faster": min(timed, key=timed.get) if timed else None,
        "kept": attention.KERNEL,
    }
    if "dense" in results:
        report["over_dense"] = {
            k: round(v["fwd_bwd_ms"] / results["dense"]["fwd_bwd_ms"], 3) for k, v in results.items()
        }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"attention_kernels_{card.replace(' ', '_')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"faster of varlen and flex: {report['faster']} (kept in training/attention.py: {attention.KERNEL})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
