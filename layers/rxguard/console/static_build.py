"""The console's static site for AWS: its files and the API documentation as a folder to
sync to the ConsoleBucket of template.yaml (CloudFront serves it; docs/console.md).

    python -m rxguard.console.static_build OUT   # then: aws s3 sync OUT s3://<ConsoleBucketName>/

OUT/static/... (htmx, ECharts, Swagger UI, the console's CSS and JS, the licences),
OUT/docs/index.html (Swagger UI) and OUT/docs/openapi.json (the API's own document).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from rxguard.console.app import HERE, STATIC
from rxguard.console.i18n import translate


def build(out: Path, lang: str = "zh") -> list[Path]:
    """Write the static site into `out`; returns the files written."""
    from rxguard.api.resolver import openapi_json

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for source in sorted(STATIC.rglob("*")):
        if source.is_file():
            target = out / "static" / source.relative_to(STATIC)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            written.append(target)
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]))
    html = env.get_template("docs.html").render(
        t=lambda key, **values: translate(key, lang, **values), lang=lang, static_site=True
    )
    docs = out / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "index.html").write_text(html, encoding="utf-8")
    (docs / "openapi.json").write_text(openapi_json(), encoding="utf-8")
    return [*written, docs / "index.html", docs / "openapi.json"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rxguard.console.static_build", description=__doc__)
    parser.add_argument("out", type=Path, help="folder to write (synced to the ConsoleBucket)")
    parser.add_argument("--lang", choices=["zh", "en"], default="zh")
    args = parser.parse_args(list(argv) if argv is not None else None)
    files = build(args.out, args.lang)
    print(f"console static site: {len(files)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
