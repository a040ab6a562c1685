"""Reading a large ShareGPT-style .json array: peak memory and rows/s, by stage.

    python bench/data_scale.py --size-mb 2048 --stage validate     # the 2 GB target: read + repair + validate + dedupe
    python bench/data_scale.py --size-mb 100 --stage full          # + tokenising (bundled SmolLM2 tokenizer) to Arrow
    python bench/data_scale.py --size-mb 2048 --stage full --keep  # the whole 2 GB through `data inspect`'s path

The file is written once (streamed, pretty-printed like export tools write it, real-world faults included) under
``--workdir`` and reused. Each measurement runs in a fresh child process so that its peak resident memory
(``ru_maxrss``) is the reading alone. Stages:

- ``read``: ``readers.iter_rows`` — decode and parse, element by element;
- ``validate``: plus per-row field detection, repairs, checks and the exact-duplicate drop (``data.iter_valid``);
- ``full``: ``data.prepare`` as ``lorallama data inspect`` runs it — tokenising with assistant masks into the Arrow
  file on disk, shuffled, and the length list the histogram needs.

Results go to ``bench/results/data_scale_<stage>_<size>MB.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


def write_export(path: Path, size_mb: int, seed: int = 0) -> int:
    """A JSON array of real-world-shaped rows (support.exports) of about ``size_mb``; returns the row count.

    5,000 rows are serialised once; each further copy of that block numbers a marker in every row, so no two rows
    are the same (as in real data, the exact-duplicate check must remember every one of them).
    """
    from support.exports import real_world_rows

    rows, _ = real_world_rows(5000, seed)
    for row in rows:
        turns = row.get("conversations") or row.get("messages") or []
        if turns and isinstance(turns[-1], dict):  # the last turn: a repair never cuts it
            key = "value" if "value" in turns[-1] else "content"
            turns[-1][key] = f"{turns[-1][key]} (@@)"
    block = ",\n".join(json.dumps(r, ensure_ascii=False, indent=1) for r in rows)
    target, copies = size_mb << 20, 0
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("[\n")
        while fh.tell() < target:
            fh.write((",\n" if copies else "") + block.replace("@@", str(copies)))
            copies += 1
        fh.write("\n]\n")
    tmp.rename(path)
    return copies * len(rows)


def child(path: str, stage: str) -> None:
    """Runs in a fresh process: one stage over the file, then prints its figures as JSON."""
    import resource

    from lorallama.recipe import DataSpec
    from lorallama.training import data, readers

    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF)
    out: dict = {}
    if stage == "read":
        out["rows"] = sum(1 for _ in readers.iter_rows(path))
    elif stage == "validate":
        report = data.DataReport(source=path)
        rows = readers.iter_rows(path)
        out["kept"] = sum(1 for _ in data.iter_valid(rows, DataSpec(source=path), report, False))
        out["rows"] = sum([out["kept"], *report.dropped.values()])
        out["dropped"], out["repaired"] = dict(report.dropped), dict(report.repaired)
    else:
        from lorallama import models
        from lorallama.recipe import Recipe, TrainerSpec
        from lorallama.training.chat_templates import training_chat_template

        tokenizer = models.load_tokenizer("bundled:smollm2-135m-instruct")
        template = training_chat_template(tokenizer)
        recipe = Recipe(
            slug="bench", model=models_spec(), data=DataSpec(source=path), trainer=TrainerSpec(max_length=4096)
        )
        prepared = data.prepare(recipe, tokenizer, template)
        lengths = data.example_lengths(prepared.train)
        out.update(rows=prepared.report.total, kept=prepared.report.kept, tokens=sum(lengths))
        out["dropped"], out["repaired"] = dict(prepared.report.dropped), dict(prepared.report.repaired)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # on a shared machine CPU time is the steadier figure (imports before the start not counted)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    out.update(
        seconds=round(seconds, 1),
        cpu_seconds=round(cpu, 1),
        rows_per_s=round(out["rows"] / seconds),
        rows_per_cpu_s=round(out["rows"] / cpu),
        mb_per_s=round(os.path.getsize(path) / 2**20 / seconds, 1),
        mb_per_cpu_s=round(os.path.getsize(path) / 2**20 / cpu, 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    )
    print(json.dumps(out))


def models_spec():
    from lorallama.recipe import ModelSpec

    return ModelSpec(base="bundled:smollm2-135m-instruct")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=2048)
    p.add_argument("--stage", choices=["read", "validate", "full"], default="validate")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/lorallama-bench"))
    p.add_argument("--keep", action="store_true", help="keep the generated file for the next run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.stage)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / f"sharegpt_{args.size_mb}MB.json"
    if not path.exists():
        t = time.perf_counter()
        n = write_export(path, args.size_mb)
        print(f"wrote {path} ({n} rows, {path.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t:.0f} s")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--stage", args.stage],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if run.returncode:
        print(run.stderr[-3000:], file=sys.stderr)
        return run.returncode
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result.update(
        stage=args.stage,
        file_mb=round(path.stat().st_size / 2**20),
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
        load_average=os.getloadavg()[0],
        date=time.strftime("%Y-%m-%d"),
    )
    print(json.dumps(result, indent=1))
    out = ROOT / "bench" / "results" / f"data_scale_{args.stage}_{args.size_mb}MB.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.keep:
        path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
