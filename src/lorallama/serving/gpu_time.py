"""How much GPU time a request asks ``spaces.GPU`` for: prefill + max new tokens × the measured time per token.

Kept apart from the Gradio apps so that benchmarks and GPU machines without Gradio can plan with the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

from . import decoding

FALLBACK_SECONDS_PER_TOKEN = 1 / 40  # no warm-up measurement (generate with the dynamic cache: ~70/s on an H200)
FALLBACK_PREFILL_SECONDS_PER_TOKEN = 1 / 5000
OVERHEAD_SECONDS = 2.0  # the GPU worker's start and the first CUDA work of a call
MARGIN = 1.5  # a call that runs past its duration is cut off: ask for more than measured
MIN_SECONDS, MAX_SECONDS = 5, 120


def _work(value: Any) -> tuple[int, int]:
    """(prompt tokens, new tokens at most) in a GPU function's arguments: ``(ids, sampling)`` or jobs of them."""
    if isinstance(value, dict) and "max_new_tokens" in value:
        return 0, int(value["max_new_tokens"])
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, int) for v in value):
            return len(value), 0
        prompt = new = 0
        for v in value:
            p, n = _work(v)
            prompt, new = prompt + p, new + n
        return prompt, new
    return 0, 0


def request_seconds(*args: Any, **kwargs: Any) -> int:
    """The GPU time to ask for: prefill + max new tokens × the measured time per token, with a margin.

    Takes the decorated function's own arguments (``spaces.GPU`` calls it with them). The times are the slowest
    that warm-up measured in this process (``decoding.MEASURED``), or conservative defaults before any.
    """
    prompt, new = _work([*args, *kwargs.values()])
    measured = decoding.MEASURED
    per_token = max((t.seconds_per_token for t in measured), default=FALLBACK_SECONDS_PER_TOKEN)
    prefill = max((t.prefill_seconds_per_token for t in measured), default=FALLBACK_PREFILL_SECONDS_PER_TOKEN)
    seconds = OVERHEAD_SECONDS + MARGIN * (prompt * prefill + new * per_token)
    return int(min(MAX_SECONDS, max(MIN_SECONDS, math.ceil(seconds))))
