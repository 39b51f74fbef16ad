"""HTML letter -> PDF with an embedded CJK font (reportlab).

The bureau edits one template per letter (`templates/letters/*.html.j2`); its HTML is
both the HTML letter and the source of the PDF. This module reads the subset of HTML a
letter needs and lays it out with reportlab's Platypus:

- blocks: `h1`-`h4`, `p`, `div`/`section`/`header`/`footer`, `ul`/`ol`/`li`, `table`
  (`thead`/`tbody`/`tr`/`th`/`td`, `colspan`, `width="NN%"` on the first row's cells), `hr`;
- inline: `b`/`strong`, `i`/`em`, `u`, `br`, `span`, `sup`, `sub`;
- classes select paragraph styles (`issuer`, `title`, `subtitle`, `number`, `addressee`,
  `signature`, `date`, `note`, `small`, `center`, `right`), `seal` draws the seal
  placeholder, `page-break` starts a new page; `<title>` becomes the PDF title and the
  page footer. CSS is for browsers only; unknown tags are read as their content.

reportlab embeds the TrueType font as a subset (only the glyphs used), so a letter is
some tens of kilobytes although the font file is 5 MB.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_JUSTIFY, TA_LEFT, TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Flowable,
    HRFlowable,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

FONT_NAME = "RxguardCJK"
FONT_FILE = "wqy-microhei.ttc"
_VOID = {"br", "meta", "link", "col", "img", "hr", "input"}
_SKIP = {"head", "style", "script", "title", "template"}
_BLOCK = {
    "h1", "h2", "h3", "h4", "p", "div", "section", "header", "footer", "article", "main",
    "ul", "ol", "li", "table", "hr", "body", "html", "blockquote",
}  # fmt: skip
_INLINE = {"b": "b", "strong": "b", "i": "i", "em": "i", "u": "u", "sup": "super", "sub": "sub"}
SEAL_RED = colors.HexColor("#c8102e")


class LetterRenderError(ValueError):
    """A letter cannot be rendered (font missing, template error); names the file."""


# ---------------------------------------------------------------- fonts


def default_font_path() -> Path:
    """The CJK font of the fonts layer: `/opt/fonts/` in Lambda, `layers-fonts/fonts/` in the repo."""
    here = Path(__file__).resolve()
    base = here.parents[3]  # /opt in Lambda (/opt/python/rxguard/letters/pdf.py), the repo root here
    for candidate in (base / "fonts" / FONT_FILE, base / "layers-fonts" / "fonts" / FONT_FILE):
        if candidate.is_file():
            return candidate
    return base / "layers-fonts" / "fonts" / FONT_FILE


_REGISTERED: dict[str, str] = {}


def register_font(path: Path | None = None) -> str:
    """Register the CJK font once per process; returns the reportlab font name."""
    path = path or default_font_path()
    key = str(path)
    if key in _REGISTERED:
        return _REGISTERED[key]
    if not path.is_file():
        raise LetterRenderError(f"{path}: CJK font not found (fonts layer missing? set RXGUARD_LETTER_FONT)")
    name = f"{FONT_NAME}{len(_REGISTERED)}"
    try:
        font = TTFont(name, str(path), subfontIndex=0) if path.suffix.lower() == ".ttc" else TTFont(name, str(path))
    except Exception as exc:  # reportlab raises TTFError and plain errors for bad files
        raise LetterRenderError(f"{path}: not a usable TrueType font: {exc}") from exc
    pdfmetrics.registerFont(font)
    pdfmetrics.registerFontFamily(name, normal=name, bold=name, italic=name, boldItalic=name)
    _REGISTERED[key] = name
    return name


# ---------------------------------------------------------------- a tiny DOM


@dataclass
class Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("root")
        self.stack = [self.root]
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag == "title":
            self._in_title = True
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        self.stack[-1].children.append(data)


def parse_html(html: str) -> tuple[Node, str]:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root, " ".join(builder.title.split())


# ---------------------------------------------------------------- styles


def _styles(font: str) -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("body", fontName=font, fontSize=11, leading=18, wordWrap="CJK", alignment=TA_JUSTIFY)

    def s(name: str, **kw: Any) -> ParagraphStyle:
        return ParagraphStyle(name, parent=base, **kw)

    return {
        "p": s("p", firstLineIndent=22, spaceAfter=4),
        "div": s("div"),
        "li": s("li", leftIndent=14, bulletIndent=4, spaceAfter=2),
        "h1": s("h1", fontSize=22, leading=30, alignment=TA_CENTER, spaceBefore=4, spaceAfter=6),
        "h2": s("h2", fontSize=13, leading=20, spaceBefore=8, spaceAfter=4),
        "h3": s("h3", fontSize=12, leading=18, spaceBefore=6, spaceAfter=2),
        "h4": s("h4", fontSize=11, leading=16, spaceBefore=4),
        "issuer": s("issuer", fontSize=20, leading=28, alignment=TA_CENTER, textColor=SEAL_RED, spaceAfter=2),
        "title": s("title", fontSize=22, leading=30, alignment=TA_CENTER, spaceBefore=6, spaceAfter=2),
        "subtitle": s("subtitle", fontSize=12, leading=18, alignment=TA_CENTER, spaceAfter=2),
        "number": s("number", fontSize=11, alignment=TA_CENTER, spaceAfter=6),
        "addressee": s("addressee", fontSize=12, leading=20, spaceBefore=6, spaceAfter=4),
        "signature": s("signature", fontSize=12, leading=20, alignment=TA_RIGHT, rightIndent=12, spaceBefore=22),
        "date": s("date", fontSize=12, leading=20, alignment=TA_RIGHT, rightIndent=12),
        "note": s("note", fontSize=9, leading=14, textColor=colors.HexColor("#444444")),
        "small": s("small", fontSize=9, leading=13),
        "center": s("center", alignment=TA_CENTER),
        "right": s("right", alignment=TA_RIGHT),
        "left": s("left", alignment=TA_LEFT),
        "th": s("th", fontSize=9.5, leading=13, alignment=TA_CENTER),
        "td": s("td", fontSize=9, leading=12.5, alignment=TA_LEFT),
    }


# ---------------------------------------------------------------- flowables


class Seal(Flowable):
    """A seal placeholder: a red ring with a star and text, drawn over the signature
    lines above it (as a seal covers the issuer's name and the date)."""

    def __init__(self, text: str, font: str) -> None:
        super().__init__()
        self.text = text
        self.font = font

    def wrap(self, avail_width: float, avail_height: float) -> tuple[float, float]:
        self.avail_width = avail_width
        return (avail_width, 9 * mm)

    def draw(self) -> None:
        c = self.canv
        radius = 17 * mm
        x, y = self.avail_width - 24 * mm, 16 * mm  # centre between the name and the date lines
        c.saveState()
        c.setStrokeColor(SEAL_RED)
        c.setFillColor(SEAL_RED)
        c.setLineWidth(1.6)
        c.circle(x, y, radius, stroke=1, fill=0)
        c.setFont(self.font, 16)
        c.drawCentredString(x, y + 8 * mm, "★")
        c.setFont(self.font, 8)
        c.drawCentredString(x, y - 12 * mm, self.text[:12])
        c.restoreState()


def _inline(node: Node | str) -> str:
    """reportlab paragraph markup of a node's inline content."""
    if isinstance(node, str):
        return escape(re.sub(r"\s+", " ", node))
    if node.tag in _SKIP:
        return ""
    if node.tag == "br":
        return "<br/>"
    inner = "".join(_inline(c) for c in node.children)
    tag = _INLINE.get(node.tag)
    if tag:
        return f"<{tag}>{inner}</{tag}>"
    if node.tag == "span" and "high" in node.classes:
        return f'<font color="#c8102e">{inner}</font>'
    return inner


def _style_for(node: Node, inherited: list[str], styles: dict[str, ParagraphStyle]) -> ParagraphStyle:
    for cls in [*node.classes, *inherited]:
        if cls in styles:
            return styles[cls]
    return styles.get(node.tag, styles["div"])


def _is_block(node: Node | str) -> bool:
    return isinstance(node, Node) and (node.tag in _BLOCK or "seal" in node.classes or "page-break" in node.classes)


class _Layout:
    def __init__(self, font: str, width: float) -> None:
        self.font = font
        self.width = width
        self.styles = _styles(font)

    def blocks(self, node: Node, inherited: list[str]) -> list[Flowable]:
        out: list[Flowable] = []
        run: list[Node | str] = []

        def flush() -> None:
            markup = "".join(_inline(c) for c in run).strip()
            run.clear()
            if markup:
                out.append(Paragraph(markup, _style_for(node, inherited, self.styles)))

        classes = [*node.classes, *inherited]
        for child in node.children:
            if not _is_block(child):
                run.append(child)
                continue
            flush()
            assert isinstance(child, Node)
            out.extend(self.block(child, classes))
        flush()
        return out

    def block(self, node: Node, inherited: list[str]) -> list[Flowable]:
        if node.tag in _SKIP:
            return []
        if "page-break" in node.classes:
            return [PageBreak()]
        if "seal" in node.classes:
            text = "".join(c for c in node.children if isinstance(c, str)).strip()
            return [Seal(text or "（印章）", self.font)]
        if node.tag == "hr":
            return [HRFlowable(width="100%", thickness=1.2, color=SEAL_RED, spaceBefore=2, spaceAfter=6)]
        if node.tag == "table":
            return [self.table(node)]
        if node.tag in ("ul", "ol"):
            items = [c for c in node.children if isinstance(c, Node) and c.tag == "li"]
            out: list[Flowable] = []
            for n, item in enumerate(items, start=1):
                bullet = f"{n}." if node.tag == "ol" else "•"
                markup = "".join(_inline(c) for c in item.children).strip()
                out.append(Paragraph(markup, self.styles["li"], bulletText=bullet))
            return out
        if node.tag in ("p", "h1", "h2", "h3", "h4", "li") and not any(_is_block(c) for c in node.children):
            markup = "".join(_inline(c) for c in node.children).strip()
            return [Paragraph(markup, _style_for(node, inherited, self.styles))] if markup else []
        flowables = self.blocks(node, inherited)
        if "keep" in node.classes or "signature" in node.classes:
            return [KeepTogether(flowables)]
        return flowables

    def table(self, node: Node) -> Table:
        rows: list[Node] = []
        header_rows = 0

        def collect(n: Node, in_head: bool) -> None:
            nonlocal header_rows
            for c in n.children:
                if isinstance(c, Node):
                    if c.tag == "tr":
                        rows.append(c)
                        header_rows += 1 if in_head else 0
                    elif c.tag in ("thead", "tbody", "tfoot"):
                        collect(c, c.tag == "thead")

        collect(node, False)
        data: list[list[Any]] = []
        spans: list[tuple[str, tuple[int, int], tuple[int, int]]] = []
        widths: list[float | None] = []
        for r, tr in enumerate(rows):
            cells = [c for c in tr.children if isinstance(c, Node) and c.tag in ("td", "th")]
            line: list[Any] = []
            for cell in cells:
                col = len(line)
                style = self.styles["th" if cell.tag == "th" else "td"]
                if cell.classes:
                    style = ParagraphStyle(f"td-{col}", parent=style, alignment=_align(cell.classes, style.alignment))
                line.append(Paragraph("".join(_inline(c) for c in cell.children).strip(), style))
                span = int(cell.attrs.get("colspan", "1") or 1)
                if r == 0:
                    widths.extend([_percent(cell.attrs.get("width"), self.width) if span == 1 else None] * span)
                if span > 1:
                    spans.append(("SPAN", (col, r), (col + span - 1, r)))
                    line.extend([""] * (span - 1))
            data.append(line)
        ncols = max((len(r) for r in data), default=1)
        for line in data:
            line.extend([""] * (ncols - len(line)))
        widths = (widths + [None] * ncols)[:ncols]
        fixed = sum(w for w in widths if w)
        free = [i for i, w in enumerate(widths) if not w]
        for i in free:
            widths[i] = max(self.width - fixed, 0) / len(free)
        table = Table(data, colWidths=widths, repeatRows=header_rows, hAlign="CENTER", splitInRow=1)
        table.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("BACKGROUND", (0, 0), (-1, header_rows - 1), colors.HexColor("#eeeeee")),
                    ("TOPPADDING", (0, 0), (-1, -1), 3),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
                    *spans,
                ]
                if header_rows
                else [("GRID", (0, 0), (-1, -1), 0.5, colors.black), ("VALIGN", (0, 0), (-1, -1), "TOP"), *spans]
            )
        )
        return table


