"""The search-tree viewer: a page that draws any method's `Trace` (steps, scores coloured, visits and values, the
chosen path), shows a node's full text and scores on a click, lists the problems of an eval run, and redraws a
search while it runs.

`TraceHub` holds what the page shows: saved traces (an eval run folder, whose rows hold each problem's trace, followed
as `ponder eval` writes it; a trace JSON from `ponder solve --save-trace`) and live ones (every trace a search makes
in this process while the hub observes, `ponder.trace.observing`). `viewer_router` serves the page and its JSON API
under `/viewer`: `ponder serve` mounts it, and `ponder view RUN_OR_TRACE` serves it alone. The page is plain
HTML/CSS/JS drawing SVG (`static/`), with nothing fetched from elsewhere, so it works offline; it polls the API and
redraws the shown tree when its version changes.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError, MissingExtra
from ponder.trace import Trace, observing

try:
    import uvicorn
    from fastapi import APIRouter, FastAPI, HTTPException
    from fastapi.responses import FileResponse, RedirectResponse
except ImportError as err:
    raise MissingExtra("the tree viewer", "fastapi and uvicorn", "serve") from err

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"viewer.js": "text/javascript", "viewer.css": "text/css"}  # what the page loads besides itself
PREFIX = "/viewer"


@dataclass
class Entry:
    """One tree the viewer lists: a saved trace (`saved`, its page form) or a live one (`trace`, read when asked)."""

    key: str
    label: str
    saved: dict[str, Any] | None = None
    trace: Trace | None = None
    running: bool = False
    version: int = 0


class RunFile:
    """An eval run's results.jsonl, read as it grows: `new_rows` returns the rows written since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def new_rows(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError as err:
            logger.warning("cannot read %s: %s", self.path, err)
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        rows = []
        for line in data[:end].splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s: skipping a line that is not JSON", self.path)
        return rows


class TraceHub:
    """The traces the viewer shows, each under a key: saved ones added by `add`/`load`, live ones observed (while
    inside `observe`) as searches in this process make them. Thread-safe: searches may run in other threads. Of the
    live traces, the `keep` newest finished ones are kept."""

    def __init__(self, keep: int = 200) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._live: dict[int, Entry] = {}  # id(trace) -> its entry (the entry holds the trace, so the id stays its)
        self._runs: list[RunFile] = []
        self._reading = threading.Lock()  # one reader of the run files at a time
        self._made = 0

    # -- saved traces --------------------------------------------------------------------------------------------

    def add(self, trace: dict[str, Any], label: str) -> str:
        """Add a saved trace in page form (`page_form`); returns its key."""
        with self._lock:
            return self._new(Entry("", label, saved=trace)).key

    def load(self, source: Path) -> int:
        """Add what `source` holds: an eval run folder (or its results.jsonl), followed as it grows, or one trace
        JSON (`Trace.to_dict`, as `ponder solve --save-trace` writes it). Returns how many traces it added now; a
        `ConfigError` when it is neither."""
        results = source / "results.jsonl" if source.is_dir() else source
        if results.name.endswith(".jsonl") and results.is_file():
            self._runs.append(RunFile(results))
            return self._read_runs()
        if source.is_file():
            try:
                data = json.loads(source.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ConfigError(f"cannot read {source} as a trace JSON: {err}") from err
            self.add(page_form(data, source.name), f"{data.get('method', '?')} · {data.get('problem_id', '?')}")
            return 1
        raise ConfigError(f"{source} is neither an eval run folder (with results.jsonl) nor a trace JSON file "
                          "(ponder solve --save-trace FILE writes one)")

    def _read_runs(self) -> int:
        added = 0
        with self._reading:
            rows = [(run, row) for run in self._runs for row in run.new_rows()]
        for run, row in rows:
            if not (isinstance(row, dict) and isinstance(row.get("trace"), dict)):  # an error row has no tree
                continue
            try:
                page = page_form(row, str(run.path))
            except ConfigError as err:  # one bad row does not hide the others
                logger.warning("skipping a row: %s", err)
                continue
            self.add(page, f"{row.get('method')}@{row.get('budget')} · {row.get('problem_id')}")
            added += 1
        return added

    # -- live traces ---------------------------------------------------------------------------------------------

    @contextmanager
    def observe(self) -> Iterator[None]:
        """While inside, every trace a search in this process makes is listed, and redrawn as it grows."""
        with observing(self._changed):
            yield

    def _changed(self, trace: Trace, final: bool) -> None:
        with self._lock:
            entry = self._live.get(id(trace))
            if entry is None:
                entry = self._live[id(trace)] = self._new(Entry("", f"{trace.method} · {trace.problem_id}",
                                                                trace=trace, running=True))
            entry.version += 1
            if final:
                entry.running = False
                self._forget_old()

    def _forget_old(self) -> None:
        finished = [e for e in self._live.values() if not e.running]
        for entry in finished[: max(0, len(finished) - self.keep)]:
            del self._entries[entry.key]
            del self._live[id(entry.trace)]

    # -- reading -------------------------------------------------------------------------------------------------

    def _new(self, entry: Entry) -> Entry:
        entry.key = str(self._made)
        self._made += 1
        self._entries[entry.key] = entry
        return entry

    def listing(self) -> list[dict[str, Any]]:
        """Every trace's key, label, method, problem, grade, node count, whether its search is running, version."""
        self._read_runs()
        with self._lock:
            entries = list(self._entries.values())
        out = []
        for e in entries:
            head = e.saved if e.saved is not None else _live_head(e.trace)
            out.append({"key": e.key, "label": e.label, "method": head["method"], "problem_id": head["problem_id"],
                        "correct": head["correct"], "nodes": head["size"], "running": e.running,
                        "version": e.version})
        return out

    def get(self, key: str) -> dict[str, Any] | None:
        """The trace under `key` in page form (a live one as it is now), or None."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.saved is not None:
            return {**entry.saved, "key": key, "label": entry.label, "running": False, "version": entry.version}
        assert entry.trace is not None
        return {**live_form(entry.trace), "key": key, "label": entry.label, "running": entry.running,
                "version": entry.version}


def _finite(x: Any) -> Any:
    """A number JSON can carry (NaN and infinities become None)."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _node(n: dict[str, Any]) -> dict[str, Any]:
    return {"id": n["id"], "parent": n["parent"], "text": n.get("text", ""), "score": _finite(n.get("score")),
            "prior": _finite(n.get("prior")), "visits": n.get("visits", 0), "value": _finite(n.get("value", 0.0)),
            "terminal": bool(n.get("terminal")), "extra": n.get("extra") or {}}


def chosen_node(nodes: list[dict[str, Any]], extra: dict[str, Any], solution: str | None) -> int | None:
    """The node the answer was chosen at: `extra["chosen"]` (written by the search), else, for traces saved before
    it was, the finished node whose steps, one a line, are the solution."""
    if isinstance(extra.get("chosen"), int) and 0 <= extra["chosen"] < len(nodes):
        return int(extra["chosen"])
    if not solution:
        return None
    by_id = {n["id"]: n for n in nodes}
    for n in nodes:
        if n.get("terminal"):
            steps, cur = [], n
            while cur is not None and cur.get("parent") is not None:
                steps.append(cur.get("text", ""))
                cur = by_id.get(cur["parent"])
            if "\n".join(reversed(steps)).strip() == solution.strip():
                return int(n["id"])
    return None


def page_form(data: dict[str, Any], source: str) -> dict[str, Any]:
    """A saved trace as the page reads it, from a trace JSON (`Trace.to_dict`) or an eval row (whose `trace` holds
    the nodes and extra); a `ConfigError` naming `source` when it has no tree."""
    tree = data.get("trace", data)
    nodes = tree.get("nodes") if isinstance(tree, dict) else None
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and "id" in n and "parent" in n for n in nodes):
        raise ConfigError(f"{source}: not a trace (a JSON object whose nodes each have an id and a parent)")
    extra = tree.get("extra") or {}
    page = [_node(n) for n in nodes]
    return {"problem_id": str(data.get("problem_id", "")), "method": str(data.get("method", "")),
            "budget": data.get("budget"), "answer": data.get("answer"), "solution": data.get("solution"),
            "correct": data.get("correct"), "usage": data.get("usage") or {}, "extra": extra, "nodes": page,
            "chosen": chosen_node(page, extra, data.get("solution")), "size": len(page)}


