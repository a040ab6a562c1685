"""Pictures people would rather look at than read: loss curves and token-length histograms (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LOSS_SERIES = (
    ("loss", "train"),
    ("eval_loss", "eval"),
    ("eval_domain_loss", "eval: domain"),
    ("eval_chat_loss", "eval: general chat"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(history: list[dict[str, Any]], png: Path, title: str) -> None:
    """Loss against step: training loss, and every eval loss the run logged."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for key, label in LOSS_SERIES:
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def loss_png(history: list[dict[str, Any]], title: str) -> bytes:
    """The loss curve as PNG bytes (for a repo whose run left loss.json but no picture)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "loss.png"
        plot_loss(history, png, title)
        return png.read_bytes()


def plot_tradeoff(
    records: list[dict[str, Any]], png: Path, title: str, chosen: int | None = None, limit: float | None = None
) -> None:
    """Domain loss against general chat loss, one point per evaluated checkpoint (labelled with its step), the base
    (step 0) as a star, the chosen checkpoint ringed, and the rule's general limit (× the base's) dashed. Without a
    domain loss, general loss against step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _tradeoff_series(ax, records, "checkpoints", chosen)
    _limit_line(ax, records, limit)
    has_domain = any("domain_loss" in r for r in records)
    ax.set_xlabel("domain loss (held out)" if has_domain else "step")
    ax.set_ylabel("general chat loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_sweep(
    series: dict[str, list[dict[str, Any]]], png: Path, title: str, best: str | None = None, limit: float | None = None
) -> None:
    """The trade-off plot of a sweep: each trial's checkpoints as one line, the base starred, the best trial bold
    with its steps labelled, the rule's general limit dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, records in series.items():
        top = name == best
        _tradeoff_series(ax, records, name + " (best)" * top, None, base_label=not ax.lines, bold=top)
    _limit_line(ax, next(iter(series.values()), []), limit)
    has_domain = any("domain_loss" in r for records in series.values() for r in records)
    ax.set_xlabel("domain loss (held out)" if has_domain else "step")
    ax.set_ylabel("general chat loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def tradeoff_png(quality: dict[str, Any], title: str) -> bytes:
    """The trade-off plot of a run's recorded quality (run.json) as PNG bytes."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "tradeoff.png"
        plot_tradeoff(quality["records"], png, title, quality.get("chosen_step"), _rule_limit(quality.get("rule")))
        return png.read_bytes()


def _rule_limit(rule: Any) -> float | None:
    """The general limit of a recorded ``eval.select`` (``{best_domain_within_general: 1.1}``), else None."""
    return float(rule["best_domain_within_general"]) if isinstance(rule, dict) and rule else None


def _limit_line(ax, records: list[dict[str, Any]], limit: float | None) -> None:
    base = next((r for r in records if r["step"] == 0 and r.get("general_loss")), None)
    if limit is not None and base is not None:
        y = base["general_loss"] * limit
        ax.axhline(y, color="grey", linestyle="--", linewidth=1, label=f"general limit ({limit:.2f}× base)")


def _tradeoff_series(
    ax, records: list[dict[str, Any]], label: str, chosen: int | None, base_label: bool = True, bold: bool = True
) -> None:
    has_domain = any("domain_loss" in r for r in records)
    xkey = "domain_loss" if has_domain else "step"
    points = [
        (r[xkey], r["general_loss"], r["step"]) for r in records if r.get(xkey) is not None and "general_loss" in r
    ]
    if not points:
        return
    xs, ys, steps = zip(*points, strict=True)
    line = ax.plot(xs, ys, marker="o", markersize=4, label=label, linewidth=2 if bold else 1, alpha=1 if bold else 0.6)[
        0
    ]
    for x, y, step in points:
        if bold:
            ax.annotate(str(step), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if step == 0:
            name = "base (step 0)" if base_label else None
            ax.plot([x], [y], marker="*", markersize=14, color="black", linestyle="none", label=name)
        if chosen is not None and step == chosen:
            ax.plot([x], [y], marker="o", markersize=13, fillstyle="none", color=line.get_color(), label="chosen")


def plot_histogram(values: list[int], png: Path, title: str, xlabel: str, bins: int = 20) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(values, bins=bins, color="#4c72b0")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    ax.set_title(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
