"""``lorallama sync``: every Space, model card and dataset card from this checkout to the Hub."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    """``lorallama sync``."""

    p = subparsers.add_parser(
        "sync",
        help="upload spaces/ (package vendored in) and the model/dataset cards to the Hub",
        description=(
            "Upload each spaces/<slug>/ to its Space with the package vendored in (creating the Space, deleting "
            "files removed here, skipping unchanged ones), and push the model cards (model_cards/<slug>.md + the run "
            "in the model repo) and dataset cards (datasets_cards/<name>.md) without touching weights or data. "
            "Repos come from the recipes; HF_NAMESPACE replaces their namespace. Prints the plan and a summary."
        ),
        epilog=(
            "examples:\n"
            "  lorallama sync --dry-run\n"
            "  lorallama sync --only spaces\n"
            "  lorallama sync --changed-since HEAD~1\n"
            "  HF_NAMESPACE=you lorallama sync        # into your namespace (HF_TOKEN must be able to write there)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--only", choices=["spaces", "cards"], help="sync only the Spaces, or only the model/dataset cards")
    p.add_argument(
        "--changed-since",
        metavar="REF",
        help="only what changed since this git commit (empty or all-zero: everything); src/ changes mean everything",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would change; create and write nothing")
    p.add_argument("--root", type=Path, help="the checkout to sync (default: the git root of the current folder)")
    p.set_defaults(func=cmd_sync)


def cmd_sync(args) -> int:
    from ..publishing.sync import run_sync

    outcomes = run_sync(args.root, only=args.only, changed_since=args.changed_since, dry_run=args.dry_run)
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        print(f"lorallama: error: {o.target.kind} {o.target.repo_id}: {o.detail}", file=sys.stderr)
    return 1 if failed else 0
