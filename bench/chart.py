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


COST_GROUPS = {  # chart stack -> components of bench.cost.monthly_batch_cost
    "DynamoDB writes (tables + indexes)": ("dynamodb_writes_tables", "dynamodb_writes_indexes"),
    "DynamoDB storage, 400 days": ("dynamodb_storage_400d",),
    "PITR, 400 days": ("dynamodb_pitr_400d",),
    "DynamoDB reads": ("dynamodb_reads",),
    "Lambda, Step Functions, S3, KMS, logs": (
        "lambda_compute",
        "lambda_requests",
        "step_functions",
        "s3_requests",
        "sns",
        "kms",
        "cloudwatch_logs",
    ),
}


def render_storage_cost(runs: Sequence[dict[str, Any]], out: Path, *, target: float, depth_lines: int) -> Path:
    """Cost per million lines (400 days of storage and PITR included), stacked by component:
    left by batch size (a month after one month of history), right by history depth (months
    of the same patients screened before a `depth_lines`-line month). `runs`: figures of
    bench.workflow_requests.measure_monthly with their `cost` (bench.cost.monthly_batch_cost)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_size = sorted((r for r in runs if r["history_months"] == 1), key=lambda r: r["lines"])
    by_depth = sorted((r for r in runs if r.get("series_depth")), key=lambda r: r["history_months"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), dpi=110, sharey=True)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:gray"]
    depth_label = f"months of history ({depth_lines:,}-line month)"
    panels = (
        (axes[0], by_size, [f"{r['lines']:,}" for r in by_size], "lines in the month (after 1 month of history)"),
        (axes[1], by_depth, [str(r["history_months"]) for r in by_depth], depth_label),
    )
    top = target
    for ax, points, labels, xlabel in panels:
        xs = list(range(len(points)))
        bottom = [0.0] * len(points)
        for (group, parts), colour in zip(COST_GROUPS.items(), colours, strict=True):
            values = [sum(r["cost"]["components_usd_per_million_lines"].get(p, 0.0) for p in parts) for r in points]
            ax.bar(xs, values, bottom=bottom, color=colour, label=group, width=0.6)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        for x, total in zip(xs, bottom, strict=True):
            ax.annotate(f"${total:.2f}", (x, total), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
        top = max([top, *bottom])
        ax.axhline(target, color="tab:red", linestyle="--", label=f"target ${target:.2f}")
        ax.set_xticks(xs, labels)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("USD per million lines")
    axes[0].set_ylim(0, top * 1.2)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle("rxguard on AWS: cost per million lines, 400 days of storage and PITR included", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
