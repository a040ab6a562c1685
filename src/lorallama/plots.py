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
