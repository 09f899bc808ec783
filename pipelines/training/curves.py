"""Loss curves as PNG: a person should see training work without opening TensorBoard."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training nodes
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss_curve(steps: list[int], losses: list[float], path: str | Path, *, title: str) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    axes.plot(steps, losses, linewidth=1.2, label="loss (mean over ranks)")
    if len(losses) >= 10:
        window = max(2, len(losses) // 10)
        smooth = [
            sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
            for i in range(len(losses))
        ]
        axes.plot(steps, smooth, linewidth=2.0, label=f"moving mean ({window} logs)")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path
