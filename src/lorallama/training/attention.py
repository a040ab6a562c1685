"""Padding-free attention: packed conversations kept apart by a kernel PyTorch itself ships.

A packed, padding-free batch is one row of many conversations; TRL's collator marks where each one starts with
``position_ids`` that restart at 0. Attention must not cross those boundaries. Two kernels do that in one launch
per layer, and this module registers both with transformers' ``AttentionInterface``:

- ``lorallama_varlen``: ``torch.nn.attention.varlen.varlen_attn``, the flash varlen kernel bundled with torch
  (CUDA, sm80+, float16/bfloat16), over the segments' cumulative lengths (``cu_seqlens``).
- ``lorallama_flex``: compiled FlexAttention with a causal document mask (``create_block_mask``), Triton on CUDA:
  the path that runs on a T4 (sm75, float16), where the flash kernel does not.

``KERNEL`` is the one place the sm80+ choice lives (measured by ``bench/attention_kernels.py``, one attention layer
fwd+bwd over 16 packed rows of 2,048 tokens; on an H200, torch 2.11: per-segment SDPA loop 28.8 ms, varlen 4.4 ms,
compiled FlexAttention 4.0 ms, dense causal SDPA ceiling 3.6 ms). Varlen is kept although FlexAttention was 0.4 ms a
layer faster there: it needs no compilation (none at the first step, none again when the packed length changes),
and it is the kernel Unsloth's own packed path takes, so both backends train with the same one
(``enable_for_unsloth``). ``LORALLAMA_PACKED_ATTENTION=varlen|flex|off`` overrides it, for benchmarks (``off``:
no kernel of ours, so the transformers backend trains unpacked and Unsloth keeps its own packed path).

Where neither kernel runs (CPU; CUDA below sm75; a torch without them) ``choose`` returns no kernel and says why: a
run then trains unpacked with length-balanced batches (``trainer.sft_config``). On CPU transformers' own SDPA keeps
packed rows apart with a dense block-diagonal mask built from ``position_ids`` (T² bytes per batch): correct, and
what the CPU correctness test exercises, but not how a GPU run should pack.
"""

from __future__ import annotations

import inspect
import logging
import os
import weakref
from dataclasses import dataclass

log = logging.getLogger("lorallama")

KERNEL = "varlen"  # sm80+: the measured choice (see the docstring); "flex" is the other
NAMES = {"varlen": "lorallama_varlen", "flex": "lorallama_flex"}
ENV = "LORALLAMA_PACKED_ATTENTION"


@dataclass(frozen=True)
class AttentionChoice:
    """What packed training runs on: ``kernel`` is ``varlen``, ``flex`` or None (no padding-free kernel here)."""

    kernel: str | None
    reason: str

    @property
    def attn_implementation(self) -> str | None:
        return NAMES.get(self.kernel) if self.kernel else None


def choose(
    device: str,
    capability: tuple[int, int] | None = None,
    dtype: str = "bfloat16",
    *,
    has_varlen: bool | None = None,
    has_flex: bool | None = None,
    prefer: str | None = None,
) -> AttentionChoice:
    """The padding-free kernel for a device: a pure decision from its facts (``None`` facts are looked up)."""
    prefer = prefer if prefer is not None else os.environ.get(ENV) or None
    if prefer not in (None, "varlen", "flex", "off"):
        raise ValueError(f"{ENV}={prefer!r}: use varlen, flex or off")
    if prefer == "off":
        return AttentionChoice(None, f"{ENV}=off")
    if device != "cuda":
        return AttentionChoice(None, "no CUDA: varlen_attn and FlexAttention's backward need a GPU")
    has_varlen = varlen_available() if has_varlen is None else has_varlen
    has_flex = flex_available() if has_flex is None else has_flex
    if capability is None:
        import torch

        capability = torch.cuda.get_device_capability()
    card = f"sm{capability[0]}{capability[1]}"
    flash_ok = capability >= (8, 0) and dtype in ("bfloat16", "float16") and has_varlen
    flex_ok = capability >= (7, 5) and has_flex
    if prefer == "varlen" and not flash_ok:
        return AttentionChoice(None, f"{ENV}=varlen, but torch's flash varlen kernel needs sm80+ and 16-bit ({card})")
    if prefer == "flex" and not flex_ok:
        return AttentionChoice(None, f"{ENV}=flex, but compiled FlexAttention needs sm75+ and Triton ({card})")
    runs = {"varlen": flash_ok, "flex": flex_ok}
    kernel = prefer or (KERNEL if runs[KERNEL] else next((k for k, ok in runs.items() if ok), None))
    if kernel == "varlen":
        return AttentionChoice("varlen", f"{card}: torch varlen_attn (flash varlen)")
    if kernel == "flex":
        why = "" if flash_ok else " (torch's flash varlen kernel needs sm80+)"
        return AttentionChoice("flex", f"{card}: compiled FlexAttention with a document mask{why}")
    return AttentionChoice(None, f"{card}: neither torch's flash varlen kernel (sm80+) nor FlexAttention (sm75+)")


