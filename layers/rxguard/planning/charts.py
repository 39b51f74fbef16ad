"""PNG charts of the watch and backtest reports (matplotlib, loaded only when asked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def watch_chart(report: dict[str, Any], path: Path, top: int = 12) -> Path:
    """Monthly spending of the top-ranked drugs, one line each."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for d in report["drugs"][:top]:
        months = [m["period"] for m in d["months"]]
        ax.plot(months, [m["spend"] for m in d["months"]], marker="o", label=f"#{d['rank']} {d['med_list_codg']}")
    ax.set_title(f"Drug watch: monthly spending of the top {top} drugs (yuan)")
    ax.set_xlabel("month")
    ax.set_ylabel("spending (yuan)")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def backtest_chart(report: dict[str, Any], path: Path) -> Path:
    """Added, removed and severity-changed findings per rule."""
    plt = _pyplot()
    rules = list(report["rules"])
    fig, ax = plt.subplots(figsize=(10, 5))
    x = range(len(rules))
    width = 0.27
    for offset, key in ((-width, "added"), (0.0, "removed"), (width, "severity_changed")):
        ax.bar([i + offset for i in x], [report["rules"][r][key] for r in rules], width, label=key)
    ax.set_xticks(list(x))
    ax.set_xticklabels(rules, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("findings")
    ax.set_title("Backtest: change per rule against today's findings")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
