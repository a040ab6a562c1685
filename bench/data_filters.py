"""What each data filter removes from FineTome-shaped rows, and what it costs per 1,000 rows on this CPU.

    python bench/data_filters.py                       # 3,000 rows; judge on 48 of them with the bundled model
    python bench/data_filters.py --judge-rows 0        # without the judge
    python bench/data_filters.py --show-dropped 20     # also print 20 dropped rows (seeded) for a hand check

The rows come from ``tests/support/exports.py`` (ShareGPT/FineTome patterns: roles as exports spell them, split
conversations, ``source`` and ``score`` columns) plus, for the filters to find something, 3% near-copies (one word
in twenty changed) and 2% German and French conversations. Each filter runs on the validated conversations alone,
timed in CPU seconds (``time.process_time``, all threads) and wall seconds. Results go to
``bench/results/data_filters.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

OTHER_LANGUAGES = [
    (
        "Wie funktioniert eine Wärmepumpe im Winter?",
        "Eine Wärmepumpe entzieht der Außenluft auch bei Kälte Wärme und "
        "hebt sie mit einem Verdichter auf ein höheres Temperaturniveau.",
    ),
    (
        "Quelle est la différence entre un virus et une bactérie ?",
        "Une bactérie est un organisme vivant qui se "
        "reproduit seul, alors qu'un virus a besoin d'une cellule hôte pour se multiplier.",
    ),
]


def sample(n: int, seed: int):
    from support.exports import real_world_rows

    rng = random.Random(seed)
    rows, expected = real_world_rows(n, seed)
    extra, labels = [], []
    for row, exp in zip(rows, expected, strict=True):
        if exp.keep and rng.random() < 0.03:
            copy = json.loads(json.dumps(row))
            turns = copy.get("conversations") or copy.get("messages")
            key = "value" if "value" in turns[-1] else "content"
            words = turns[-1][key].split()
            for i in range(0, len(words), 20):
                words[i] = "changed"
            turns[-1][key] = " ".join(words)
            extra.append(copy)
            labels.append("near_copy")
        if rng.random() < 0.02:
            q, a = rng.choice(OTHER_LANGUAGES)
            extra.append(
                {
                    "conversations": [{"from": "human", "value": f"{q} ({len(extra)})"}, {"from": "gpt", "value": a}],
                    "score": 4.5,
                }
            )
            labels.append("other_language")
    return rows + extra, [e.pattern for e in expected] + labels


def cpu_wall(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=3000)
    p.add_argument("--seed", type=int, default=3407)
    p.add_argument("--judge-rows", type=int, default=48)
    p.add_argument("--judge-model", default="bundled:smollm2-135m-instruct")
    p.add_argument("--show-dropped", type=int, default=0)
    args = p.parse_args(argv)

    from lorallama.recipe import DataSpec, JudgeSpec
    from lorallama.training import data, dedupe, judge
    from lorallama.training.readers import RawRow

    rows, labels = sample(args.rows, args.seed)
    raw = [RawRow(i, r, where=f"row {i + 1}") for i, r in enumerate(rows)]
    report = data.DataReport("sample")
    reasons: dict[int, str] = {}
    drop = report.drop
    report.drop = lambda index, reason: (reasons.__setitem__(index, reason), drop(index, reason))  # for the hand check
    items, cpu, wall = cpu_wall(lambda: list(data.iter_valid(raw, DataSpec(source="x"), report, False, keep_row=True)))
    per_k = lambda seconds, count: round(1000 * seconds / max(count, 1), 3)  # noqa: E731
    results: dict = {
        "rows": len(rows),
        "valid_conversations": len(items),
        "validation": {
            "dropped": dict(report.dropped),
            "repaired": dict(report.repaired),
            "cpu_s_per_1000": per_k(cpu, len(rows)),
            "wall_s_per_1000": per_k(wall, len(rows)),
        },
        "filters": {},
    }

    def record(name, removed, cpu, wall, count, **more):
        results["filters"][name] = {
            "removed": removed,
            "of": count,
            "cpu_s_per_1000": per_k(cpu, count),
            "wall_s_per_1000": per_k(wall, count),
            **more,
        }

    kept, cpu, wall = cpu_wall(lambda: [it for it in items if data._score(it["row"].get("score")) >= 4.0])
    record("score >= 4.0", len(items) - len(kept), cpu, wall, len(items))

    langs, cpu, wall = cpu_wall(lambda: [data._language(it["messages"]) for it in items])
    wrong = sum(
        1 for it, lang in zip(items, langs, strict=True) if lang != "en" and labels[it["index"]] != "other_language"
    )
    planted = sum(1 for it in items if labels[it["index"]] == "other_language")
    record(
        "language en",
        sum(1 for g in langs if g != "en"),
        cpu,
        wall,
        len(items),
        planted_other_language=planted,
        english_rows_removed=wrong,
    )

    def near():
        nd = dedupe.NearDuplicates(0.8)
        return [it for it in items if nd.seen_before(it["messages"])]

    dups, cpu, wall = cpu_wall(near)
    record(
        "near-duplicate >= 0.8",
        len(dups),
        cpu,
        wall,
        len(items),
        planted_near_copies=sum(1 for it in items if labels[it["index"]] == "near_copy"),
        removed_that_were_planted=sum(1 for it in dups if labels[it["index"]] == "near_copy"),
        # the planted German/French rows repeat two texts with a number: true near-duplicates of each other
        removed_repeated_other_language=sum(1 for it in dups if labels[it["index"]] == "other_language"),
        removed_unrelated=sum(1 for it in dups if labels[it["index"]] not in ("near_copy", "other_language")),
    )

    if args.judge_rows:
        import tempfile

        cache = Path(tempfile.mkdtemp()) / "judge.sqlite"
        spec = JudgeSpec(model=args.judge_model, cache=str(cache))
        convs = [it["messages"] for it in items[: args.judge_rows]]
        j = judge.Judge(spec)
        j._scorer()  # load outside the timing: the load is once per run, not per row
        scores, cpu, wall = cpu_wall(lambda: j.scores(convs))
        _, cpu2, wall2 = cpu_wall(lambda: j.scores(convs))
        record(
            f"judge {args.judge_model} < 3.0",
            sum(1 for s in scores if s < 3.0),
            cpu,
            wall,
            len(convs),
            scores_min_mean_max=[round(min(scores), 2), round(sum(scores) / len(scores), 2), round(max(scores), 2)],
            cached_cpu_s_per_1000=per_k(cpu2, len(convs)),
            torch_threads=__import__("torch").get_num_threads(),
        )
        j.close()

    results.update(cores=os.cpu_count(), load_average=round(os.getloadavg()[0], 1), date=time.strftime("%Y-%m-%d"))
    print(json.dumps(results, indent=1))
    (ROOT / "bench" / "results" / "data_filters.json").write_text(json.dumps(results, indent=1) + "\n")

    if args.show_dropped:
        kept_index = {it["index"] for it in items}
        dropped = [i for i in range(len(rows)) if i not in kept_index]
        rng = random.Random(args.seed)
        for i in sorted(rng.sample(dropped, min(args.show_dropped, len(dropped)))):
            print(f"\n--- row {i + 1} (built as {labels[i]}; dropped as {reasons[i]})")
            print(json.dumps(rows[i], ensure_ascii=False)[:600])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
