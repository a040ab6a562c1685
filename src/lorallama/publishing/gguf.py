"""``export gguf``: the merged model as one GGUF file for llama.cpp, Ollama and LM Studio, checked by reading it back.

    lorallama export gguf demo --quant q8_0 --ollama
    lorallama export gguf runs/finetome/adapter --quant f16 --push you/llama-3.2-1b-finetome-GGUF
    lorallama export gguf demo --lora-only          # the adapter alone, for llama-server --lora

The file is written with the ``gguf`` package (the writer llama.cpp's own converter uses), not with llama.cpp's
``convert_hf_to_gguf.py``: no registry package ships that script ready to run (the ``gguf`` wheel carries only the
library; ``llama-cpp-python``'s source archive carries a copy that needs llama.cpp compiled and its own copy of the
``gguf`` library beside it), and every model this project trains is a Llama, whose mapping is a table
(``gguf.get_tensor_name_map``) plus the query/key row order llama.cpp expects. The tokenizer (byte-level BPE,
merges, special tokens) and the chat template go into the file's metadata. Before the file is kept, transformers
reads it back (``from_pretrained(..., gguf_file=...)``: tokenizer and weights from the file alone) and its greedy
tokens are compared with the merged model's.

Quantizations written here are those the ``gguf`` package can quantize (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0,
q5_1); k-quants such as q4_k_m are made from the f16 file by llama.cpp's ``llama-quantize`` when it is installed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import models
from ..errors import ExportError
from ..prompts import COMPARISON_PROMPTS
from . import ollama
from .export import CHECK_TOKENS, derived_card_data, greedy_tokens, locate, require_mergeable

log = logging.getLogger("lorallama")

# Written with gguf.quants; the value is (file type, tensor type) names in the gguf package.
NATIVE_QUANTS = {
    "f32": ("ALL_F32", "F32"),
    "f16": ("MOSTLY_F16", "F16"),
    "bf16": ("MOSTLY_BF16", "BF16"),
    "q8_0": ("MOSTLY_Q8_0", "Q8_0"),
    "q5_1": ("MOSTLY_Q5_1", "Q5_1"),
    "q5_0": ("MOSTLY_Q5_0", "Q5_0"),
    "q4_1": ("MOSTLY_Q4_1", "Q4_1"),
    "q4_0": ("MOSTLY_Q4_0", "Q4_0"),
}
# Made by llama.cpp's llama-quantize from the f16 file (the gguf package reads k-quants but cannot write them).
LLAMA_QUANTIZE = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "iq4_xs")
QUANTS = (*NATIVE_QUANTS, *LLAMA_QUANTIZE)


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _permute(weights, n_head: int):
    """HF stores each query/key head's rotary halves apart; llama.cpp wants them interleaved (its converter's
    ``permute``; transformers' GGUF reader undoes exactly this)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _rope_factors(config):
    """Llama 3.1/3.2's "llama3" rope scaling as llama.cpp's per-frequency factors (``rope_freqs.weight``)."""
    import numpy as np

    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type") != "llama3":
        return None
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    base = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old = rope.get("original_max_position_embeddings", 8192)
    out = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def _tensor(writer, name: str, data, qtype) -> None:
    """Add one tensor: norms and other vectors stay float32 (as llama.cpp keeps them), matrices take ``qtype``."""
    import gguf
    import numpy as np

    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, data)
    elif qtype == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, data.astype(np.float16))
    else:
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        if data.shape[-1] % block:  # rows that do not fill whole blocks cannot be quantized: f16, as llama.cpp does
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


def add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """Byte-level BPE vocabulary, token types, merges, special token ids and the chat template."""
    import gguf

    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    added = tokenizer.added_tokens_decoder  # id → AddedToken
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(vocab))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        special = gguf.SpecialVocab(tmp, load_merges=True, n_vocab=vocab_size)
    special.chat_template = tokenizer.chat_template  # the template the model was trained with (model.chat_template)
    special.add_to_gguf(writer, quiet=True)


def _pre_tokenizer(vocab: dict) -> str:
    """llama.cpp's name for the pre-tokenizer (how text is split before BPE): it picks the regex at load time."""
    if "<|begin_of_text|>" in vocab:
        return "llama-bpe"
    if "<|im_start|>" in vocab and len(vocab) == 49152:
        return "smollm"
    return "gpt-2"


