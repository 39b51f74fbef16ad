"""The chart of `make bench`: AWS cost per million lines and offline throughput against
batch size (one PNG). matplotlib is a dev dependency (requirements-dev.txt)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def render(
    points: Sequence[dict[str, Any]],
    out: Path,
    *,
    floor: float,
    target: float,
    title: str,
    codes_per_line: float | None = None,
    floor_15: float | None = None,
) -> Path:
    """`points`: dicts with `lines`, `usd_per_million`, `lines_per_s` (and optionally the
    components). Writes a PNG with cost (left axis, with the floor and the target) and
    throughput (right axis) against batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(points, key=lambda p: p["lines"])
    xs = [p["lines"] for p in points]
    fig, left = plt.subplots(figsize=(8, 4.5), dpi=110)
    left.plot(xs, [p["usd_per_million"] for p in points], "o-", color="tab:blue", label="estimated AWS cost")
    at = f" at {codes_per_line:.2f} codes/line" if codes_per_line is not None else ""
    left.axhline(floor, color="tab:green", linestyle="--", label=f"floor ${floor:.2f}/M (DynamoDB writes{at})")
    if floor_15 is not None:
        left.axhline(floor_15, color="tab:gray", linestyle="-.", label=f"floor at 1.5 codes/line ${floor_15:.2f}/M")
    left.axhline(target, color="tab:orange", linestyle=":", label=f"target {target / floor:.2f}x floor")
    left.set_xscale("log")
    left.set_xlabel("lines in the batch (log scale)")
    left.set_ylabel("USD per million lines")
    top = max([p["usd_per_million"] for p in points] + [floor, target, floor_15 or 0.0])
    left.set_ylim(0, top * 1.2)
    right = left.twinx()
    right.plot(xs, [p["lines_per_s"] for p in points], "s-", color="tab:red", label="offline throughput")
    right.set_ylabel("lines per second (offline, moto, one process)")
    right.set_ylim(0, max(p["lines_per_s"] or 0 for p in points) * 1.2 or 1)
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, labels, loc="upper center", fontsize=8, bbox_to_anchor=(0.5, -0.16), ncol=2)
    left.set_title(title, fontsize=10)
    for x, p in zip(xs, points, strict=True):
        left.annotate(f"${p['usd_per_million']:.2f}", (x, p["usd_per_million"]), textcoords="offset points",
                      xytext=(0, 6), ha="center", fontsize=7, color="tab:blue")  # fmt: skip
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
