"""Rendering letters from the bureau-edited Jinja2 templates (autoescaped HTML)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from rxguard.letters.context import LetterContext, LetterRenderError

TEMPLATES = {"institution": "institution_letter.html.j2", "patient": "patient_letter.html.j2"}


@lru_cache(maxsize=1)
def default_templates_dir() -> Path:
    """`templates/letters`: `/opt/templates/letters` in Lambda (fonts layer), the repo's otherwise."""
    base = Path(__file__).resolve().parents[3]  # /opt in Lambda, the repo root here
    for candidate in (base / "templates" / "letters",):
        if candidate.is_dir():
            return candidate
    return base / "templates" / "letters"


@lru_cache(maxsize=4)
def environment(templates_dir: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=True,  # every value is escaped: names and explanations come from claim data
        undefined=jinja2.StrictUndefined,  # a misspelt variable is an error, not a blank
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(letter: LetterContext, templates_dir: Path | None = None) -> str:
    directory = templates_dir or default_templates_dir()
    name = TEMPLATES[letter.addressee_type]
    try:
        template = environment(directory).get_template(name)
        return template.render(**letter.template_vars())
    except jinja2.TemplateSyntaxError as exc:
        raise LetterRenderError(f"{exc.filename or directory / name}, line {exc.lineno}: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise LetterRenderError(f"{directory / name}: template not found") from exc
    except jinja2.UndefinedError as exc:
        raise LetterRenderError(f"{directory / name}: {exc.message}") from exc
