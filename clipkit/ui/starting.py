"""A page that answers on the app's address at once, while the app itself starts.

Before the web app can answer, Python must import gradio and torch and gradio must build and serve the page:
several seconds on a small machine in which a browser would show "connection refused". This server, standard
library only so that it runs before either import, answers from the first tenth of a second with a page that
shows what is loading and turns into the app when the app answers.

The hand-over: once the app is built, ``close()`` frees the address and gradio binds it. The page polls
``STATUS_PATH``; while the start page answers, its replies carry the ``MARKER`` header, refused connections during
the hand-over count as "still starting", and the first reply without the marker (the app's 404) reloads the page.
A failed start is shown on the page (``fail``) as well as in the terminal.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

MARKER = "X-Clipkit-Starting"
STATUS_PATH = "/clipkit-starting.json"
FAILED_GRACE_S = 1.5  # a failed start stays on show this long, so a page polling every 0.25 s reads it

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>clipkit: starting</title>
<style>
 body { font-family: system-ui, sans-serif; background: #0b0f19; color: #e5e7eb; display: grid;
        place-items: center; min-height: 100vh; margin: 0; }
 main { max-width: 32rem; padding: 2rem; }
 h1 { font-size: 1.4rem; margin: 0 0 1rem; }
 li { margin: 0.3rem 0; list-style: none; }
 li.done::before { content: "\\2713  "; color: #34d399; }
 li.now::before { content: "\\25CB  "; color: #f59e0b; }
 #error { color: #f87171; white-space: pre-wrap; }
 small { color: #9ca3af; }
</style></head>
<body><main>
<h1>clipkit is starting&hellip;</h1>
<ul id="stages"><li class="now">starting</li></ul>
<p id="error"></p>
<small id="time"></small>
<noscript><p>This page turns into the app when it is ready; reload it by hand in a few seconds.</p></noscript>
</main>
<script>
const STATUS = "%(status)s", MARKER = "%(marker)s";
let refused = 0;
function show(s) {
  const items = s.done.map(t => `<li class="done">${t}</li>`);
  if (s.stage) items.push(`<li class="now">${s.stage}</li>`);
  document.getElementById("stages").innerHTML = items.join("");
  document.getElementById("time").textContent = `${s.seconds.toFixed(1)} s`;
  if (s.error) document.getElementById("error").textContent =
      `The app could not start: ${s.error}\\nFix it and run clipkit again.`;
}
async function poll() {
  try {
    const r = await fetch(STATUS, {cache: "no-store"});
    if (!r.headers.has(MARKER)) { location.reload(); return; }
    const s = await r.json();
    show(s);
    refused = 0;
    if (s.error) return;
  } catch (e) {
    if (++refused > 60) {
      document.getElementById("error").textContent =
          "clipkit stopped answering: see the terminal it runs in.";
      return;
    }
  }
  setTimeout(poll, 250);
}
poll();
</script></body></html>
"""


class StartPage:
    """Serve the start page on ``host:port`` from a daemon thread until ``close()`` (or the ``with`` block ends).

    ``step(text)`` names what is loading now; ``fail(message)`` shows why the start failed. Raises OSError with a
    clear message when the address is taken, before anything slow has been imported.
    """

    def __init__(self, host: str, port: int, open_browser: bool = False) -> None:
        self._started = time.monotonic()
        self._done: list[str] = []
        self._stage = "starting"
        self._error: str | None = None
        self._lock = threading.Lock()
        server_class = _Server6 if ":" in host else ThreadingHTTPServer
        try:
            self._server = server_class((host, port), _handler_for(self))
        except OSError as e:
            raise OSError(f"cannot serve on {host}:{port} ({e.strerror or e}); is clipkit already running there? "
                          "Pick another address with --port / --host") from e
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="clipkit-start-page", daemon=True)
        self._thread.start()
        self.url = f"http://{'localhost' if host in ('0.0.0.0', '::') else host}:{port}/"
        if open_browser:
            threading.Thread(target=webbrowser.open, args=(self.url,), daemon=True).start()

    def step(self, stage: str) -> None:
        with self._lock:
            if self._stage and self._stage != "starting":
                self._done.append(self._stage)
            self._stage = stage

    def fail(self, message: str) -> None:
        with self._lock:
            self._error = message

    def status(self) -> dict[str, object]:
        with self._lock:
            return {"stage": self._stage, "done": list(self._done), "error": self._error,
                    "seconds": time.monotonic() - self._started}

    def close(self) -> None:
        """Stop answering and free the address (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> StartPage:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if error is not None and not isinstance(error, KeyboardInterrupt) and self._thread.is_alive():
            self.fail(str(error) or type(error).__name__)
            time.sleep(FAILED_GRACE_S)
        self.close()


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler_for(page: StartPage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(head=True)

        def _answer(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == STATUS_PATH:
                code, kind, body = 200, "application/json", json.dumps(page.status()).encode()
            elif path == "/":
                code, kind = 200, "text/html; charset=utf-8"
                body = (PAGE % {"status": STATUS_PATH, "marker": MARKER}).encode()
            else:  # API clients get a clear "not yet" rather than the HTML page
                code, kind, body = 503, "text/plain; charset=utf-8", b"clipkit is starting; try again shortly\n"
            self.send_response(code)
            self.send_header(MARKER, "1")
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if code == 503:
                self.send_header("Retry-After", "2")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
            pass

    return Handler


def answers(url: str, timeout: float = 2.0) -> str | None:
    """What answers ``url`` now: "app", "start page", or None (nothing, or not a 200). For tests and benches
    that wait for the app itself rather than its start page."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            if r.status != 200:
                return None
            return "start page" if r.headers.get(MARKER) else "app"
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def wait_for_app(url: str, process: subprocess.Popen | None = None, timeout: float = 180.0) -> None:
    """Block until the app itself, not its start page, answers ``url``: for scripts that drive a ``clipkit serve``
    they started. RuntimeError when ``process`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while answers(url) != "app":
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the app exited ({process.returncode}) before it answered on {url}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the app did not answer on {url} within {timeout:.0f} s")
        time.sleep(0.25)
