"""Chinese line breaking for the letters (docs/letters.md).

reportlab's CJK wrapping breaks between any two characters: a line may start with ，or
）and a drug code may be cut in two. Here the break opportunities are ours:

- every CJK character is a unit; a run of Latin letters, digits and the signs that join
  them (`XA10BA02A001`, `1,234.50`, `E11.9`, `2026`) is one unit, never split unless it
  is wider than a whole line;
- a character that may not start a line (，。、；：？！）》」』】〕… and the like) sticks to
  the unit before it; one that may not end a line (（《「『【〔) to the unit after it.

`break_text` fills lines greedily with those units; `break_markup` puts `<br/>` into
reportlab paragraph markup at the same places (tags and entities are not text).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape

CANNOT_START = frozenset("，。、；：？！）》」』】〕〉〗…‥·%‰．,.;:?!)]}’”°℃—～")
CANNOT_END = frozenset("（《「『【〔〈〖‘“([{")
_JOINED = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._\-/+#:%]|,(?=\d))*")

Width = Callable[[str], float]


def units(text: str) -> list[str]:
    """The unbreakable pieces of `text`, in order; "".join(units(t)) == t."""
    raw: list[str] = []
    i = 0
    while i < len(text):
        match = _JOINED.match(text, i)
        if match:
            raw.append(match.group())
            i = match.end()
        else:
            raw.append(text[i])
            i += 1
    out: list[str] = []
    pending_open = ""
    for piece in raw:
        if pending_open:
            piece, pending_open = pending_open + piece, ""
        if piece and piece[0] in CANNOT_START and out:
            out[-1] += piece
            continue
        if len(piece) == 1 and piece in CANNOT_END:
            pending_open = piece
            continue
        out.append(piece)
    if pending_open:
        out.append(pending_open)
    return out


def break_text(text: str, width: Width, max_width: float, first_width: float | None = None) -> list[str]:
    """Lines of `text` no wider than `max_width` (the first no wider than `first_width`)."""
    lines: list[str] = []
    current = ""
    limit = first_width if first_width is not None else max_width
    for unit in units(text):
        if not current and unit.isspace():
            continue
        if width(current + unit) <= limit:
            current += unit
            continue
        if current:
            lines.append(current)
            current, limit = "", max_width
            if unit.isspace():
                continue
            if width(unit) <= limit:
                current = unit
                continue
        for ch in unit:  # a unit wider than a line: cut it where it must be cut
            if current and width(current + ch) > limit:
                lines.append(current)
                current, limit = "", max_width
            current += ch
    if current:
        lines.append(current)
    return lines


_TOKEN = re.compile(r"<[^>]*>|&#?\w+;|.", re.DOTALL)


def break_markup(markup: str, width: Width, max_width: float, first_width: float | None = None) -> str:
    """`markup` with `<br/>` where `break_text` breaks its text (existing `<br/>` kept)."""
    segments = re.split(r"(<br\s*/?>)", markup)
    out: list[str] = []
    for segment in segments:
        if re.fullmatch(r"<br\s*/?>", segment):
            out.append("<br/>")
            first_width = None  # after a forced break, lines are full width
            continue
        tokens = _TOKEN.findall(segment)
        chars = [(unescape(t) if t.startswith("&") else t) for t in tokens]
        text = "".join(c for c, t in zip(chars, tokens, strict=True) if not t.startswith("<"))
        lines = break_text(text, width, max_width, first_width)
        first_width = None
        breaks: set[int] = set()
        position = 0
        for line in lines[:-1]:
            position += len(line)
            breaks.add(position)
        # lines drop leading spaces: recount against the text to place breaks exactly
        if sum(len(line) for line in lines) != len(text):
            breaks = _positions(text, lines)
        index = 0
        for token, char in zip(tokens, chars, strict=True):
            if token.startswith("<"):
                out.append(token)
                continue
            if index in breaks:
                out.append("<br/>")
            out.append(token)
            index += len(char)
    return "".join(out)


def _positions(text: str, lines: list[str]) -> set[int]:
    positions: set[int] = set()
    cursor = 0
    for n, line in enumerate(lines):
        start = text.find(line, cursor)
        if n:
            positions.add(start)
        cursor = start + len(line)
    return positions
