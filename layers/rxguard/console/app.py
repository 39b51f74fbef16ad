"""The inspector's console as one WSGI app: `console_app(services) -> app`.

Server-rendered Jinja2 pages over the API's own interfaces (docs/console.md). `rxguard
serve` mounts it for every path not under `/v1/`. The caller is identified as the API
identifies it (rxguard.api.access): `X-Rxguard-Caller` locally (or `environ
["rxguard.caller"]` set by an authenticating front), else the app's default caller.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import mimetypes
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape

from rxguard.api.access import Caller, identify, readable_institution, require_finding_access, require_reviewer
from rxguard.api.errors import ApiError, Conflict, Forbidden, InvalidField, NotFound
from rxguard.api.models import FindingView
from rxguard.api.service import Services
from rxguard.api.store import FindingQuery
from rxguard.console import readmodel as rm
from rxguard.console.i18n import LANGS, translate
from rxguard.console.sources import ConsoleSources
from rxguard.privacy import Pseudonymizer, mask, neutralise_csv_cell

HERE = Path(__file__).parent
STATIC = HERE / "static"
CALLER_HEADER = "HTTP_X_RXGUARD_CALLER"
LANG_COOKIE = "rxguard_lang"
QUEUE_PAGE = 100
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
audit_log = logging.getLogger("rxguard.console.audit")
StartResponse = Callable[..., Any]


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        self.location = location


@dataclass
class Request:
    environ: dict[str, Any]

    @property
    def method(self) -> str:
        return str(self.environ.get("REQUEST_METHOD", "GET")).upper()

    @property
    def path(self) -> str:
        return str(self.environ.get("PATH_INFO") or "/")

    @cached_property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(str(self.environ.get("QUERY_STRING") or ""), keep_blank_values=False)

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1].strip() or None if values else None

    @cached_property
    def form(self) -> dict[str, list[str]]:
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = self.environ["wsgi.input"].read(min(length, 1 << 20)) if length > 0 else b""
        return parse_qs(raw.decode("utf-8", errors="replace"))

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[-1].strip() or None if values else None

    @cached_property
    def cookies(self) -> dict[str, str]:
        out = {}
        for part in str(self.environ.get("HTTP_COOKIE") or "").split(";"):
            if "=" in part:
                k, v = part.split("=", 1)
                out[k.strip()] = v.strip()
        return out

    @property
    def htmx(self) -> bool:
        return self.environ.get("HTTP_HX_REQUEST") == "true"

    @property
    def lang(self) -> str:
        chosen = self.arg("lang") or self.cookies.get(LANG_COOKIE)
        return chosen if chosen in LANGS else "zh"

    @property
    def full_path(self) -> str:
        qs = self.environ.get("QUERY_STRING")
        return self.path + (f"?{qs}" if qs else "")


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidField(f"{name} is not a date (YYYY-MM-DD)", name) from exc


class Console:
    def __init__(
        self,
        services: Services,
        sources: ConsoleSources | None = None,
        *,
        default_caller: str | None = None,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        self.services = services
        self.sources = sources or ConsoleSources.for_repository(services.repo, services.kb)
        self.default_caller = default_caller
        self.pseudonyms = pseudonymizer or Pseudonymizer.from_env()
        self.env = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._openapi: bytes | None = None
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = [
            ("GET", re.compile(r"^/$"), self.queue),
            ("POST", re.compile(r"^/review$"), self.bulk_review),
            ("GET", re.compile(r"^/findings/(?P<fid>[A-Za-z0-9_-]{1,64})$"), self.finding),
            ("POST", re.compile(r"^/findings/(?P<fid>[A-Za-z0-9_-]{1,64})/review$"), self.review_one),
            ("GET", re.compile(r"^/patients/(?P<token>p-[0-9a-f]{20})$"), self.patient),
            ("GET", re.compile(r"^/institutions/(?P<code>[A-Za-z0-9]{1,40})$"), self.institution),
            ("GET", re.compile(r"^/rules$"), self.rules),
            ("GET", re.compile(r"^/rules/(?P<rid>[a-z][a-z0-9-]{0,63})/backtest$"), self.backtest),
            ("POST", re.compile(r"^/rules/(?P<rid>[a-z][a-z0-9-]{0,63})/backtest$"), self.backtest),
            ("GET", re.compile(r"^/batches$"), self.batches),
            ("GET", re.compile(r"^/batches/(?P<bid>[^/]{1,200})/rejected\.csv$"), self.rejected_csv),
            ("GET", re.compile(r"^/docs/?$"), self.docs),
            ("GET", re.compile(r"^/docs/openapi\.json$"), self.openapi),
            ("GET", re.compile(r"^/lang$"), self.set_lang),
            ("GET", re.compile(r"^/static/(?P<rel>[A-Za-z0-9_./-]{1,200})$"), self.static),
        ]

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except Redirect as r:
            response = Response(303, b"", headers=[("Location", r.location)])
        except ApiError as exc:
            response = self.error_page(request, exc.status, exc.message)
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body)))]
        headers.append(("Content-Security-Policy", CSP))
        headers.append(("X-Content-Type-Options", "nosniff"))
        headers.append(("Referrer-Policy", "same-origin"))
        if not any(k == "Cache-Control" for k, _ in response.headers):
            headers.append(("Cache-Control", "no-store"))
        headers.extend(response.headers)
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        return [response.body] if request.method != "HEAD" else [b""]

    def dispatch(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        allowed = False
        for verb, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            allowed = True
            if verb == method:
                if method == "POST":
                    self._same_origin(request)
                return handler(request, **match.groupdict())
        if allowed:
            return self.error_page(request, 405, "method not allowed")
        return self.error_page(request, 404, "no such page")

    def _same_origin(self, request: Request) -> None:
        """A form post must come from a page of this console (no cross-site review)."""
        origin = request.environ.get("HTTP_ORIGIN") or request.environ.get("HTTP_REFERER")
        if not origin:
            return
        host = request.environ.get("HTTP_HOST") or ""
        if urlsplit(origin).netloc != host:
            raise Forbidden("cross-site form post refused")

    # ------------------------------------------------------------------ helpers

    def caller(self, request: Request) -> Caller:
        principal = request.environ.get("rxguard.caller") or request.environ.get(CALLER_HEADER) or self.default_caller
        event = {"requestContext": {"identity": {"userArn": principal or "", "caller": principal or ""}}}
        return identify(event, self.services.settings)

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        lang = request.lang
        caller = context.pop("caller", None) or self.caller(request)

        def t(key: str, **values: object) -> str:
            return translate(key, lang, **values)

        def patient(psn_no: str | None) -> str:
            if not psn_no:
                return "—"
            return psn_no if caller.patient_ids else mask(psn_no, head=2, tail=2)

        def patient_url(psn_no: str) -> str:
            return f"/patients/{self.pseudonyms.psn(psn_no)}"

        def rule_name(rule_id: str) -> str:
            rule = self.services.kb.rules.get(rule_id)
            if rule is None:
                return rule_id
            return rule.name_en if lang == "en" else rule.name_zh

        def explanation(finding: FindingView) -> str:
            return finding.explanation_en if lang == "en" else finding.explanation_zh

        def pct(value: float | None) -> str:
            return "—" if value is None else f"{value * 100:.1f}%"

        def when(value: datetime | None) -> str:
            return "" if value is None else value.strftime("%Y-%m-%d %H:%M")

        def with_query(**changes: Any) -> str:
            params = {k: v[-1] for k, v in request.query.items()}
            for k, v in changes.items():
                if v is None:
                    params.pop(k, None)
                else:
                    params[k] = str(v)
            return request.path + ("?" + urlencode(params) if params else "")

        html = self.env.get_template(template).render(
            t=t,
            lang=lang,
            caller=caller,
            patient=patient,
            patient_url=patient_url,
            rule_name=rule_name,
            explanation=explanation,
            pct=pct,
            when=when,
            with_query=with_query,
            here=request.full_path,
            here_quoted=quote(request.full_path, safe=""),
            rules=sorted(self.services.kb.rules),
            **context,
        )
        return Response(status, html.encode("utf-8"))

    def error_page(self, request: Request, status: int, message: str) -> Response:
        try:
            caller = self.caller(request)
        except ApiError:
            caller = Caller("anonymous", frozenset(), regulator=False, enforced=True)
        return self.render(request, "error.html", status=status, message=message, code=status, caller=caller)

    def _finding(self, caller: Caller, fid: str) -> FindingView:
        found = self.services.store.get(fid)
        if found is None:
            raise NotFound("no such finding", "finding_id")
        require_finding_access(caller, found.fixmedins_code)
        return found

    def _findings(self, caller: Caller, institution: str | None = None, **query: Any) -> list[FindingView]:
        readable = readable_institution(caller, institution)
        return rm.all_findings(self.services, FindingQuery(institution=readable, **query))

    def _letters_citing(self, fid: str) -> list[Any]:
        if self.sources.letters is None:
            return []
        return [letter for letter in self.sources.letters.letters() if fid in letter.finding_ids]

    # ------------------------------------------------------------------ pages

    def queue(self, request: Request, notice: str | None = None, status: int = 200) -> Response:
        caller = self.caller(request)
        flt = rm.QueueFilter(
            region=request.arg("region"),
            institution=(request.arg("institution") or "").upper() or None,
            rule=request.arg("rule") if request.arg("rule") in self.services.kb.rules else None,
            severity=request.arg("severity") if request.arg("severity") in rm.SEVERITY_RANK else None,
            status=request.arg("status") if request.arg("status") in ("new", "confirmed", "dismissed") else None,
            date_from=_day(request.arg("from"), "from"),
            date_to=_day(request.arg("to"), "to"),
        )
        institution = readable_institution(caller, flt.institution)
        rows = rm.review_queue(self.services, flt, institution)
        try:
            page = max(1, int(request.arg("page") or 1))
        except ValueError:
            page = 1
        start = (page - 1) * QUEUE_PAGE
        done = request.arg("done")
        if notice is None and done and done.isdigit():
            notice = translate("review.done", request.lang, n=int(done))
        return self.render(
            request,
            "queue.html",
            status=status,
            caller=caller,
            flt=flt,
            rows=rows[start : start + QUEUE_PAGE],
            total=len(rows),
            first=start + 1,
            last=min(start + QUEUE_PAGE, len(rows)),
            page=page,
            pages=max(1, -(-len(rows) // QUEUE_PAGE)),
            fallback_order=rm._load_patient_risk() is None,
            notice=notice,
        )

    def _review(self, request: Request, caller: Caller, fids: list[str]) -> int:
        require_reviewer(caller)
        status = request.field("status")
        reason = request.field("reason")
        if status not in ("confirmed", "dismissed"):
            raise InvalidField("status must be confirmed or dismissed", "status")
        if not reason:
            raise InvalidField(translate("review.need_reason", request.lang), "reason")
        if len(reason) > 1000:
            raise InvalidField("reason is longer than 1000 characters", "reason")
        for fid in fids:  # access, existence and state of every finding before any write
            if self._finding(caller, fid).status == "superseded":
                raise Conflict("the finding is superseded: the rules no longer produce it", "status")
        for fid in fids:
            self.services.store.review(fid, status, reason, caller.principal, self.services.now())  # type: ignore[arg-type]
        return len(fids)

    def bulk_review(self, request: Request) -> Response:
        caller = self.caller(request)
        fids = [f for f in request.form.get("finding_id", []) if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", f)]
        back = request.field("back") or "/"
        if not back.startswith("/") or back.startswith("//"):
            back = "/"
        if not fids:
            raise InvalidField(translate("review.need_selection", request.lang), "finding_id")
        n = self._review(request, caller, fids)
        back = re.sub(r"([?&])done=\d+(&|$)", r"\1", back).rstrip("?&")  # the notice of an earlier review
        raise Redirect(f"{back}{'&' if '?' in back else '?'}done={n}")

    def review_one(self, request: Request, fid: str) -> Response:
        caller = self.caller(request)
        self._review(request, caller, [fid])
        if request.htmx and request.field("row"):  # the queue swaps the reviewed row in place
            finding = self._finding(caller, fid)
            risk = rm.risk_of(
                [f for f in self._findings(caller) if rm.subject_key(f) == rm.subject_key(finding)] or [finding]
            )
            return self.render(request, "_row.html", caller=caller, row=rm.QueueRow(finding, risk), fresh=True)
        raise Redirect(f"/findings/{fid}")

    def finding(self, request: Request, fid: str) -> Response:
        caller = self.caller(request)
        finding = self._finding(caller, fid)
        same_patient: list[FindingView] = []
        if finding.psn_no:
            same_patient = [f for f in self._findings(caller, psn_no=finding.psn_no) if f.finding_id != fid]
        same_institution: list[FindingView] = []
        if finding.fixmedins_code and caller.may_act_for(finding.fixmedins_code):
            same_institution = [
                f
                for f in self._findings(caller, institution=finding.fixmedins_code)
                if f.finding_id != fid and f.psn_no != finding.psn_no
            ][:50]
        params, current_version = rm.rule_parameters(self.services, finding)
        evidence = rm.evidence_lines(self.services, finding) if caller.reads_all else []
        return self.render(
            request,
            "finding.html",
            caller=caller,
            f=finding,
            evidence=evidence,
            params=params,
            current_version=current_version,
            same_patient=same_patient,
            same_institution=same_institution,
            letters=self._letters_citing(fid),
            ingredient=lambda line: rm.ingredient_of(line, self.services, request.lang),
        )

    def patient(self, request: Request, token: str) -> Response:
        caller = self.caller(request)
        if not caller.reads_all:
            raise Forbidden("only a regulator reads a patient's history")
        findings = self._findings(caller)
        psn_no = next((f.psn_no for f in findings if f.psn_no and self.pseudonyms.psn(f.psn_no) == token), None)
        if psn_no is None:
            raise NotFound(translate("patient.not_found", request.lang))
        audit_log.info(
            "patient history read",
            extra={"principal": caller.principal, "patient": token, "page": "timeline"},
        )
        if self.sources.audit is not None:
            self.sources.audit(caller.principal, "timeline", token)
        from rxguard.api.service import _audit  # the API's access log (GET /v1/audit): one record per read

        _audit(self.services, caller, "findings", [psn_no], "allowed", detail="console: patient timeline")
        mine = [f for f in findings if f.psn_no == psn_no]
        tl = rm.timeline(self.services, psn_no, mine, request.lang)
        return self.render(
            request,
            "patient.html",
            caller=caller,
            psn_no=psn_no,
            token=token,
            tl=tl,
            chart=json.dumps(rm.timeline_chart(tl), ensure_ascii=False),
            findings=sorted(mine, key=lambda f: f.occurred_at, reverse=True),
        )

    def institution(self, request: Request, code: str) -> Response:
        caller = self.caller(request)
        code = code.upper()
        if not caller.may_act_for(code):
            raise Forbidden(f"caller may not read institution {code}")
        findings = self._findings(caller, institution=code)
        activity = self.sources.activity.activity() if self.sources.activity is not None else None
        card = rm.report_card(self.services, code, activity, findings)
        letters = []
        if self.sources.letters is not None:
            letters = [x for x in self.sources.letters.letters() if x.institution_id == code]
        chart: dict[str, Any] = {"monthly": card.monthly, "code": code}
        if card.funnel is not None:
            chart["funnel"] = {
                "points": [[p.lines, p.share, p.code] for p in card.funnel.points],
                "mean": card.funnel.mean,
                "limits": card.funnel.limits,
            }
        return self.render(
            request,
            "institution.html",
            caller=caller,
            card=card,
            letters=letters,
            position=card.funnel.position(code) if card.funnel else None,
            own=next((p for p in card.funnel.points if p.code == code), None) if card.funnel else None,
            chart=json.dumps(chart, ensure_ascii=False),
        )

    def rules(self, request: Request) -> Response:
        caller = self.caller(request)
        findings = self._findings(caller) if caller.reads_all else []
        rows, months = rm.rule_rows(self.services, findings)
        chart = {
            "months": months,
            "series": [{"name": r.rule.id, "data": [r.per_month[m] for m in months]} for r in rows if r.per_month],
        }
        return self.render(
            request, "rules.html", caller=caller, rows=rows, months=months, chart=json.dumps(chart, ensure_ascii=False)
        )

    def backtest(self, request: Request, rid: str) -> Response:
        """Try new parameters of one rule on the stored history (POST /v1/backtests's logic)."""
        from rxguard.api.models import BacktestRequest
        from rxguard.api.service import backtest

        caller = self.caller(request)
        require_reviewer(caller)
        rule = self.services.kb.rules.get(rid)
        if rule is None:
            raise NotFound("no such rule", "rule")
        params_text = json.dumps(rule.parameters, ensure_ascii=False, indent=1)
        since = None
        report = None
        if request.method == "POST":
            params_text = request.field("parameters") or "{}"
            since = request.field("since")
            try:
                params = json.loads(params_text)
            except json.JSONDecodeError as exc:
                raise InvalidField(f"parameters is not JSON: {exc.msg} (line {exc.lineno})", "parameters") from exc
            if not isinstance(params, dict):
                raise InvalidField("parameters must be a JSON object", "parameters")
            body = BacktestRequest.model_validate({"rules": [{"id": rid, "parameters": params}], "since": since})
            report = backtest(self.services, caller, body).model_dump()
        return self.render(
            request,
            "backtest.html",
            caller=caller,
            rule=rule,
            params_text=params_text,
            since=since or "",
            report=report,
            available=getattr(self.services, "planner", None) is not None,
        )

    def batches(self, request: Request) -> Response:
        caller = self.caller(request)
        if not caller.reads_all:
            raise Forbidden("only a regulator reads batch records")
        source = self.sources.batches
        return self.render(
            request, "batches.html", caller=caller, batches=source.batches() if source else None, available=bool(source)
        )

    def rejected_csv(self, request: Request, bid: str) -> Response:
        caller = self.caller(request)
        if not caller.reads_all:
            raise Forbidden("only a regulator reads batch records")
        rejections = self.sources.batches.rejections(bid) if self.sources.batches is not None else None
        if rejections is None:
            raise NotFound("no such batch")
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["file", "line", "field", "reason", "message", "line_id"])
        for r in rejections:
            writer.writerow(
                [neutralise_csv_cell(v) for v in (r.file, r.line or "", r.field or "", r.reason, r.message, r.line_id)]
            )
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", bid)
        return Response(
            200,
            ("\ufeff" + out.getvalue()).encode("utf-8"),  # BOM: spreadsheet programs read it as UTF-8
            "text/csv; charset=utf-8",
            [("Content-Disposition", f'attachment; filename="rejected-{safe}.csv"')],
        )

    def docs(self, request: Request) -> Response:
        return self.render(request, "docs.html")

    def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            from rxguard.api.resolver import openapi_json

            self._openapi = openapi_json().encode("utf-8")
        return Response(200, self._openapi, "application/json", [("Cache-Control", "max-age=300")])

    def set_lang(self, request: Request) -> Response:
        lang = request.arg("to")
        lang = lang if lang in LANGS else "zh"
        back = request.arg("next") or "/"
        if not back.startswith("/") or back.startswith("//"):
            back = "/"
        cookie = f"{LANG_COOKIE}={lang}; Path=/; Max-Age=31536000; SameSite=Lax"
        return Response(303, b"", headers=[("Location", back), ("Set-Cookie", cookie)])

    def static(self, request: Request, rel: str) -> Response:
        path = (STATIC / rel).resolve()
        if ".." in rel.split("/") or not path.is_relative_to(STATIC.resolve()) or not path.is_file():
            raise NotFound("no such file")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "text/javascript"):
            kind += "; charset=utf-8"
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
        headers = [("Cache-Control", "public, max-age=3600"), ("Last-Modified", modified)]
        return Response(200, path.read_bytes(), kind, headers)


def console_app(
    services: Services,
    sources: ConsoleSources | None = None,
    *,
    default_caller: str | None = None,
    pseudonymizer: Pseudonymizer | None = None,
) -> Console:
    """The console as a WSGI app over the API's services (and optional batch, letter and
    activity sources)."""
    return Console(services, sources, default_caller=default_caller, pseudonymizer=pseudonymizer)
