"""The HTTP surface of the search service (FastAPI): ``/search``, ``/health``, ``/release`` and the page at ``/``.

Errors are JSON ``{"error": "<one line naming the parameter and the rule>"}``: 400 for a parameter the
service refuses, 422 for one that is not even of the right type, 503 when the service is overloaded or
the model did not answer within ``serve.request_timeout_s``. Handlers are plain functions: FastAPI runs
them in its thread pool, and the service serialises model access itself (``searchr3.serve.batcher``).
"""
from __future__ import annotations

import html
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from searchr3.serve.loaded import MODES, LoadedRelease
from searchr3.serve.service import BadRequest, SearchService, Unavailable

PAGE = Path(__file__).with_name("page.html")
NUM_TD = '<td class="num">'


def create_app(service: SearchService, manage: bool = True) -> FastAPI:
    """The application over ``service``; with ``manage`` it closes the service when the app shuts down
    (and starts it first if nobody has)."""

    @asynccontextmanager
    async def lifespan(_app):
        if manage and service.batcher is None:
            service.start()
        try:
            yield
        finally:
            if manage:
                service.close()

    app = FastAPI(title="searchr3", summary="Search the promoted Search-R3 release", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {e.get('msg')}")
        return JSONResponse({"error": "; ".join(parts)}, status_code=422)

    @app.exception_handler(BadRequest)
    async def _bad(_request: Request, exc: BadRequest):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(Unavailable)
    async def _unavailable(_request: Request, exc: Unavailable):
        return JSONResponse({"error": f"unavailable: {exc}"}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/search")
    def search(q: str | None = Query(None, description="the query text"),
               k: int | None = Query(None, description="number of results (1 to serve.max_k)"),
               mode: str | None = Query(None, description=" | ".join(MODES)),
               reasoning: bool = Query(False, description="let the model analyse the query before embedding"),
               budget_ms: int | None = Query(None, description="time budget of the reasoning, milliseconds")) -> dict:
        return service.search(service.parse(q, k, mode, reasoning, budget_ms))

    @app.get("/health")
    def health():
        body = service.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/release")
    def release() -> dict:
        return service.current.info()

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return render_page(service.current, service.config)

    return app


def render_page(release: LoadedRelease, config) -> str:
    """The page with the release's facts and its evaluation table filled in (escaped)."""
    info = release.info()
    gate = info.get("gate") or {}
    note = ("From the production record: the evaluation that promoted this release (the same numbers as "
            "reports/eval.md of that run)."
            + (f" Promotion gate: {gate.get('reason')}." if gate.get("reason") else ""))
    options = "".join(f'<option value="{m}"{" selected" if m == release.default_mode else ""}>{m}</option>'
                      for m in MODES)
    values = {"RELEASE": info["release"], "SYSTEM": info.get("system") or "model served by hand",
              "DOCUMENTS": str(info["documents"]), "PROMOTED": info.get("promoted_at") or "-",
              "GIT": (info.get("git_rev") or "-")[:10], "MAX_CHARS": str(config.max_query_chars),
              "MAX_K": str(config.max_k), "DEFAULT_K": str(config.default_k), "EVAL_NOTE": note}
    text = PAGE.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value))
    text = text.replace("{{MODE_OPTIONS}}", options)
    return text.replace("{{EVAL_TABLE}}", eval_table_html(info.get("metrics") or {}, info.get("system")))


def eval_table_html(metrics: dict, served_system: str | None = None) -> str:
    """metrics/eval.json as an HTML table, cell for cell the markdown table of reports/eval.md."""
    from searchr3.eval.report import metrics_rows, table_cells

    rows = metrics_rows(metrics)
    if not rows:
        return "<p><i>This release carries no evaluation metrics.</i></p>"
    columns, cells, numeric = table_cells(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row, values in zip(rows, cells):
        served = ' class="served"' if served_system and row.get("system") == served_system else ""
        tds = "".join((NUM_TD if num else "<td>") + html.escape(v) + "</td>" for v, num in zip(values, numeric))
        body.append(f"<tr{served}>{tds}</tr>")
    return f'<table id="eval-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