def for_backend(backend) -> AttentionChoice:
    """The choice for a training backend (``training.backend.Backend``)."""
    if backend.device != "cuda":
        return choose(backend.device)
    return choose("cuda", dtype=backend.dtype)


def varlen_available() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return False
    return "window_size" in inspect.signature(varlen_attn).parameters  # causal masking (torch 2.11+)


def flex_available() -> bool:
    import importlib.util

    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:
        return False
    return importlib.util.find_spec("triton") is not None


# ---------------------------------------------------------------------------------------------------------------
# Segments of a packed row, computed once per forward and shared by every layer (and by checkpointed recomputation)


@dataclass
class Segments:
    cu_seqlens: object  # int32 (N+1,) tensor on the device
    max_len: int
    doc_ids: object  # int32 (T,) tensor: which conversation each token belongs to
    total: int


_cache: list = [None, None]  # [weakref to the position_ids tensor, Segments]


def segments(position_ids) -> Segments:
    """Conversation boundaries of a packed row from its ``position_ids`` (a new one wherever the count restarts)."""
    import torch

    ref = _cache[0]
    if ref is not None and ref() is position_ids:
        return _cache[1]
    pos = position_ids.reshape(-1)
    total = pos.numel()
    start = torch.ones(total, dtype=torch.bool, device=pos.device)
    start[1:] = pos[1:] != pos[:-1] + 1
    doc_ids = start.cumsum(0, dtype=torch.int32) - 1
    starts = start.nonzero().flatten().to(torch.int32)
    end = torch.tensor([total], dtype=torch.int32, device=pos.device)
    cu_seqlens = torch.cat([starts, end])
    max_len = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    seg = Segments(cu_seqlens, max_len, doc_ids, total)
    _cache[0], _cache[1] = weakref.ref(position_ids), seg
    return seg


# ---------------------------------------------------------------------------------------------------------------
# The kernels, on transformers' layout: query (1, H, T, D), key/value (1, H_kv, T, D) → output (1, T, H, D)


_VARLEN_TAKES_GQA: bool | None = None


def varlen(query, key, value, seg: Segments, scale: float | None):
    """torch's varlen_attn, causal within each segment. Grouped-query heads go in as they are: torch 2.12+ says
    so with ``enable_gqa``; torch 2.11 has no such flag, and its flash kernel takes fewer key/value heads natively."""
    global _VARLEN_TAKES_GQA
    from torch.nn.attention.varlen import varlen_attn

    if _VARLEN_TAKES_GQA is None:
        _VARLEN_TAKES_GQA = "enable_gqa" in inspect.signature(varlen_attn).parameters
    q, k, v = (x.squeeze(0).transpose(0, 1) for x in (query, key, value))  # (T, H, D)
    extra = {"enable_gqa": q.shape[1] != k.shape[1]} if _VARLEN_TAKES_GQA else {}
    out = varlen_attn(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        seg.cu_seqlens,
        seg.cu_seqlens,
        seg.max_len,
        seg.max_len,
        scale=scale,
        window_size=(-1, 0),
        **extra,
    )
    return out.unsqueeze(0)


_compiled: dict = {}


def _flex_fns(compiled: bool):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if not compiled:
        return create_block_mask, flex_attention
    if "flex" not in _compiled:
        import torch

        _compiled["flex"] = torch.compile(flex_attention)  # static first, dynamic once the length changes
    return create_block_mask, _compiled["flex"]


_mask_cache: list = [None, None]  # [weakref to Segments, BlockMask]


