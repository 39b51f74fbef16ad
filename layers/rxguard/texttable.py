"""Plain-text tables for the command line, with CJK characters counted as two columns."""

from __future__ import annotations

from collections.abc import Sequence


def width(text: str) -> int:
    """Display columns of `text`: CJK characters take two."""
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> list[str]:
    """The header, a rule of dashes and the rows, each column padded to its widest cell."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(width(r[i]) for r in cells) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c + " " * (w - width(c)) for c, w in zip(row, widths, strict=True)).rstrip()

    return [fmt(cells[0]), "  ".join("-" * w for w in widths), *[fmt(r) for r in cells[1:]]]
