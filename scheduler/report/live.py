"""`sched report --serve`: the report as a web page that follows the queue.

One thread renders the same page `sched report` writes (gather, charts, HTML) whenever the queue
has changed, at most once per `every` seconds; the HTTP server (the standard library's
ThreadingHTTPServer, no new dependency) hands every request the last page rendered, so a browser
reloading costs no query. Whether anything changed is two cheap queries (`queries.change_token`:
counts by state, the newest id, start, end and metric; and the campaigns' deadlines), not a
render. A page with a deadline section is rendered again every `every` seconds whatever they say:
its forecast moves with the clock (now, the running jobs' ends) while the queue stands still.

The page says when it was rendered and reloads itself when a newer render exists: a few lines of
script ask `/version` every few seconds (a `<noscript>` meta refresh does the same without
scripts). Bound to 127.0.0.1 by default: watch it from a laptop through an SSH tunnel
(`ssh -L 8265:localhost:8265 gpu-host`); any other address is said to be reachable by others.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..jobqueue import JobQueue

log = logging.getLogger("sched.report")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8265
DEFAULT_EVERY_S = 30.0
MIN_EVERY_S = 0.1


@dataclass
class Rendered:
    page: bytes
    version: int  # 1, 2, ...: what /version answers; the page reloads when it grows
    at: datetime  # when it was rendered (UTC)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LiveReport:
    """The page, rendered again when the queue changes (at most every `every_s` seconds)."""

    def __init__(self, queue: JobQueue, *, tag: str | None = None, every_s: float = DEFAULT_EVERY_S):
        self.queue, self.tag = queue, tag
        self.every_s = max(MIN_EVERY_S, every_s)
        self.current: Rendered | None = None
        self.problem: str | None = None  # why the last render or check failed (the old page stays)
        self._token = None  # the change token the current page stands for
        self._pending = None  # the token read by the last check, not yet rendered
        self._clocked = False  # the current page shows a forecast, which the clock moves
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- rendering ---------------------------------------------------------------------------

    def changed(self) -> bool:
        """Two cheap queries: has the queue (or a deadline) changed since the last render? Always
        yes while the page shows a forecast: the clock moves it."""
        from ..deadline.campaign import campaigns_with_deadlines
        from ..store import queries as q

        with self.queue.read() as conn:
            # A deadline set or moved by a resubmitted file changes no job: its rows count too.
            token = (q.change_token(conn), tuple((c.name, c.deadline, c.policy, c.margin)
                                                 for c in campaigns_with_deadlines(conn)))
        if token == self._token and not self._clocked:
            return False
        self._pending = token
        return True

    def render(self) -> Rendered:
        """Gather, plot and lay out the page now (what `sched report` writes, plus the live header)."""
        from .charts import make_charts
        from .gather import gather
        from .page import render_html

        token = self._pending
        data = gather(self.queue, self.tag)
        at = datetime.now(timezone.utc).replace(tzinfo=None)
        version = (self.current.version + 1) if self.current else 1
        page = render_html(data, make_charts(data), live={"rendered_at": at.isoformat(timespec="seconds"),
                                                          "every_s": self.every_s, "version": version})
        rendered = Rendered(page.encode("utf-8"), version, at)
        with self._lock:
            self.current, self._token, self.problem = rendered, token, None
            self._clocked = bool(data["deadlines"])
        return rendered

    def refresh(self) -> bool:
        """Render again if the queue changed; True when it did. Errors are kept in `problem`
        (the database may be briefly unreachable): the last page stays served."""
        try:
            if self.current is not None and not self.changed():
                return False
            if self.current is None:
                self.changed()  # the token the first page stands for
            self.render()
            return True
        except Exception as exc:  # noqa: BLE001 - a live page outlives a failed render
            self.problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("report not rendered again: %s", self.problem)
            return False

    def start(self) -> None:
        """Render the first page now, then follow the queue in a thread."""
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="sched-report-render", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        next_at = time.monotonic() + self.every_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.refresh()
            next_at = time.monotonic() + self.every_s  # at most one render per `every_s`

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ---- what requests get -------------------------------------------------------------------

    def page(self) -> tuple[int, bytes]:
        with self._lock:
            current, problem = self.current, self.problem
        if current is not None:
            return HTTPStatus.OK, current.page
        body = ("<!doctype html><meta charset=utf-8><title>sched report</title>"
                f"<meta http-equiv=refresh content=5><p>No report yet: {html.escape(problem or 'rendering')}"
                " (this page tries again every 5 seconds)</p>")
        return HTTPStatus.SERVICE_UNAVAILABLE, body.encode("utf-8")

    def version(self) -> bytes:
        with self._lock:
            return str(self.current.version if self.current else 0).encode("ascii")


class _Handler(BaseHTTPRequestHandler):
    live: LiveReport  # set on the server's subclass
    server_version = "sched-report"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(head=True)

    def _answer(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html", "/report.html"):
            status, body, kind = *self.server.live.page(), "text/html; charset=utf-8"
        elif path == "/version":
            status, body, kind = HTTPStatus.OK, self.server.live.version(), "text/plain; charset=utf-8"
        else:
            status, body, kind = HTTPStatus.NOT_FOUND, b"not found: try /\n", "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the browser went away
                pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)


class ReportServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never keeps Ctrl-C from ending the process

    def __init__(self, live: LiveReport, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        self.live = live
        if ":" in host.strip("[]"):
            import socket

            self.address_family = socket.AF_INET6
        super().__init__((host.strip("[]"), port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"


def serve(queue: JobQueue, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, every_s: float = DEFAULT_EVERY_S,
          tag: str | None = None, say=print) -> None:
    """Serve the live report until Ctrl-C (or SIGTERM); `say` prints a line for the user."""
    import signal

    live = LiveReport(queue, tag=tag, every_s=every_s)
    server = ReportServer(live, host, port)  # bind first: a port in use is an error before any render
    if not is_loopback(host):
        say(f"warning: serving on {host}, reachable by anyone who can reach this host: the page shows job "
            f"names, params, paths and errors. The default ({DEFAULT_HOST}) with an SSH tunnel "
            f"(ssh -L {DEFAULT_PORT}:localhost:{server.server_address[1]} HOST) keeps it private.")
    live.start()
    say(f"serving the report at {server.url} (rendered again when the queue changes, at most every "
        f"{every_s:g}s); Ctrl-C stops")
    def on_term(_signum, _frame):
        raise KeyboardInterrupt  # SIGTERM stops it as Ctrl-C does

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        live.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    say("stopped")
