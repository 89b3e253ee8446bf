"""The tbkit TensorBoard plugin: thin ``*_route`` functions over pure ``*_impl`` methods.

Every route and its JSON shape is documented in ``http_api.md`` beside this file. Records are
read from ``context.logdir`` by :class:`tbkit_plugin.store.Store`, not through the data
provider (which samples a tensor plugin's data to 100 per tag).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from typing import Any

from tensorboard import errors
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tbkit.data import metadata
from tbkit_plugin import charts, groups, selection
from tbkit_plugin import store as store_mod

#: The only files the static route serves: request path → (file in static/, content type).
STATIC_FILES = {
    "/index.js": ("index.js", "text/javascript"),
    "/model.js": ("model.js", "text/javascript"),
    "/views.js": ("views.js", "text/javascript"),
    "/host.js": ("host.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
    "/charts.js": ("charts.js", "text/javascript"),
    "/vendor/uPlot.esm.js": ("vendor/uPlot.esm.js", "text/javascript"),
    "/vendor/uPlot.min.css": ("vendor/uPlot.min.css", "text/css"),
    "/vendor/LICENSE": ("vendor/LICENSE", "text/plain; charset=utf-8"),
}
_EXPORT_TYPES = {"jsonl": ("application/jsonl; charset=utf-8", "records.jsonl"),
                 "csv": ("text/csv; charset=utf-8", "records.csv")}  # fmt: skip


class TbkitPlugin(base_plugin.TBPlugin):
    """Shows every tbkit record of the logdir as a queryable table."""

    plugin_name = metadata.PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext, min_interval: float = 2.0,
                 background: bool = True):  # fmt: skip
        """Args:
        context: TensorBoard's context; only ``context.logdir`` is used.
        min_interval: seconds between two looks for appended data (0 in tests).
        background: read the event files in a thread that starts now, so that requests
            answer from what is read so far; False reads them inside each request (tests).
        """
        self.store = store_mod.Store(context.logdir or "", min_interval, background)
        if background and context.logdir:
            self.store.refresh()  # start reading before the first request

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="tbkit")

    def is_active(self) -> bool:
        """Whether the logdir holds tbkit records (the data provider usually answers first)."""
        self.store.refresh()
        with self.store.lock:
            return bool(self.store.runs())

    def get_plugin_apps(self) -> dict[str, Any]:
        apps = {"/runs": self.runs_route, "/revision": self.revision_route,
                "/schema": self.schema_route, "/records": self.records_route,
                "/record": self.record_route, "/export": self.export_route,
                "/chart": self.chart_route, "/groups": self.groups_route}  # fmt: skip
        apps.update(dict.fromkeys(STATIC_FILES, self.static_route))
        return apps

    # Impls: pure, called by the routes and by the tests. ``args`` is a MultiDict-like mapping.

    def runs_impl(self) -> dict[str, Any]:
        self.store.refresh()
        with self.store.lock:
            return {"runs": self.store.runs(), "superseded": self.store.superseded(),
                    "complete": self.store.complete}

    def revision_impl(self) -> dict[str, Any]:
        """The store's revision and whether it read everything: what the tab polls.

        Reads two attributes and returns: no row is queried, so a poll that finds nothing new
        costs next to nothing even over a million records.
        """
        self.store.refresh()
        with self.store.lock:
            return {"revision": self.store.generation, "complete": self.store.complete}

    def record_impl(self, args: Any) -> dict[str, Any]:
        """One record as written (nested objects nested), by the row id ``/records`` gave."""
        row = _int_arg(args, "id")
        with self.store.lock:
            try:
                record = self.store.record(row)
            except IndexError:
                raise errors.NotFoundError(f"no record with id {row}") from None
        return {"id": row, "record": selection.browser_safe(record)}

    def schema_impl(self, args: Any) -> dict[str, Any]:
        self.store.refresh()
        with self.store.lock:
            sel = selection.parse(args, self.store)
            return {"columns": self.store.schema(sel.runs, sel.tags)}

    def records_impl(self, args: Any) -> dict[str, Any]:
        self.store.refresh()
        with self.store.lock:
            complete = self.store.complete
            sel = selection.parse(args, self.store)
            rows = selection.matching(self.store, sel)
            columns = self.store.schema(sel.runs, sel.tags)
            ids = rows[sel.offset : sel.offset + sel.limit]
            page = self.store.flat_rows(ids)
        return {
            "total": len(rows),
            "offset": sel.offset,
            "limit": sel.limit,
            "complete": complete,
            "columns": columns,
            "rows": [selection.browser_safe(row) for row in page],
            "ids": ids.tolist(),
        }

    def chart_impl(self, args: Any) -> dict[str, Any]:
        """One numeric ``field`` of the selection against ``x`` (step or wall_time), one series
        per (run, tag), each down-sampled to at most ``points`` points (:mod:`charts`)."""
        self.store.refresh()
        with self.store.lock:
            complete = self.store.complete
            sel = dataclasses.replace(selection.parse(args, self.store), sort=None)
            field, x, points = charts.parse_options(args, self.store, sel)
            rows = selection.matching(self.store, sel)
            series = charts.series(self.store, rows, field, x, points)
        return {"field": field, "x": x, "points": points, "complete": complete,
                "series": [selection.browser_safe(s) for s in series]}  # fmt: skip

    def groups_impl(self, args: Any) -> dict[str, Any]:
        """The selection grouped ``by`` run, tag or a string field: count and, per numeric
        field, count, NaN/±Inf count, mean, min, max and last (:mod:`groups`)."""
        self.store.refresh()
        with self.store.lock:
            complete = self.store.complete
            sel = dataclasses.replace(selection.parse(args, self.store), sort=None)
            by = groups.parse_by(args, self.store, sel)
            rows = selection.matching(self.store, sel)
            answer = groups.summarise(self.store, sel, rows, by)
        answer["complete"] = complete
        answer["total"] = len(rows)
        return answer

    def export_impl(self, args: Any) -> tuple[Any, str, str]:
        """Returns ``(chunks of UTF-8 bytes, content type, file name)`` for the whole selection
        (what is read so far while :attr:`Store.complete` is false)."""
        fmt = args.get("format", "jsonl")
        if fmt not in _EXPORT_TYPES:
            raise selection.BadParameter("format", f"must be 'jsonl' or 'csv' (got {fmt!r})")
        self.store.refresh()
        with self.store.lock:
            sel = selection.parse(args, self.store)
            rows = selection.matching(self.store, sel)
            columns = [c["name"] for c in self.store.schema(sel.runs, sel.tags)]
        content_type, filename = _EXPORT_TYPES[fmt]
        chunks = selection.export_csv(self.store, rows, columns) if fmt == "csv" else \
            selection.export_jsonl(self.store, rows)  # fmt: skip
        return chunks, content_type, filename

    def static_impl(self, path: str) -> tuple[bytes, str]:
        """The bytes and content type of an allow-listed static file; NotFoundError otherwise.

        Only names in :data:`STATIC_FILES` are served, so no request text reaches the file
        system (``..``, ``%2e%2e`` and absolute paths are simply not in the list).
        """
        if path not in STATIC_FILES:
            raise errors.NotFoundError(f"no static file {path!r}")
        name, content_type = STATIC_FILES[path]
        data = importlib.resources.files("tbkit_plugin").joinpath("static", *name.split("/"))
        data = data.read_bytes()
        return data, content_type

    # Routes: parse the request, call the impl, respond.

    @wrappers.Request.application
    def runs_route(self, request: wrappers.Request) -> wrappers.Response:
        return http_util.Respond(request, self.runs_impl(), "application/json")

    @wrappers.Request.application
    def revision_route(self, request: wrappers.Request) -> wrappers.Response:
        return http_util.Respond(request, self.revision_impl(), "application/json")

    @wrappers.Request.application
    def record_route(self, request: wrappers.Request) -> wrappers.Response:
        return _answer(request, self.record_impl, request.args)

    @wrappers.Request.application
    def schema_route(self, request: wrappers.Request) -> wrappers.Response:
        return _answer(request, self.schema_impl, request.args)

    @wrappers.Request.application
    def records_route(self, request: wrappers.Request) -> wrappers.Response:
        return _answer(request, self.records_impl, request.args)

    @wrappers.Request.application
    def chart_route(self, request: wrappers.Request) -> wrappers.Response:
        return _answer(request, self.chart_impl, request.args)

    @wrappers.Request.application
    def groups_route(self, request: wrappers.Request) -> wrappers.Response:
        return _answer(request, self.groups_impl, request.args)

    @wrappers.Request.application
    def export_route(self, request: wrappers.Request) -> wrappers.Response:
        try:
            chunks, content_type, filename = self.export_impl(request.args)
        except errors.PublicError as e:
            return _error(request, e)
        return wrappers.Response(
            chunks,
            content_type=content_type,
            headers=[("Content-Disposition", f'attachment; filename="{filename}"'),
                     ("X-Content-Type-Options", "nosniff")],  # fmt: skip
        )

    @wrappers.Request.application
    def static_route(self, request: wrappers.Request) -> wrappers.Response:
        # TensorBoard routes only the exact paths get_plugin_apps lists here, so the request
        # path ends with one of them; the allow-list, not the path, names the file.
        route = next((p for p in STATIC_FILES if request.path.endswith(p)), request.path)
        try:
            data, content_type = self.static_impl(route)
        except errors.NotFoundError as e:
            return _error(request, e)
        return http_util.Respond(request, data, content_type)


def _int_arg(args: Any, name: str) -> int:
    """A required integer parameter ≥ 0; BadParameter naming it otherwise."""
    text = args.get(name)
    if text is None or not text.isdigit() or not text.isascii():
        raise selection.BadParameter(name, f"must be an integer ≥ 0 (got {text!r})")
    return int(text)


def _answer(request: wrappers.Request, impl: Any, args: Any) -> wrappers.Response:
    try:
        return http_util.Respond(request, impl(args), "application/json")
    except errors.PublicError as e:
        return _error(request, e)


def _error(request: wrappers.Request, e: errors.PublicError) -> wrappers.Response:
    """A JSON error body the frontend can place: message, parameter and (for where) position."""
    body = {"error": str(e), "parameter": getattr(e, "parameter", None),
            "message": getattr(e, "message", str(e)), "position": getattr(e, "position", None)}
    return http_util.Respond(request, body, "application/json", code=e.http_code)