def write_gguf(model, tokenizer, path: Path, quant: str, name: str) -> None:
    """A Llama-architecture transformers model (float32) and its tokenizer → one GGUF file in ``quant``."""
    import gguf

    if quant not in NATIVE_QUANTS:
        raise ExportError(f"--quant {quant}: the gguf package writes {', '.join(NATIVE_QUANTS)}")
    config = model.config
    if config.model_type != "llama":
        raise ExportError(
            f"export gguf writes Llama-architecture models; this one is {config.model_type!r}: use llama.cpp's "
            "convert_hf_to_gguf.py on an `export merged` folder"
        )
    file_type, tensor_type = NATIVE_QUANTS[quant]
    qtype = getattr(gguf.GGMLQuantizationType, tensor_type)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    rope = getattr(config, "rope_parameters", None) or {}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(getattr(gguf.LlamaFileType, file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_tokenizer(writer, tokenizer, config.vocab_size)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    factors = _rope_factors(config)
    if factors is not None:
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when the file has no output.weight
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"no GGUF name for tensor {hf_name}: this Llama variant is not supported by export gguf")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_kv)
        _tensor(writer, gguf_name, data, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_quantize_binary(quant: str) -> str:
    binary = shutil.which("llama-quantize")
    if binary is None:
        raise ExportError(
            f"--quant {quant} needs llama.cpp's llama-quantize on PATH (the gguf package reads k-quants but cannot "
            f"write them): install llama.cpp, or use one of {', '.join(NATIVE_QUANTS)}"
        )
    return binary


def llama_quantize(source: Path, target: Path, quant: str) -> None:
    """A k-quant made from the f16 file by llama.cpp's own quantizer."""
    done = subprocess.run(
        [llama_quantize_binary(quant), str(source), str(target), quant.upper()], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise ExportError(f"llama-quantize {quant.upper()} failed: {done.stderr.strip().splitlines()[-1:]}")


# ---------------------------------------------------------------------------------------------------------------
# The whole export


@dataclass
class GGUFReport:
    output: Path
    gguf: Path
    quant: str
    reference: list[list[int]]
    written: list[list[int]]
    files: list[Path] = field(default_factory=list)

    @property
    def same(self) -> int:
        return sum(a == b for a, b in zip(self.written, self.reference, strict=True))


def merged_model(ref: models.ModelRef):
    """Base + parents + adapter folded into one float32 transformers model, and the tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_path = models.merged_base(models.BaseChain(ref.base, ref.parents), "float32")
    tokenizer = models.load_tokenizer(ref.base)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, ref.adapter).merge_and_unload().eval()
    models.configure_generation(model, tokenizer)
    return model, tokenizer


@contextlib.contextmanager
def parsed_once():
    """What transformers recomputes while it reads one GGUF file, computed once for the duration.

    - It opens the file once per thing it asks (config, tokenizer, weights: four times for one read-back), and each
      opening parses every vocabulary entry and merge in Python (about 14 s for SmolLM2's 49k on 2 cores). The file
      does not change meanwhile, so one ``gguf.GGUFReader`` per file answers them all.
    - It maps tensor names module by module, building ``gguf``'s whole name table again for each of the model's
      ~400 modules (about 16 s for SmolLM2 on 2 cores). The table depends only on the architecture and the block
      count.

    transformers imports both names from the ``gguf`` package inside its loader, so patching the package's
    attributes for the duration is enough."""
    import gguf as gguf_package

    original_reader, original_name_map = gguf_package.GGUFReader, gguf_package.get_tensor_name_map
    readers: dict[tuple[str, str], object] = {}

    def shared_reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf_package.GGUFReader = shared_reader
    gguf_package.get_tensor_name_map = functools.cache(original_name_map)
    try:
        yield
    finally:
        gguf_package.GGUFReader, gguf_package.get_tensor_name_map = original_reader, original_name_map


def read_back(path: Path):
    """The GGUF file as transformers reads it: tokenizer and weights from the file alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    models.configure_generation(model, tokenizer)
    return model, tokenizer


def export_gguf(
    target: str,
    output: Path,
    quant: str = "q8_0",
    *,
    modelfile: bool = True,
    prompts=None,
    check_tokens: int = CHECK_TOKENS,
) -> GGUFReport:
    """Merge, write the GGUF (and the Ollama files), read it back and compare greedy tokens; all or nothing."""
    if quant not in QUANTS:
        raise ExportError(f"--quant {quant}: use one of {', '.join(QUANTS)}")
    prompts = list(prompts or COMPARISON_PROMPTS)
    ref = locate(target)
    require_mergeable(ref)
    if quant in LLAMA_QUANTIZE:
        llama_quantize_binary(quant)
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise ExportError(f"{output} is not empty: pick a new --output folder")
    model, tokenizer = merged_model(ref)
    if modelfile:
        ollama.chat_format(tokenizer)  # before the long part: a template --ollama cannot write stops here
    reference = greedy_tokens(model, tokenizer, prompts, check_tokens)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}-"))
    try:
        name = f"{ref.label}-{quant.upper()}.gguf"
        if quant in NATIVE_QUANTS:
            write_gguf(model, tokenizer, tmp / name, quant, ref.label)
        else:
            write_gguf(model, tokenizer, tmp / "f16.gguf.part", "f16", ref.label)
            llama_quantize(tmp / "f16.gguf.part", tmp / name, quant)
            (tmp / "f16.gguf.part").unlink()
        del model
        loaded, loaded_tokenizer = read_back(tmp / name)
        written = greedy_tokens(loaded, loaded_tokenizer, prompts, check_tokens)
        report = GGUFReport(output, output / name, quant, reference, written)
        if modelfile:
            for file_name, text in ollama.files(tokenizer, name, loaded.config).items():
                (tmp / file_name).write_text(text, encoding="utf-8")
        (tmp / "README.md").write_text(gguf_card(ref, report, prompts), encoding="utf-8")
        report.files += move_into(tmp, output)
    except OSError as e:
        raise ExportError(f"writing the export to {output} failed: {e.strerror or e} (disk full?)") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def plain_lora_config(folder: Path):
    """The adapter's PEFT config when it is plain LoRA or rsLoRA (what a GGUF LoRA can hold), else ``ExportError``."""
    from peft import PeftConfig

    peft = PeftConfig.from_pretrained(str(folder))
    if peft.peft_type.value != "LORA" or getattr(peft, "use_dora", False):
        kind = "DoRA" if getattr(peft, "use_dora", False) else peft.peft_type.value
        raise ExportError(
            f"--lora-only writes plain LoRA, which llama.cpp applies as B·A·scale; a {kind} adapter has no such form: "
            "export the merged model instead (drop --lora-only)"
        )
    return peft


def write_lora_gguf(folder: Path, config, path: Path, name: str) -> None:
    """A PEFT LoRA (or rsLoRA) adapter → GGUF LoRA for ``llama-server --lora``: A and B per target weight, B's rows
    in llama.cpp's query/key order, and the alpha that gives PEFT's scale (llama.cpp scales by alpha / rank)."""
    import gguf
    from safetensors.numpy import load_file

    peft = plain_lora_config(folder)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    # rsLoRA scales by alpha / sqrt(r): the same scale as alpha·sqrt(r) / r, which is what llama.cpp computes.
    alpha = peft.lora_alpha * math.sqrt(peft.r) if peft.use_rslora else peft.lora_alpha
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for key, data in sorted(load_file(str(folder / "adapter_model.safetensors")).items()):
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight", key)
        if m is None:
            raise ExportError(f"{folder}: tensor {key} is not a LoRA A or B matrix: --lora-only cannot write it")
        hf_name, part = m.group(1) + ".weight", m.group(2)
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight",))
        if gguf_name is None:
            raise ExportError(f"{folder}: no GGUF name for {hf_name}")
        data = data.astype("float32")
        if part == "B" and hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head)
        elif part == "B" and hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_kv)
        writer.add_tensor(f"{gguf_name}.lora_{part.lower()}", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def export_gguf_lora(target: str, output: Path, quant: str = "q8_0", prompts=None, check_tokens: int = CHECK_TOKENS):
    """The adapter as a GGUF LoRA beside its base (parent adapters merged in) as GGUF; the base file is read back
    and checked against the base model like a full export."""
    import torch
    from transformers import AutoModelForCausalLM

    if quant not in NATIVE_QUANTS:
        raise ExportError(f"--lora-only writes the base in {', '.join(NATIVE_QUANTS)}; got --quant {quant}")
    prompts = list(prompts or COMPARISON_PROMPTS)
    ref = locate(target)
    require_mergeable(ref)
    folder = models.local_adapter(ref.adapter)
    plain_lora_config(folder)
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise ExportError(f"{output} is not empty: pick a new --output folder")
    tokenizer = models.load_tokenizer(ref.base)
    base = AutoModelForCausalLM.from_pretrained(
        models.merged_base(models.BaseChain(ref.base, ref.parents), "float32"), dtype=torch.float32
    ).eval()
    models.configure_generation(base, tokenizer)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}-"))
    try:
        lora_name = f"{ref.label}-lora-F32.gguf"
        write_lora_gguf(folder, base.config, tmp / lora_name, ref.label)
        base_name = f"{ref.label}-base-{quant.upper()}.gguf"
        write_gguf(base, tokenizer, tmp / base_name, quant, f"{ref.label} base")
        reference = greedy_tokens(base, tokenizer, prompts, check_tokens)
        written = greedy_tokens(*read_back(tmp / base_name), prompts, check_tokens)
        report = GGUFReport(output, output / lora_name, quant, reference, written)
        report.files += move_into(tmp, output)
    except OSError as e:
        raise ExportError(f"writing the export to {output} failed: {e.strerror or e} (disk full?)") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def gguf_card(ref: models.ModelRef, report: GGUFReport, prompts: list[str], repo: str | None = None) -> str:
    from huggingface_hub import ModelCard

    base = models.hub_id_of(ref.base)
    data = derived_card_data(ref, "quantized", "gguf", ["gguf", "llama.cpp", "ollama"])
    where = repo or "<this-repo>"
    if any(f.name == "Modelfile" for f in report.files):
        ollama_note = (
            f"Or from a download of this folder: `ollama create {ref.label} -f Modelfile && ollama run {ref.label}`, "
            f"or `llama-server -m {report.gguf.name}`. The `template`, `system` and `params` files give "
            "`ollama run hf.co/...` the chat template, the default system prompt and the stop tokens."
        )
    else:
        ollama_note = f"Or from a download of this folder: `llama-server -m {report.gguf.name}`."
    chain = " + ".join(f"`{x}`" for x in [base, *ref.parents, ref.adapter])
    body = f"""
# {ref.label} (GGUF, {report.quant.upper()})

{chain} merged and written as one GGUF file, `{report.gguf.name}`, with its tokenizer and chat template, for
llama.cpp, Ollama and LM Studio.

```bash
ollama run hf.co/{where}:{report.quant.upper()}
llama-server -hf {where}:{report.quant.upper()}
```

{ollama_note}

Checked at export: read back by transformers from the file alone, greedy decoding of the {len(prompts)} prompts of
the original comparison ({len(report.reference[0]) if report.reference else 0} tokens each) gave the merged model's
tokens on {report.same} of {len(prompts)} prompts{"" if report.same == len(prompts) else " (quantization moves near-ties)"}.
Licence and limitations are those of the adapter's model card.
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def push_gguf(report: GGUFReport, ref: models.ModelRef, repo: str, private: bool = False) -> str:
    """Upload the export to ``repo`` with a card that names the repo in its run lines; returns the commit id."""
    from .. import hub

    files: dict[str, Path | bytes] = {f.name: f for f in report.files if f.name != "README.md"}
    files["README.md"] = gguf_card(ref, report, list(COMPARISON_PROMPTS)[: len(report.reference)], repo).encode()
    hub.ensure_repo(repo, private=private)
    return hub.upload_files(repo, files, f"GGUF {report.quant.upper()} export (lorallama)")


def move_into(tmp: Path, output: Path) -> list[Path]:
    """Move every finished file of ``tmp`` into ``output``, readable by other users (servers run as others)."""
    output.mkdir(exist_ok=True)
    moved = []
    for f in sorted(tmp.iterdir()):
        f.chmod(0o644)
        shutil.move(str(f), output / f.name)
        moved.append(output / f.name)
    return moved
