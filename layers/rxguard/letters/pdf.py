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
from collections.abc import Callable
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
    BaseDocTemplate,
    Flowable,
    Frame,
    HRFlowable,
    KeepTogether,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from rxguard.letters.context import LetterRenderError
from rxguard.letters.linebreak import break_markup

FONT_NAME = "RxguardCJK"
FONT_FILE = "wqy-microhei.ttc"  # the fallback (Apache-2.0): characters the Fandol faces lack
FACE_FILES = {  # GB/T 9704 faces -> the free fonts of the fonts layer (layers-fonts/README.md)
    "fang": "FandolFang-Regular.ttf",  # 仿宋: body
    "song": "FandolSong-Bold.ttf",  # 宋体 bold for 小标宋: letterhead, title
    "hei": "FandolHei-Regular.ttf",  # 黑体: headings
}
_VOID = {"br", "meta", "link", "col", "img", "hr", "input"}
_SKIP = {"head", "style", "script", "title", "template"}
_BLOCK = {
    "h1", "h2", "h3", "h4", "p", "div", "section", "header", "footer", "article", "main",
    "ul", "ol", "li", "table", "hr", "body", "html", "blockquote",
}  # fmt: skip
_INLINE = {"b": "b", "strong": "b", "i": "i", "em": "i", "u": "u", "sup": "super", "sub": "sub"}
SEAL_RED = colors.HexColor("#c8102e")


# ---------------------------------------------------------------- fonts


def _fonts_dirs() -> list[Path]:
    base = Path(__file__).resolve().parents[3]  # /opt in Lambda (/opt/python/rxguard/...), the repo root here
    return [base / "fonts", base / "layers-fonts" / "fonts"]


def default_font_path(file: str = FONT_FILE) -> Path:
    """A font of the fonts layer: `/opt/fonts/` in Lambda, `layers-fonts/fonts/` in the repo."""
    for directory in _fonts_dirs():
        if (directory / file).is_file():
            return directory / file
    return _fonts_dirs()[-1] / file


_REGISTERED: dict[str, str] = {}


def register_font(path: Path | None = None) -> str:
    """Register a TrueType font once per process; returns the reportlab font name."""
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


@dataclass(frozen=True)
class Faces:
    """The reportlab names of the letter's faces, and the fallback for missing characters."""

    fang: str
    song: str
    hei: str
    fallback: str

    def covers(self, font: str, char: str) -> bool:
        face = pdfmetrics.getFont(font).face
        return ord(char) in face.charToGlyph


def register_faces(body_font: Path | None = None) -> Faces:
    """仿宋/宋体/黑体 from the fonts layer; `body_font` (RXGUARD_LETTER_FONT) replaces all
    three when given (one face for everything, as before)."""
    fallback = register_font(default_font_path(FONT_FILE))
    if body_font is not None:
        one = register_font(body_font)
        return Faces(one, one, one, fallback)
    names = {face: register_font(default_font_path(file)) for face, file in FACE_FILES.items()}
    return Faces(names["fang"], names["song"], names["hei"], fallback)


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


PT = 1.0
BODY_SIZE = 16.0  # 3号
LINE_PITCH = 225 * mm / 22  # 22 lines in the 225 mm text block
CHAR = BODY_SIZE  # one character of the grid


