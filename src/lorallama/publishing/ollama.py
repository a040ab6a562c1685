"""Ollama's files for a GGUF export: the chat template in Go's template language, stop tokens, parameters.

Ollama does not run the Jinja chat template stored in the GGUF; it renders its own Go template over
``.Messages``. The two chat formats this project's models use are written here by hand (ChatML for SmolLM2, the
Llama 3 header format for Llama 3.x), with the parts that vary between models — SmolLM2's default system prompt,
Llama 3's dated system preamble — taken from the model's own template by rendering it. The same text goes into the
``Modelfile`` (``ollama create``) and into the ``template``, ``system`` and ``params`` files that ``ollama run
hf.co/<repo>`` reads from a Hub repo.
"""

from __future__ import annotations

import json
import re
import secrets

from .. import models
from ..errors import ExportError
from ..serving.config import ChatConfig

FORMATS = ("chatml", "llama3")


def chat_format(tokenizer) -> str:
    template = str(tokenizer.chat_template or "")
    if "<|im_start|>" in template:
        return "chatml"
    if "<|start_header_id|>" in template:
        return "llama3"
    raise ExportError(
        "--ollama knows ChatML and Llama 3 chat templates; this model's is neither: export without --ollama and "
        "write the Modelfile's TEMPLATE by hand"
    )


def _render(tokenizer, messages) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def default_system(tokenizer) -> str | None:
    """The system prompt the template adds when a conversation has none (SmolLM2's), or None."""
    nonce = secrets.token_hex(8)
    text = _render(tokenizer, [{"role": "user", "content": nonce}])
    m = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", text.split(nonce)[0], re.S)
    return m.group(1) if m else None


def llama3_preamble(tokenizer) -> str:
    """What Llama 3.1/3.2 put before the system prompt (knowledge cutoff and today's date, at export time)."""
    nonce = secrets.token_hex(8)
    text = _render(tokenizer, [{"role": "system", "content": nonce}, {"role": "user", "content": "x"}])
    head = "<|start_header_id|>system<|end_header_id|>\n\n"
    before = text.split(nonce)[0]
    return before[before.index(head) + len(head) :] if head in before else ""


def go_template(tokenizer) -> str:
    """The chat template as an Ollama (Go) template over ``.Messages``; renders what the Jinja one renders (minus a
    leading BOS token, which llama.cpp adds itself)."""
    if chat_format(tokenizer) == "chatml":
        system = default_system(tokenizer)
        first = (
            '{{- if and (eq $i 0) (ne .Role "system") }}<|im_start|>system\n' + system + "<|im_end|>\n{{ end }}"
            if system is not None
            else ""
        )
        return (
            "{{- range $i, $_ := .Messages }}" + first + "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
            "{{ end }}<|im_start|>assistant\n"
        )
    preamble = llama3_preamble(tokenizer).replace("{{", '{{ "{{" }}')
    return (
        "{{- range $i, $_ := .Messages }}"
        "{{- if eq $i 0 }}<|start_header_id|>system<|end_header_id|>\n\n" + preamble + '{{ if eq .Role "system" }}'
        "{{ .Content }}{{ end }}<|eot_id|>{{ end }}"
        '{{- if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>'
        "{{ end }}"
        "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def stop_tokens(tokenizer) -> list[str]:
    return [tokenizer.convert_ids_to_tokens(i) for i in models.stop_token_ids(tokenizer)]


def params(tokenizer, config) -> dict:
    """Sampling as the chat Space samples, the stop tokens, and the context window (capped: Ollama allocates it)."""
    defaults = ChatConfig.__dataclass_fields__
    return {
        "stop": stop_tokens(tokenizer),
        "temperature": defaults["temperature"].default,
        "top_p": defaults["top_p"].default,
        "num_ctx": min(int(getattr(config, "max_position_embeddings", 4096)), 8192),
    }


def modelfile(tokenizer, gguf_name: str, config) -> str:
    template = go_template(tokenizer)
    system = default_system(tokenizer)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    for key, value in params(tokenizer, config).items():
        for v in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {key} {json.dumps(v) if isinstance(v, str) else v}")
    return "\n".join(lines) + "\n"


def files(tokenizer, gguf_name: str, config) -> dict[str, str]:
    """``Modelfile`` for ``ollama create``; ``template``, ``system``, ``params`` for ``ollama run hf.co/<repo>``."""
    out = {
        "Modelfile": modelfile(tokenizer, gguf_name, config),
        "template": go_template(tokenizer),
        "params": json.dumps(params(tokenizer, config), indent=2) + "\n",
    }
    system = default_system(tokenizer)
    if system:
        out["system"] = system
    return out