def _live_head(trace: Trace | None) -> dict[str, Any]:
    assert trace is not None
    return {"method": trace.method, "problem_id": trace.problem_id, "correct": trace.correct,
            "size": len(trace.nodes)}


def live_form(trace: Trace) -> dict[str, Any]:
    """A live trace as the page reads it. The search may be adding nodes in another thread: the node list and
    each node's extra are copied first (a list or dict copy is atomic in CPython)."""
    nodes = [_node({**_fields(n), "extra": dict(n.extra)}) for n in list(trace.nodes)]
    extra = dict(trace.extra)
    return {"problem_id": trace.problem_id, "method": trace.method, "budget": None, "answer": trace.answer,
            "solution": trace.solution, "correct": trace.correct, "usage": asdict(trace.usage), "extra": extra,
            "nodes": nodes, "chosen": chosen_node(nodes, extra, trace.solution), "size": len(nodes)}


def _fields(obj: Any) -> dict[str, Any]:
    """A dataclass's fields, not copied (`dataclasses.asdict` deep-copies, which a dict changing meanwhile breaks)."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def viewer_router(hub: TraceHub) -> APIRouter:
    """The viewer under `/viewer`: the page (`/viewer/`), its files, and the API it polls (`/viewer/api/traces`,
    `/viewer/api/traces/{key}`). While the app runs, the hub observes the traces searches in the process make."""

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        with hub.observe():
            yield

    router = APIRouter(prefix=PREFIX, lifespan=lifespan, tags=["viewer"])

    @router.get("", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    @router.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "viewer.html", media_type="text/html")

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in PAGE_FILES:
            raise HTTPException(404, f"no viewer file {name!r}")
        return FileResponse(STATIC / name, media_type=PAGE_FILES[name])

    @router.get("/api/traces")
    def traces() -> dict[str, Any]:
        """Every trace the viewer can show, without its nodes."""
        return {"traces": hub.listing()}

    @router.get("/api/traces/{key}")
    def trace(key: str) -> dict[str, Any]:
        """One trace with its nodes, as it is now."""
        found = hub.get(key)
        if found is None:
            raise HTTPException(404, f"no trace {key!r}; /viewer/api/traces lists them")
        return found

    return router


def viewer_app(hub: TraceHub) -> FastAPI:
    """An app serving the viewer alone (`ponder view`)."""
    app = FastAPI(title="Ponder tree viewer")
    app.include_router(viewer_router(hub))
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one); a `ConfigError` when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog until the server accepts: the printed address works at once
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}") from err
    return sock


def url(sock: socket.socket) -> str:
    """The viewer's address on a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{PREFIX}/"


def server(app: FastAPI) -> uvicorn.Server:
    """A quiet uvicorn server for `app`; run it with `server.run(sockets=[bind(...)])`."""
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