def _align(classes: list[str], default: int) -> int:
    return TA_CENTER if "center" in classes else TA_RIGHT if "right" in classes else default


def _percent(value: str | None, width: float) -> float | None:
    if value and value.strip().endswith("%"):
        try:
            return width * float(value.strip()[:-1]) / 100
        except ValueError:
            return None
    return None


def html_to_pdf(html: str, *, font_path: Path | None = None, author: str = "", subject: str = "") -> bytes:
    """Lay out a letter's HTML as an A4 PDF with the CJK font embedded (subset)."""
    font = register_font(font_path)
    root, title = parse_html(html)
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=26 * mm,
        rightMargin=26 * mm,
        topMargin=25 * mm,
        bottomMargin=22 * mm,
        title=title,
        author=author,
        subject=subject,
        creator="rxguard",
        invariant=1,  # same input, same bytes: no creation timestamp or random id
    )
    layout = _Layout(font, doc.width)
    body = _find(root, "body") or root
    story = layout.blocks(body, [])
    if not story:
        story = [Spacer(1, 1)]

    def footer(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont(font, 8)
        canvas.setFillColor(colors.HexColor("#555555"))
        canvas.drawCentredString(A4[0] / 2, 12 * mm, f"{title}    第 {document.page} 页")
        canvas.restoreState()

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


def _find(node: Node, tag: str) -> Node | None:
    for child in node.children:
        if isinstance(child, Node):
            if child.tag == tag:
                return child
            found = _find(child, tag)
            if found is not None:
                return found
    return None