def _styles(faces: Faces) -> dict[str, ParagraphStyle]:
    base = ParagraphStyle(
        "body", fontName=faces.fang, fontSize=BODY_SIZE, leading=LINE_PITCH, wordWrap="CJK", alignment=TA_LEFT
    )

    def s(name: str, **kw: Any) -> ParagraphStyle:
        return ParagraphStyle(name, parent=base, **kw)

    return {
        "p": s("p", firstLineIndent=2 * CHAR),
        "div": s("div"),
        "li": s("li", firstLineIndent=2 * CHAR),
        "h1": s("h1", fontName=faces.song, fontSize=22, leading=LINE_PITCH * 1.25, alignment=TA_CENTER),
        "h2": s("h2", fontName=faces.hei, firstLineIndent=2 * CHAR),
        "h3": s("h3", firstLineIndent=2 * CHAR),
        "h4": s("h4", firstLineIndent=2 * CHAR),
        "issuer": s(
            "issuer", fontName=faces.song, fontSize=30, leading=40, alignment=TA_CENTER, textColor=SEAL_RED
        ),
        "title": s(
            "title", fontName=faces.song, fontSize=22, leading=LINE_PITCH * 1.25, alignment=TA_CENTER,
            spaceBefore=LINE_PITCH, spaceAfter=LINE_PITCH,
        ),
        "subtitle": s("subtitle", alignment=TA_CENTER),
        "number": s("number", alignment=TA_CENTER, spaceBefore=LINE_PITCH),
        "addressee": s("addressee"),
        "address": s("address", fontSize=12, leading=18),
        "annex-note": s("annex-note", leftIndent=5 * CHAR, firstLineIndent=-3 * CHAR, spaceBefore=LINE_PITCH),
        "signature": s("signature", alignment=TA_RIGHT, rightIndent=4 * CHAR, spaceBefore=2 * LINE_PITCH),
        "date": s("date", alignment=TA_RIGHT, rightIndent=4 * CHAR),
        "annex-label": s("annex-label", fontName=faces.hei),
        "annex-title": s("annex-title", fontName=faces.song, fontSize=18, leading=30, alignment=TA_CENTER),
        "note": s("note", fontSize=12, leading=20, textColor=colors.HexColor("#444444")),
        "small": s("small", fontSize=10.5, leading=15),
        "center": s("center", alignment=TA_CENTER),
        "right": s("right", alignment=TA_RIGHT),
        "left": s("left", alignment=TA_LEFT),
        "justify": s("justify", alignment=TA_JUSTIFY),
        "th": s("th", fontName=faces.hei, fontSize=10.5, leading=14, alignment=TA_CENTER),
        "td": s("td", fontSize=10.5, leading=14, alignment=TA_LEFT),
    }  # fmt: skip


# ---------------------------------------------------------------- flowables


