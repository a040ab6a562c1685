"""Inference: a base model plus trained adapters, streaming answers that stop at the end-of-turn token.

lorallama chat demo --prompt "What is the tallest mountain in the world ?"
lorallama chat runs/demo/adapter --prompt "Hi" --temperature 0.7
lorallama chat --ui demo                      # the model's chat Space, served locally

What a chat front end needs on top of ``generate``:

- ``load_model(base, adapters)``: a base (Hub id, folder, ``bundled:…``) with adapters (Hub repo ids or folders)
  merged in at load, which makes every generated token cheaper than running the LoRA matrices beside the base.
- ``encode_prompt``: the chat template rendered and tokenized so that only the template's own special tokens are
  special. A user who types ``<|im_end|>`` or ``<|eot_id|>`` gets those characters as text, never a control token.
- ``fit_prompt``: the conversation cut to the context window (system prompt and newest turns kept, whole older
  turns dropped, and a notice that says so); a message that cannot fit is refused with a message for the user.
- ``Sampling``: generation parameters clamped to safe ranges.
- ``stream_ids``: tokens streamed as text, stopped at the end-of-turn token or as soon as the reader stops reading;
  through the model's compiled static-cache decoder when ``decoding.prepare`` gave it one (``web.launch`` does).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import models
from ..chat_encoding import encode_prompt  # noqa: F401  (chat.encode_prompt: the apps' and tests' name)
from ..conversations import drop_notice, text_of
from ..errors import LorallamaError

log = logging.getLogger("lorallama")

MAX_NEW_TOKENS_CAP = 2048
DEFAULT_CONTEXT_TOKENS = 4096  # an upper bound on the prompt + answer, whatever the model's window
DEFAULT_MAX_MESSAGE_CHARS = 16_000  # longer messages are refused before they are tokenized
MAX_HISTORY_MESSAGES = 200  # older messages are dropped without being looked at


class InputError(LorallamaError, ValueError):
    """A message the model cannot take (empty, too long); the text is written for the person who sent it."""


@dataclass
class ChatModel:
    model: object  # a PeftModel when an adapter is loaded unmerged
    tokenizer: object
    base: str
    adapter: str | None
    merged: list[str] = field(default_factory=list)
    """Adapters folded into the weights at load, oldest first (``adapter`` is the last one when merged)."""
    decoder: Any = None
    """The static-cache decoder ``decoding.prepare`` set up (compiled on a GPU); ``None``: ``generate``."""
    unmerged_note: str | None = None
    """Why the adapter runs beside the base although merging was asked for (prefix or prompt tuning)."""

    @contextlib.contextmanager
    def base_only(self):
        """Answer with the adapter switched off (base vs tuned from one copy of the weights)."""
        if self.adapter is None or not hasattr(self.model, "disable_adapter"):
            yield
            return
        with self.model.disable_adapter():
            yield

    @property
    def context_window(self) -> int:
        """The longest sequence (prompt + answer) the model was built for."""
        config = getattr(self.model, "config", None)
        window = getattr(config, "max_position_embeddings", None)
        return int(window) if window else DEFAULT_CONTEXT_TOKENS


# ---------------------------------------------------------------------------------------------------------------
# Finding and loading a model


def locate_chain(target: str) -> tuple[str, list[str], str | None]:
    """``target`` → (base, adapters merged into the base first, the model's own adapter); see ``models.resolve_target``."""
    ref = models.resolve_target(target)
    return ref.base, ref.parents, ref.adapter


def load_chat_model(target: str, merge: bool = False) -> ChatModel:
    """Load base + adapter for generation (``merge=True`` folds the adapter in: faster, but no base-only view)."""
    ref = models.resolve_target(target)
    return load_model(ref.base, ref.adapters, merge=merge)


def load_model(base: str, adapters: Sequence[str] = (), merge: bool = True) -> ChatModel:
    """A base with ``adapters`` (Hub repo ids or folders, oldest first) applied, ready to generate.

    Every adapter but the last is always merged (each was trained on the base with the ones before it merged in).
    The last is merged too unless ``merge=False``, which keeps ``base_only()`` available at some cost per token.
    """
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = models.load_tokenizer(base)
    cuda = torch.cuda.is_available()
    dtype = _cuda_dtype(torch) if cuda else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(models.resolve_base(base), dtype=dtype)
    except OSError as e:
        raise models.ModelError(f"cannot load base model {base!r}: {e}") from e
    merged: list[str] = []
    kept: str | None = None
    note: str | None = None
    for i, adapter in enumerate(adapters):
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter)
        except (OSError, ValueError) as e:
            raise models.ModelError(
                f"cannot load adapter {adapter!r}: {e}: name a Hub model repo holding adapter_config.json or a "
                "folder with one (a training run's adapter/ folder)"
            ) from e
        kind = model.active_peft_config.peft_type.value.lower().replace("_", " ")
        if model.active_peft_config.is_prompt_learning:  # virtual tokens: no weights to fold into the base
            if i < len(adapters) - 1:
                raise models.ModelError(
                    f"adapter {adapter!r} is {kind}, which cannot be merged into the base of the adapter above it: "
                    "train it with lora.method lora, dora, rslora or ia3"
                )
            if merge:
                note = f"The {kind} adapter is loaded unmerged: its virtual tokens run beside the base."
                log.warning("%s", note)
            kept = adapter
        elif merge or i < len(adapters) - 1:
            model = model.merge_and_unload()
            merged.append(adapter)
        else:
            kept = adapter
    if cuda:
        model = model.to("cuda")
    model.eval()
    models.configure_generation(model, tokenizer)
    log.info("loaded %s%s", base, "".join(f" + {a}" for a in adapters))
    return ChatModel(model, tokenizer, base, kept or (merged[-1] if merged else None), merged, unmerged_note=note)


