"""``lorallama export``: a merged 16-bit model for serving, GGUF for llama.cpp and Ollama, or an AutoTrain config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..publishing.export import DTYPES


def register(subparsers) -> None:
    """``lorallama export merged`` and ``lorallama export autotrain``."""

    p = subparsers.add_parser(
        "export",
        help="export a merged 16-bit model for serving, or an AutoTrain config equivalent to a recipe",
        description="Exports for other tools: a merged model (TGI, vLLM, Inference Endpoints) or an AutoTrain config.",
    )
    sub = p.add_subparsers(dest="export_command", required=True, metavar="KIND")
    q = sub.add_parser(
        "merged",
        help="fold the adapter into the base and save a plain 16-bit transformers model (checked, optionally pushed)",
        description=(
            "Merge a trained adapter (and any parent adapters) into its base, check the merged model gives the same "
            "greedy tokens as base + adapter on the three original prompts, and save it in 16 bits with the tokenizer, "
            "the stop tokens and a model card."
        ),
        epilog=(
            "examples:\n"
            "  lorallama export merged demo --output exports/demo-merged\n"
            "  lorallama export merged runs/finetome/adapter --push you/llama-3.2-1b-finetome-merged"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("target", help="recipe slug (its runs/<slug>/adapter, else its model repo) or adapter folder")
    q.add_argument("--output", type=Path, help="new folder for the model (default: exports/<slug>-merged)")
    q.add_argument("--dtype", choices=DTYPES, default="bfloat16", help="weights dtype (default bfloat16)")
    q.add_argument("--push", metavar="REPO", help="also upload the folder to this model repo (created if needed)")
    q.add_argument("--private", action="store_true", help="with --push: create the repo private")
    q.set_defaults(func=cmd_export_merged)
    register_gguf(sub)
    q = sub.add_parser(
        "autotrain",
        help="write an AutoTrain Advanced LLM-SFT config (YAML) equivalent to the recipe",
        description=(
            "Write the `autotrain --config` YAML (task llm-sft) with the recipe's base, data, LoRA and trainer values; "
            "comments at the top say what AutoTrain cannot express. Local chat data is converted to role/content "
            "messages beside the config."
        ),
        epilog="example:\n  lorallama export autotrain finetome --output autotrain/finetome.yml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("recipe", help="recipe slug or YAML path")
    q.add_argument("--output", type=Path, help="config file to write (default: print it)")
    q.add_argument("--base-model", help="base model id for AutoTrain (default: the recipe's base)")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    q.set_defaults(func=cmd_export_autotrain)


def cmd_export_merged(args) -> int:
    from .. import hub
    from ..publishing.export import export_merged, locate

    output = args.output or Path("exports") / f"{locate(args.target).label}-merged"
    report = export_merged(args.target, output, args.dtype)
    print(f"merged model written to {report.output} ({report.dtype})")
    print(f"greedy tokens, merged vs base + adapter: identical on {len(report.reference)} prompts")
    same = sum(a == b for a, b in zip(report.written, report.reference, strict=True))
    print(f"greedy tokens, written {report.dtype} copy: identical on {same} of {len(report.reference)} prompts")
    if args.push:
        hub.ensure_repo(args.push, private=args.private)
        commit = hub.push_folders(args.push, {"": report.output}, f"Merged {report.dtype} export (lorallama)")
        print(f"pushed to {args.push} ({commit[:12]})")
    return 0


def register_gguf(sub) -> None:
    from ..publishing.gguf import LLAMA_QUANTIZE, NATIVE_QUANTS, QUANTS

    q = sub.add_parser(
        "gguf",
        help="write the merged model as GGUF for llama.cpp, Ollama and LM Studio (checked; Modelfile; optional push)",
        description=(
            "Merge the adapter into its base and write one GGUF file with the tokenizer and the chat template, then "
            "read it back with transformers and compare its greedy tokens with the merged model's on the three "
            "original prompts. With --ollama, also a Modelfile (chat template, stop tokens, parameters) and the "
            "template/system/params files that `ollama run hf.co/<repo>` reads. With --lora-only, the adapter alone "
            "as a GGUF LoRA, next to the base as GGUF, for `llama-server -m base.gguf --lora adapter.gguf`.\n\n"
            f"Quantizations: {', '.join(NATIVE_QUANTS)} are written directly (q8_0 is near-lossless at half of f16's "
            f"size); {', '.join(LLAMA_QUANTIZE)} are made from f16 by llama.cpp's llama-quantize, which must be on "
            "PATH. Prefix- and prompt-tuning adapters cannot be merged and are refused."
        ),
        epilog=(
            "examples:\n"
            "  lorallama export gguf demo --quant q8_0 --ollama\n"
            "  cd exports/demo-gguf && ollama create demo -f Modelfile && ollama run demo\n"
            "  lorallama export gguf runs/finetome/adapter --quant f16 --push you/llama-3.2-1b-finetome-GGUF\n"
            "  ollama run hf.co/you/llama-3.2-1b-finetome-GGUF:F16\n"
            "  lorallama export gguf demo --lora-only && llama-server -m exports/demo-gguf/*-base-*.gguf "
            "--lora exports/demo-gguf/*-lora-*.gguf"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("target", help="recipe slug (its runs/<slug>/adapter, else its model repo) or adapter folder")
    q.add_argument("--output", type=Path, help="new folder for the files (default: exports/<slug>-gguf)")
    q.add_argument("--quant", choices=QUANTS, default="q8_0", metavar="QUANT", help="q8_0 (default), f16, … (above)")
    q.add_argument("--ollama", action="store_true", help="also write the Modelfile and Ollama's template files")
    q.add_argument("--lora-only", action="store_true", help="the adapter as a GGUF LoRA plus the base, unmerged")
    q.add_argument("--push", metavar="REPO", help="also upload the folder (with Ollama's files) to this model repo")
    q.add_argument("--private", action="store_true", help="with --push: create the repo private")
    q.set_defaults(func=cmd_export_gguf)


def cmd_export_gguf(args) -> int:
    from ..errors import ExportError
    from ..publishing import gguf
    from ..publishing.export import locate

    ref = locate(args.target)
    if args.lora_only and (args.push or args.ollama):
        raise ExportError("--lora-only writes files for llama-server --lora; push or --ollama the merged export")
    output = args.output or Path("exports") / f"{ref.label}-gguf"
    if args.lora_only:
        report = gguf.export_gguf_lora(args.target, output, args.quant)
    else:
        # A pushed repo carries Ollama's files too, so `ollama run hf.co/<repo>` gets the template and stop tokens.
        report = gguf.export_gguf(args.target, output, args.quant, modelfile=args.ollama or bool(args.push))
    print(f"GGUF written to {report.gguf} ({args.quant})")
    if report.reference:
        print(
            f"greedy tokens, read back by transformers vs the merged model: identical on {report.same} of "
            f"{len(report.reference)} prompts"
        )
    if (args.ollama or args.push) and not args.lora_only:
        print(f"Ollama: cd {report.output} && ollama create {ref.label} -f Modelfile && ollama run {ref.label}")
    if args.push:
        commit = gguf.push_gguf(report, ref, args.push, args.private)
        print(f"pushed to {args.push} ({commit[:12]}): ollama run hf.co/{args.push}:{args.quant.upper()}")
    return 0


def cmd_export_autotrain(args) -> int:
    from ..publishing.export import autotrain_yaml
    from ..recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    data_dir = (args.output.parent / f"{args.output.stem}-data") if args.output else None
    text = autotrain_yaml(recipe, args.base_model, data_dir)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"AutoTrain config written to {args.output}")
    else:
        sys.stdout.write(text)
    return 0
