"""``lorallama data``: inspect a recipe's data, turn Space feedback into training data, publish datasets."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("data", help="look at a recipe's training data")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = dsub.add_parser("inspect", help="validation report and token-length histogram (also written as a PNG)")
    q.add_argument("recipe", help="recipe slug or YAML path")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    q.add_argument(
        "--strict", action="store_true", help="stop at the first bad row, naming its file and line (as data.strict)"
    )
    q.add_argument("--png", type=Path, help="where to write the histogram (default runs/<slug>/token_lengths.png)")
    q.set_defaults(func=cmd_data_inspect)
    q = dsub.add_parser(
        "from-feedback",
        help="turn a Space's feedback dataset into ShareGPT training data (liked + disliked-and-corrected answers)",
    )
    q.add_argument("dataset", help="the Hub dataset LORALLAMA_FEEDBACK_DATASET names, or a local .jsonl file/folder")
    q.add_argument("--output", type=Path, help="JSONL to write (default runs/feedback/<dataset name>.jsonl)")
    q.set_defaults(func=cmd_data_from_feedback)
    register_publish(dsub)


def cmd_data_inspect(args) -> int:
    from .. import models
    from ..paths import run_dir
    from ..recipe import load_recipe
    from ..training import data
    from ..training.chat_templates import training_chat_template
    from .train import check_inputs

    recipe = load_recipe(args.recipe, args.set)
    check_inputs(recipe)
    chain = models.base_chain(recipe)
    tokenizer = models.load_tokenizer(chain.base, recipe.model.chat_template)
    template = training_chat_template(tokenizer) if recipe.trainer.assistant_only_loss else None
    prepared = data.prepare(recipe, tokenizer, template, strict=args.strict or None)
    png = args.png or run_dir(recipe.slug) / "token_lengths.png"
    lengths = data.example_lengths(prepared.train)
    print(prepared.report.format())
    held_out = ", ".join(f"{k} {len(v)}" for k, v in prepared.eval.items()) or "none"
    print(f"\ntraining examples: {len(lengths)}; held out: {held_out}")
    print("token lengths:")
    print(data.length_histogram(lengths, png, title=f"{recipe.slug}: tokens per training example"))
    print(f"\nhistogram written to {png}")
    return 0


def cmd_data_from_feedback(args) -> int:
    from .. import feedback_schema
    from ..paths import RUNS

    name = Path(args.dataset.rstrip("/")).name.removesuffix(".jsonl") or "feedback"
    output = args.output or RUNS / "feedback" / f"{name}.jsonl"
    conversion = feedback_schema.from_feedback(args.dataset, output)
    print(conversion.summary())
    print(f"written to {output}; train on it with: lorallama train <recipe> --set data.source={output}")
    return 0


def register_publish(data_subparsers) -> None:
    """``lorallama data publish``."""
    from ..publishing.datasets import DATASETS

    listing = "\n".join(f"  {n:<14} {s.summary}" for n, s in DATASETS.items())
    q = data_subparsers.add_parser(
        "publish",
        help="push a dataset the project publishes (data + card from datasets_cards/<name>.md)",
        description="Validate a dataset, render its card and push both to its dataset repo in one commit.",
        epilog=(
            f"datasets:\n{listing}\n\nexamples:\n"
            "  lorallama data publish demo-chat --dry-run\n"
            "  lorallama data publish marx-corpus marx-engels.jsonl\n"
            "  HF_NAMESPACE=you lorallama data publish chat-feedback feedback.jsonl"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("name", choices=sorted(DATASETS), help="which dataset")
    q.add_argument("file", nargs="?", type=Path, help="the local file to publish (demo-chat has a default)")
    q.add_argument("--repo", help="dataset repo id (default: the project's, with HF_NAMESPACE applied)")
    q.add_argument("--private", action="store_true", help="create the repo private")
    q.add_argument("--output", type=Path, help="also write the data, stats.json and README.md into this folder")
    q.add_argument("--dry-run", action="store_true", help="validate and print what would be pushed; push nothing")
    q.set_defaults(func=cmd_data_publish)


def cmd_data_publish(args) -> int:
    from ..names import namespace_override
    from ..publishing.datasets import publish

    result = publish(
        args.name,
        args.file,
        repo=args.repo,
        namespace=namespace_override(),
        private=args.private,
        dry_run=args.dry_run,
        output=args.output,
    )
    stats = result["stats"]
    dropped = ", ".join(f"{k} {v}" for k, v in stats["dropped"].items()) or "none"
    print(f"{args.name}: {stats['rows']} rows kept of {stats['rows_read']} (dropped: {dropped})")
    for path, size in result["files"].items():
        print(f"  {path}  {size} bytes")
    if args.output:
        print(f"written to {args.output}")
    if args.dry_run:
        print(f"dry run: nothing pushed (would go to dataset repo {result['repo']})")
    else:
        print(f"pushed to dataset repo {result['repo']} ({result['commit'][:12]})")
    return 0
