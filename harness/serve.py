"""`highwater serve [STORE]`: every stored run on 127.0.0.1 — a list with
verdict, target, faults and date, newest first, each linking to its run page
(index.html) and files. Read-only; the store is served as it is on disk."""
from __future__ import annotations

import datetime
import functools
import html
import json
import logging
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness.report import verdict_word
from harness.store import ABANDONED_NOTE, RUNNING

log = logging.getLogger(__name__)


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def list_runs(store: Path) -> list[dict]:
    runs = []
    for test_json in Path(store).glob("*/*/test.json"):
        run_dir = test_json.parent
        if run_dir.parent.name == "latest":
            continue
        test = _load(test_json)
        options = test.get("options") or {}
        results = _load(run_dir / "results.json")
        if results:
            word, color = verdict_word(results)
        elif (run_dir / RUNNING).exists():
            word, color = "running", "#1971c2"
        elif (run_dir / ABANDONED_NOTE).exists():
            word, color = "harness killed", "#868e96"
        else:
            word, color = "no verdict", "#868e96"
        started = test.get("started")
        runs.append({
            "path": run_dir.relative_to(store).as_posix(),
            "test": run_dir.parent.name,
            "started": started or 0,
            "date": datetime.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M:%S") if started else run_dir.name,
            "target": f"{options.get('db', '?')} ×{options.get('nodes', '?')} ({options.get('client', '?')})",
            "faults": ",".join(options.get("nemesis") or []) or "none",
            "bug": ",".join(options.get("bug") or []),
            "verdict": word, "color": color,
            "anomalies": ", ".join(t for t in results.get("anomaly_types", []) if t not in results.get("allowed", [])),
            "page": "index.html" if (run_dir / "index.html").exists() else "",
        })
    return sorted(runs, key=lambda r: (r["started"], r["path"]), reverse=True)


def index_page(store: Path) -> str:
    rows = []
    for r in list_runs(store):
        href = f"{r['path']}/{r['page']}"
        rows.append(f"<tr><td><a href='{html.escape(href)}'>{html.escape(r['test'])}</a></td>"
                    f"<td style='color:{r['color']};font-weight:bold'>{html.escape(r['verdict'])}</td>"
                    f"<td>{html.escape(r['anomalies'])}</td><td>{html.escape(r['target'])}</td>"
                    f"<td>{html.escape(r['faults'])}</td><td>{html.escape(r['bug'])}</td>"
                    f"<td>{html.escape(r['date'])}</td></tr>")
    body = ("<table id='runs'><tr><th>test</th><th>verdict</th><th>anomalies</th><th>target</th><th>faults</th>"
            "<th>planted bug</th><th>started</th></tr>" + "".join(rows) + "</table>") if rows else \
        "<p>No runs in this store yet: <code>highwater run</code> makes one.</p>"
    return ("<!doctype html><meta charset='utf-8'><title>highwater runs</title><style>body{font-family:sans-serif;"
            "max-width:1200px;margin:2em auto}th,td{text-align:left;padding:.2em 1em .2em 0}</style>"
            f"<h1>Runs in {html.escape(str(store))}</h1>" + body)


class StoreHandler(SimpleHTTPRequestHandler):
    store: Path

    def do_GET(self):
        if self.path in ("/", "/index.html"):
            data = index_page(self.store).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        super().do_GET()

    def log_message(self, fmt, *args):
        log.info("%s %s", self.address_string(), fmt % args)


def make_server(store, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    store = Path(store).resolve()
    handler = functools.partial(type("Handler", (StoreHandler,), {"store": store}), directory=str(store))
    return ThreadingHTTPServer((host, port), handler)