class Seal(Flowable):
    """A seal placeholder (GB/T 9704: centred on and pressed over the issuer's name and
    the date, which sit in its lower half): a red ring with a star and the issuer's name,
    drawn upward over the signature lines above it; it takes no room itself."""

    def __init__(self, text: str, font: str) -> None:
        super().__init__()
        self.text = text
        self.font = font

    def wrap(self, avail_width: float, avail_height: float) -> tuple[float, float]:
        self.avail_width = avail_width
        return (avail_width, 0)

    def draw(self) -> None:
        c = self.canv
        radius = 21 * mm  # a 42 mm bureau seal
        x = self.avail_width - 4 * CHAR - len(self.text) * CHAR / 2  # centred on the signature (4 characters in)
        y = 1.5 * LINE_PITCH  # the name and the date below the centre
        c.saveState()
        c.setStrokeColor(SEAL_RED)
        c.setFillColor(SEAL_RED)
        c.setLineWidth(1.6)
        c.circle(x, y, radius, stroke=1, fill=0)
        c.setFont(self.font, 18)
        c.drawCentredString(x, y + 2 * mm, "★")
        c.setFont(self.font, 9)
        c.drawCentredString(x, y + 13 * mm, self.text[:14])
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
    def __init__(self, faces: Faces, width: float) -> None:
        self.faces = faces
        self.font = faces.fang
        self.width = width
        self.styles = _styles(faces)
        self._widths: dict[tuple[str, str, float], float] = {}

    def _font_for(self, font: str, char: str) -> str:
        return font if char.isspace() or self.faces.covers(font, char) else self.faces.fallback

    def _width(self, font: str, size: float) -> Callable[[str], float]:
        def width(text: str) -> float:
            total = 0.0
            for ch in text:
                key = (ch, font, size)
                if key not in self._widths:
                    self._widths[key] = pdfmetrics.stringWidth(ch, self._font_for(font, ch), size)
                total += self._widths[key]
            return total

        return width

    def para(self, markup: str, style: ParagraphStyle, width: float | None = None, **kw: Any) -> Paragraph:
        """A paragraph with the fallback face for missing characters and our line breaks."""
        font, size = style.fontName, style.fontSize
        fallback = self.faces.fallback

        def swap(match: re.Match[str]) -> str:
            text = match.group()
            if text.startswith("<") or text.startswith("&"):
                return text
            return text if self.faces.covers(font, text) else f'<font name="{fallback}">{text}</font>'

        if fallback != font:
            markup = re.sub(r"<[^>]*>|&#?\w+;|[^\x00-\x7f]", swap, markup)
        avail = (width if width is not None else self.width) - style.leftIndent - style.rightIndent - 0.5
        markup = break_markup(markup, self._width(font, size), avail, avail - style.firstLineIndent)
        return Paragraph(markup, style, **kw)

    def blocks(self, node: Node, inherited: list[str]) -> list[Flowable]:
        out: list[Flowable] = []
        run: list[Node | str] = []

        def flush() -> None:
            markup = "".join(_inline(c) for c in run).strip()
            run.clear()
            if markup:
                out.append(self.para(markup, _style_for(node, inherited, self.styles)))

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
            return [Seal(text or "（印章）", self.faces.song)]
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
                out.append(self.para(f"{bullet} {markup}" if node.tag == "ol" else markup, self.styles["li"]))
            return out
        if node.tag in ("p", "h1", "h2", "h3", "h4", "li") and not any(_is_block(c) for c in node.children):
            markup = "".join(_inline(c) for c in node.children).strip()
            return [self.para(markup, _style_for(node, inherited, self.styles))] if markup else []
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
        first = next(iter(rows), None)
        first_cells = [c for c in (first.children if first else []) if isinstance(c, Node) and c.tag in ("td", "th")]
        declared = [_percent(c.attrs.get("width"), self.width) for c in first_cells]
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
                known = declared[col] if col < len(declared) else None
                cell_width = (known or self.width / 6) - 2 * 4
                line.append(self.para("".join(_inline(c) for c in cell.children).strip(), style, cell_width))
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
                    ("LEFTPADDING", (0, 0), (-1, -1), 4),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 4),
                    *spans,
                ]
                if header_rows
                else [
                    ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("LEFTPADDING", (0, 0), (-1, -1), 4),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 4),
                    *spans,
                ]
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
    """Lay out a letter's HTML as an A4 PDF on the GB/T 9704 page (text block 156 x 225 mm,
    top margin 37 mm, inner margin 28 mm), the fonts embedded (subsets)."""
    faces = register_faces(font_path)
    root, title = parse_html(html)
    buffer = io.BytesIO()
    doc = BaseDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=28 * mm,
        rightMargin=A4[0] - 28 * mm - 156 * mm,
        topMargin=37 * mm,
        bottomMargin=A4[1] - 37 * mm - 225 * mm,
        title=title,
        author=author,
        subject=subject,
        creator="rxguard",
        invariant=1,  # same input, same bytes: no creation timestamp or random id
    )
    layout = _Layout(faces, doc.width)
    body = _find(root, "body") or root
    story = layout.blocks(body, [])
    if not story:
        story = [Spacer(1, 1)]

    def page_number(canvas: Any, document: Any) -> None:
        """ "— 1 —" in 4号 half-width figures under the text block: odd pages right, even
        pages left, one character in (GB/T 9704 7.5)."""
        canvas.saveState()
        canvas.setFont(faces.song, 14)
        text = f"— {document.page} —"
        y = doc.bottomMargin - 7 * mm - 10
        if document.page % 2:
            canvas.drawRightString(doc.leftMargin + doc.width - 14, y, text)
        else:
            canvas.drawString(doc.leftMargin + 14, y, text)
        canvas.restoreState()

    # no frame padding: the text block is exactly 156 mm wide, as the grid needs
    frame = Frame(doc.leftMargin, doc.bottomMargin, doc.width, doc.height, 0, 0, 0, 0, id="text")
    doc.addPageTemplates([PageTemplate(id="page", frames=[frame], onPage=page_number)])
    doc.build(story)
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
