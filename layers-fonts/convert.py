"""Convert the Fandol OpenType (CFF) fonts to TrueType (glyf) outlines for reportlab.

reportlab embeds TrueType outlines only. The Fandol fonts of TeX Live (Debian package
`texlive-lang-chinese`, GPL v3 + font exception) are CFF-flavoured OpenType, so the
letters layer ships them converted: every glyph's cubic curves approximated by quadratic
ones (fontTools' cu2qu, max error 1 font unit of 1000), CFF replaced by glyf/loca,
metrics kept. Run once when updating the fonts (dev only: fontTools is a dev requirement):

    apt-get download texlive-lang-chinese && dpkg-deb -x texlive-lang-chinese_*.deb x
    python layers-fonts/convert.py x/usr/share/texlive/texmf-dist/fonts/opentype/public/fandol layers-fonts/fonts
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from fontTools.pens.cu2quPen import Cu2QuPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTFont, newTable

FACES = ("FandolFang-Regular", "FandolSong-Bold", "FandolHei-Regular")
MAX_ERROR = 1.0  # font units (units per em: 1000)


def to_truetype(font: TTFont) -> None:
    """Replace the CFF table of `font` by glyf/loca with quadratic outlines, in place."""
    if "CFF " not in font:
        raise ValueError("not a CFF-flavoured OpenType font")
    order = font.getGlyphOrder()
    glyph_set = font.getGlyphSet()
    glyf = newTable("glyf")
    glyf.glyphOrder = order
    glyf.glyphs = {}
    for name in order:
        pen = TTGlyphPen(glyph_set)
        # TrueType contours run clockwise, PostScript ones counter-clockwise
        glyph_set[name].draw(Cu2QuPen(pen, MAX_ERROR, reverse_direction=True))
        glyf.glyphs[name] = pen.glyph()
    font["glyf"] = glyf
    font["loca"] = newTable("loca")
    for table in ("CFF ", "VORG"):
        if table in font:
            del font[table]
    glyf.compile(font)  # computes each glyph's bounds
    hmtx = font["hmtx"]
    for name, glyph in glyf.glyphs.items():  # left side bearing = xMin in TrueType
        width, _ = hmtx.metrics[name]
        hmtx.metrics[name] = (width, getattr(glyph, "xMin", 0))
    maxp = newTable("maxp")
    maxp.tableVersion = 0x00010000
    for field in (
        "maxZones", "maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs",
        "maxStackElements", "maxSizeOfInstructions", "maxComponentElements",
    ):  # fmt: skip
        setattr(maxp, field, 1 if field == "maxZones" else 0)
    font["maxp"] = maxp
    post = font["post"]
    post.formatType = 3.0  # no glyph names: CID fonts have none worth keeping, and it is smaller
    font.sfntVersion = "\x00\x01\x00\x00"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the fandol directory of texlive-lang-chinese")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for face in FACES:
        font = TTFont(args.source / f"{face}.otf")
        to_truetype(font)
        target = args.out / f"{face}.ttf"
        font.save(target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        print(f"{target}: {target.stat().st_size} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