def _cuda_dtype(torch):
    """bfloat16 where the GPU has it (not on a T4), else float16."""
    try:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    except Exception:  # ZeroGPU answers for a GPU it attaches later: its GPUs all do bfloat16
        return torch.bfloat16


# ---------------------------------------------------------------------------------------------------------------
# Messages from a chat front end


def history_messages(history: Iterable[Any], max_chars: int = DEFAULT_MAX_MESSAGE_CHARS) -> list[dict[str, str]]:
    """A Gradio history → ``[{role, content}]`` for the model.

    Notes and non-text messages are left out; so is a user message that never got an answer (a refused or failed
    turn), which also keeps the turns alternating. Every message is cut to ``max_chars`` characters.
    """
    out: list[dict[str, str]] = []
    for message in list(history)[-MAX_HISTORY_MESSAGES:]:
        if isinstance(message, dict):
            role, content, metadata = message.get("role"), message.get("content"), message.get("metadata")
        else:  # gr.ChatMessage or anything shaped like it
            role, content, metadata = (getattr(message, k, None) for k in ("role", "content", "metadata"))
        if role not in ("user", "assistant") or (metadata and metadata.get("title")):
            continue
        text = text_of(content).strip()
        if role == "assistant":
            text = drop_notice(text).strip()
        if not text:
            continue
        text = text[:max_chars]
        if out and out[-1]["role"] == role:
            if role == "user":
                out[-1] = {"role": role, "content": text}  # the earlier one was never answered
            else:
                out[-1] = {"role": role, "content": out[-1]["content"] + "\n\n" + text}
            continue
        if role == "assistant" and not out:
            continue  # an answer to nothing we kept
        out.append({"role": role, "content": text})
    if out and out[-1]["role"] == "user":
        out.pop()  # unanswered
    return out


@dataclass
class Prompt:
    input_ids: list[int]
    dropped: int
    """Messages of the conversation left out to fit the window (oldest first)."""
    window: int

    @property
    def notice(self) -> str | None:
        """What to tell the reader when turns were left out (``None`` when nothing was)."""
        if not self.dropped:
            return None
        s = "" if self.dropped == 1 else "s"
        return (
            f"*[{self.dropped} earlier message{s} left out to fit the model's {self.window}-token context window]*\n\n"
        )


