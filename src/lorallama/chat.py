"""Inference: a base model plus a trained adapter, streaming answers that stop at the end-of-turn token.

lorallama chat demo --prompt "What is the tallest mountain in the world ?"
lorallama chat runs/demo/adapter --prompt "Hi" --temperature 0.7
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import models
from .recipe import RecipeError, find_recipe, load_recipe

log = logging.getLogger("lorallama")

MAX_NEW_TOKENS_CAP = 2048


@dataclass
class ChatModel:
    model: object  # a PeftModel when an adapter is loaded
    tokenizer: object
    base: str
    adapter: str | None

    @contextlib.contextmanager
    def base_only(self):
        """Answer with the adapter switched off (base vs tuned from one copy of the weights)."""
        if self.adapter is None:
            yield
            return
        with self.model.disable_adapter():
            yield


def locate(target: str) -> tuple[str, str | None]:
    """``target`` → (base, adapter). A recipe slug, an adapter folder, or a bare base (no adapter)."""
    path = Path(target)
    if path.is_dir() and (path / "config.json").is_file():
        return target, None  # a plain model folder
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return _base_of_adapter(path), str(path)
    if path.is_dir() and (path / "adapter" / "adapter_config.json").is_file():
        return _base_of_adapter(path / "adapter"), str(path / "adapter")
    try:
        find_recipe(target)
    except RecipeError:
        if target.startswith(models.BUNDLED_PREFIX) or target.count("/") == 1:
            return target, None
        raise
    recipe = load_recipe(target)
    chain = models.base_chain(recipe)
    adapter = models.trained_adapter(recipe)
    if chain.adapters:
        raise models.ModelError(
            f"{recipe.slug} trains on top of another adapter; chat with its merged model is not supported here yet"
        )
    return chain.base, adapter


def _base_of_adapter(folder: Path) -> str:
    """Our adapters carry recipe.yaml with the base as the recipe wrote it (bundled:… included)."""
    recipe_file = folder / "recipe.yaml"
    if recipe_file.is_file():
        return yaml.safe_load(recipe_file.read_text())["model"]["base"]
    return json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]


def load_chat_model(target: str, merge: bool = False) -> ChatModel:
    """Load base + adapter for generation (``merge=True`` folds the adapter in: faster, but no base-only view)."""
    import torch
    from transformers import AutoModelForCausalLM

    base, adapter = locate(target)
    tokenizer = models.load_tokenizer(base)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(models.resolve_base(base), dtype=dtype)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        if merge:
            model = model.merge_and_unload()
            adapter_loaded = None
        else:
            adapter_loaded = adapter
    else:
        adapter_loaded = None
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    models.configure_generation(model, tokenizer)
    return ChatModel(model, tokenizer, base, adapter_loaded if not merge else adapter)


def stream_chat(
    cm: ChatModel,
    messages: list[dict[str, str]],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield the answer's text piece by piece as it is generated."""
    import torch
    from transformers import TextIteratorStreamer

    max_new_tokens = max(1, min(int(max_new_tokens), MAX_NEW_TOKENS_CAP))
    inputs = cm.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(cm.model.device)
    streamer = TextIteratorStreamer(cm.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    )
    if seed is not None:
        torch.manual_seed(seed)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                cm.model.generate(**inputs, streamer=streamer, max_new_tokens=max_new_tokens, **sampling)
        except BaseException as e:  # surfaced to the caller below instead of dying in the thread
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for piece in streamer:
        if piece:
            yield piece
    thread.join()
    if errors:
        raise errors[0]


def answer(cm: ChatModel, prompt: str, **kwargs) -> str:
    return "".join(stream_chat(cm, [{"role": "user", "content": prompt}], **kwargs))