def document_mask(seg: Segments, compiled: bool = True):
    """FlexAttention's BlockMask: causal, and only within a token's own conversation."""
    ref = _mask_cache[0]
    if ref is not None and ref() is seg:
        return _mask_cache[1]
    create_block_mask, _ = _flex_fns(compiled)
    doc = seg.doc_ids

    def causal_document(b, h, q_idx, kv_idx):
        return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)

    mask = create_block_mask(causal_document, None, None, seg.total, seg.total, device=doc.device, _compile=compiled)
    _mask_cache[0], _mask_cache[1] = weakref.ref(seg), mask
    return mask


def flex(query, key, value, seg: Segments, scale: float | None, compiled: bool = True):
    """FlexAttention with the document mask (compiled on CUDA; eager, forward only, on CPU)."""
    _, attend = _flex_fns(compiled)
    out = attend(
        query,
        key,
        value,
        block_mask=document_mask(seg, compiled),
        scale=scale,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2)


# ---------------------------------------------------------------------------------------------------------------
# transformers' hooks: one attention function and one mask function per kernel


def _attention_for(kernel: str):
    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        position_ids = kwargs.get("position_ids")
        if attention_mask is not None or position_ids is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
            # A padded batch (its mask is SDPA's), plain rows, or decoding with a cache: not padding-free, so SDPA.
            from transformers.integrations.sdpa_attention import sdpa_attention_forward

            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
        seg = segments(position_ids)
        if kernel == "varlen":
            out = varlen(query, key, value, seg, scaling)
        else:
            out = flex(query, key, value, seg, scaling, compiled=query.is_cuda)
        return out.contiguous(), None

    attention.__name__ = f"{NAMES[kernel]}_forward"
    return attention


def _mask(batch_size, q_length, kv_length, *args, attention_mask=None, **kwargs):
    """No mask for a padding-free row (the kernel reads its boundaries from position_ids); SDPA's for a padded one."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(batch_size, q_length, kv_length, *args, attention_mask=attention_mask, **kwargs)


def register() -> None:
    """Register both kernels with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    for kernel, name in NAMES.items():
        AttentionInterface.register(name, _attention_for(kernel))
        AttentionMaskInterface.register(name, _mask)


def enable_for_unsloth() -> bool:
    """Make Unsloth's packed path take torch's varlen kernel. Returns whether it now does.

    Unsloth (2026.10) runs packed rows through ``torch.nn.attention.varlen.varlen_attn`` only when that function takes
    ``enable_gqa`` (torch 2.12+); on torch 2.11 it falls back to one SDPA call per run of equal-length segments (576
    cuDNN backward calls a step in ``bench/results/profile_q16_packed_H200.txt``). It exposes no setting for this,
    so this is the project's one private hook into Unsloth: it hands Unsloth this module's ``varlen`` entry with the
    keyword it expects. ``tests/test_gpu_attention.py`` fails if the attribute it sets disappears.
    """
    if os.environ.get(ENV) == "off":
        return False
    try:
        from unsloth.utils import attention_dispatch as dispatch
    except ImportError:
        return False
    if not hasattr(dispatch, "_TORCH_VARLEN_ATTN"):
        log.warning("this Unsloth has no _TORCH_VARLEN_ATTN: packed batches keep its own attention path")
        return False
    if dispatch._TORCH_VARLEN_ATTN is None and varlen_available():
        dispatch._TORCH_VARLEN_ATTN = _unsloth_varlen
        if hasattr(dispatch, "_native_beats_xformers") and hasattr(dispatch, "_visible_capabilities"):
            dispatch._NATIVE_BEATS_XFORMERS = dispatch._native_beats_xformers(dispatch._visible_capabilities(), True)
    return dispatch._TORCH_VARLEN_ATTN is not None


def _unsloth_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
    """``varlen_attn`` with the signature Unsloth calls, on any torch that has the kernel."""
    from torch.nn.attention.varlen import varlen_attn

    global _VARLEN_TAKES_GQA
    if _VARLEN_TAKES_GQA is None:
        _VARLEN_TAKES_GQA = "enable_gqa" in inspect.signature(varlen_attn).parameters
    extra = {"enable_gqa": enable_gqa} if _VARLEN_TAKES_GQA else {}
    return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale, window_size=tuple(window_size), **extra)