def fit_prompt(
    tokenizer,
    messages: Sequence[dict[str, str]],
    *,
    window: int,
    max_new_tokens: int,
) -> Prompt:
    """Encode ``messages`` (optional system prompt, alternating turns, ending with the user) to fit ``window``.

    The system prompt and the newest turns are kept; whole turns are dropped from the oldest end, so a kept
    conversation always starts with a user message. ``InputError`` when the newest message cannot fit at all.
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system) :])
    if not turns or turns[-1]["role"] != "user":
        raise InputError("There is no message to answer.")
    budget = window - max_new_tokens
    starts = [i for i, m in enumerate(turns) if m["role"] == "user"]

    def encoded(start: int) -> list[int]:
        return encode_prompt(tokenizer, system + turns[start:])

    newest = encoded(starts[-1])
    if len(newest) > budget:
        alone = len(encode_prompt(tokenizer, system + [{"role": "user", "content": ""}]))
        room = max(budget - alone, 0)
        if system and alone > budget // 2:
            raise InputError(
                f"The system prompt alone takes {alone} tokens of the {window}-token context window; shorten it."
            )
        raise InputError(
            f"Your message is about {len(newest) - alone} tokens long; with room for a {max_new_tokens}-token answer "
            f"this model's {window}-token context window leaves {room}. Shorten the message (or ask for a shorter "
            "answer) and send it again."
        )
    # The fewest dropped turns that fit: more turns never take fewer tokens, so search the user-message starts.
    lo, hi = 0, len(starts) - 1
    best, best_ids = starts[-1], newest
    while lo <= hi:
        mid = (lo + hi) // 2
        ids = encoded(starts[mid]) if mid != len(starts) - 1 else newest
        if len(ids) <= budget:
            best, best_ids, hi = starts[mid], ids, mid - 1
        else:
            lo = mid + 1
    return Prompt(best_ids, best, window)


# ---------------------------------------------------------------------------------------------------------------
# Sampling parameters, with caps


def _number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


@dataclass
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0
    """0 = greedy (deterministic)."""
    top_p: float = 1.0
    top_k: int = 50
    """Sample from the k likeliest tokens only; 0 = no cut."""
    repetition_penalty: float = 1.0
    seed: int | None = None
    """Fixes sampling for repeatable answers; ``None`` (or 0 from a form) = a fresh draw each time."""

    def clamped(self, max_new_tokens_cap: int = MAX_NEW_TOKENS_CAP) -> Sampling:
        """The same parameters forced into safe ranges (any junk becomes the default)."""
        seed = _number(self.seed, 0) if self.seed is not None else 0
        return replace(
            self,
            max_new_tokens=int(min(max(_number(self.max_new_tokens, 256), 1), max(1, max_new_tokens_cap))),
            temperature=min(max(_number(self.temperature, 0.0), 0.0), 2.0),
            top_p=min(max(_number(self.top_p, 1.0), 0.01), 1.0),
            top_k=int(min(max(_number(self.top_k, 50), 0), 1000)),
            repetition_penalty=min(max(_number(self.repetition_penalty, 1.0), 1.0), 2.0),
            seed=int(seed) % 2**31 if seed >= 1 else None,
        )

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:
            kwargs["do_sample"] = False
        return kwargs


# ---------------------------------------------------------------------------------------------------------------
# Streaming generation


def stream_ids(
    cm: ChatModel,
    input_ids: list[int],
    sampling: Sampling,
    stop: threading.Event | None = None,
) -> Iterator[str]:
    """Yield the answer's text piece by piece; stops at the end-of-turn token, at ``stop``, or when not read on."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    stop = stop or threading.Event()

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, ids, scores, **kwargs):
            return torch.full((ids.shape[0],), stop.is_set(), dtype=torch.bool, device=ids.device)

    device = getattr(cm.model, "device", "cpu")
    ids = torch.tensor([input_ids], dtype=torch.long, device=device)
    decoder = cm.decoder
    # The compiled static-cache decoder when it is free and the answer fits its cache; else generate.
    fast = decoder is not None and decoder.fits(len(input_ids), sampling.max_new_tokens) and decoder.try_lock()
    # Only new tokens are put into the streamer by the decoder; generate puts the prompt first (skipped).
    streamer = TextIteratorStreamer(cm.tokenizer, skip_prompt=not fast, skip_special_tokens=True, timeout=600)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            if fast:
                try:
                    for token in decoder.tokens(input_ids, sampling, stop):
                        streamer.put(torch.tensor([token]))
                finally:
                    decoder.unlock()
                streamer.end()
                return
            with torch.inference_mode():
                cm.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([StopWhenAsked()]),
                    # The dynamic cache (CPU, or no decoder): without compilation it decodes faster than the static
                    # cache, and generate compiles whenever the static cache is used on CUDA, which ZeroGPU forbids
                    # and which costs ~30 s again for each new prompt length (docs/benchmarks.md).
                    **sampling.generate_kwargs(),
                )
        except BaseException as e:  # surfaced to the caller below instead of dying in the thread
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True, name="lorallama-generate")
    thread.start()
    try:
        for piece in streamer:
            if piece:
                yield piece
    finally:
        stop.set()  # the reader stopped (Stop button, closed tab) or the answer ended: free the model either way
        thread.join(timeout=120)
    if errors:
        raise errors[0]


def stream_chat(
    cm: ChatModel,
    messages: list[dict[str, str]],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: threading.Event | None = None,
) -> Iterator[str]:
    """Yield the answer's text piece by piece as it is generated."""
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed).clamped()
    if seed is not None and sampling.seed is None:
        sampling.seed = int(seed) % 2**31  # seed=0 is a seed here, as it was
    yield from stream_ids(cm, encode_prompt(cm.tokenizer, messages), sampling, stop)


def answer(cm: ChatModel, prompt: str, **kwargs) -> str:
    return "".join(stream_chat(cm, [{"role": "user", "content": prompt}], **kwargs))
