"""`index.html` in a run's store directory: the verdict first, then what
proves it (anomalies with their witnesses), the plots, the options and
links to every file. A static page: it opens from disk, no server needed."""
from __future__ import annotations

import html
import json
from pathlib import Path

VERDICT = {True: ("valid", "#2b8a3e"), False: ("INVALID", "#c92a2a")}


def _table(rows) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"


def write_index(run_dir, results: dict, test: dict) -> Path:
    run_dir = Path(run_dir)
    word, color = VERDICT.get(results.get("valid"), ("unknown", "#e67700"))
    parts = [f"<h1 style='color:{color}'>{word}</h1>"]
    reasons = list(results.get("reasons", []))
    for name, sub in sorted(results.get("checkers", {}).items()):
        if isinstance(sub, dict) and sub.get("valid") != True and sub.get("reason"):  # noqa: E712
            reasons.append(f"{name}: {sub['reason']}")
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in reasons) + "</ul>")
    stats = results.get("stats", {})
    parts.append(_table([("ok / fail / info", f"{stats.get('ok')} / {stats.get('fail')} / {stats.get('info')}"),
                         ("anomaly types", ", ".join(results.get("anomaly_types", [])) or "none"),
                         ("allowed", ", ".join(results.get("allowed", [])) or "none")]))
    for kind, witnesses in sorted(results.get("anomalies", {}).items()):
        shown = json.dumps(witnesses[:10], indent=1, default=str)
        parts.append(f"<h3>{html.escape(kind)} ({len(witnesses)})</h3><pre>{html.escape(shown)}</pre>")
    for png in ("latency-raw.png", "rate.png", "availability.png"):
        if (run_dir / png).exists():
            parts.append(f"<p><img src='{png}' style='max-width:100%'></p>")
    options = test.get("options", {})
    parts.append("<h2>Options</h2>" + _table(sorted(options.items())))
    files = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")
                   if p.is_file() and "volume" not in p.parts and "s3" not in p.parts[:1])
    parts.append("<h2>Files</h2><ul>" + "".join(f"<li><a href='{html.escape(str(f))}'>{html.escape(str(f))}</a></li>"
                                                for f in files) + "</ul>")
    page = ("<!doctype html><meta charset='utf-8'><title>highwater: " + html.escape(word) + "</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}th{text-align:left;"
            "padding-right:1em}pre{background:#f1f3f5;padding:.5em;overflow:auto}</style>" + "".join(parts))
    out = run_dir / "index.html"
    out.write_text(page, encoding="utf-8")
    return out
