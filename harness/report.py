"""`index.html` in a run's store directory: the verdict first, then what
proves it (each anomaly with its witnesses), the plots (latency over time by
outcome, throughput, latency quantiles, realtime lag, availability, each
with the fault windows as bands), the figures behind them (latency
quantiles, lag, recovery per fault, failovers), the node logs, the options
and every file. A static page: it opens from disk, and `highwater serve`
serves it as it is."""
from __future__ import annotations

import html
import json
from pathlib import Path

VERDICT = {True: ("valid", "#2b8a3e"), False: ("INVALID", "#c92a2a")}
PLOTS = (("latency-raw.png", "latency of every operation over time, by outcome"),
         ("rate.png", "throughput: completions per second by outcome"),
         ("latency-quantiles.png", "latency quantiles per second"),
         ("lag.png", "realtime lag: acknowledged values no poll had seen yet"),
         ("availability.png", "per key: ok sends and unavailability windows"))
LOG_TAIL_LINES = 40
WITNESSES_SHOWN = 10


def _esc(x) -> str:
    return html.escape(str(x))


def _table(rows, head=None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        if head:
            out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
        else:
            k, v = row
            out.append(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>")
    return "".join(out) + "</table>"


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def verdict_word(results: dict) -> tuple[str, str]:
    return VERDICT.get(results.get("valid"), ("unknown", "#e67700"))


def _latency_table(perf: dict) -> str:
    rows = []
    for f, by_type in sorted((perf.get("latency_s") or {}).items()):
        for type_, d in sorted(by_type.items()):
            rows.append((f, type_, d.get("count"), _ms(d.get("p50")), _ms(d.get("p90")), _ms(d.get("p99")),
                         _ms(d.get("max"))))
    if not rows:
        return ""
    return "<h2>Latency quantiles</h2>" + _table(rows, ("f", "type", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"))


def _lag_table(kafka: dict) -> str:
    lag = kafka.get("realtime_lag") or {}
    rows = [("all", *(_ms((lag.get("all") or {}).get(q)) for q in ("p50", "p90", "p99", "max")))]
    rows += [(k, *(_ms(d.get(q)) for q in ("p50", "p90", "p99", "max"))) for k, d in (lag.get("by_key") or {}).items()]
    if not lag:
        return ""
    return ("<h2>Realtime lag</h2><p>From a send's acknowledgement until a poll first read it.</p>"
            + _table(rows, ("key", "p50 ms", "p90 ms", "p99 ms", "max ms")))


def _recovery_table(recovery: dict) -> str:
    faults = recovery.get("faults") or []
    if not faults:
        return ""
    rows = [(f.get("fault"), ",".join(f.get("targets") or []), f"{f.get('start_s', 0):.1f}",
             "-" if f.get("stop_s") is None else f"{f['stop_s']:.1f}",
             _ms(f.get("max_after_start_s")), _ms(f.get("max_after_heal_s"))) for f in faults]
    bound = recovery.get("bound_s")
    return ("<h2>Recovery</h2><p>Per fault: the longest time any key took to acknowledge a send invoked after "
            "the fault began, and after its heal was requested" + (f" (bound {bound:g} s)" if bound else "")
            + ".</p>" + _table(rows, ("fault", "targets", "start s", "heal s", "max after start ms",
                                      "max after heal ms")))


def _target_section(run: dict) -> str:
    target = (run or {}).get("target") or {}
    parts = []
    failovers = target.get("failovers") or []
    if failovers:
        parts.append("<h2>Failovers</h2><pre>" + _esc(json.dumps(failovers[:50], indent=1, default=str)) + "</pre>")
    rest = {k: v for k, v in target.items() if k != "failovers"}
    if rest:
        parts.append("<h2>Target</h2><pre>" + _esc(json.dumps(rest, indent=1, default=str)[:20000]) + "</pre>")
    return "".join(parts)


def _log_section(run_dir: Path) -> str:
    logs = sorted([*(run_dir / "nodes").glob("*/*.log"), *(run_dir / "nodes").glob("*/procs/*.out")]) \
        if (run_dir / "nodes").is_dir() else []
    if not logs:
        return ""
    parts = ["<h2>Node logs</h2>"]
    for path in logs:
        rel = path.relative_to(run_dir)
        try:
            lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            lines = []
        parts.append(f"<details><summary><a href='{_esc(rel)}'>{_esc(rel)}</a> (last {len(lines)} lines)</summary>"
                     f"<pre>{_esc(chr(10).join(lines))}</pre></details>")
    return "".join(parts)


def write_index(run_dir, results: dict, test: dict) -> Path:
    run_dir = Path(run_dir)
    word, color = verdict_word(results)
    options = test.get("options", {})
    parts = [f"<h1 id='verdict' style='color:{color}'>{word}</h1>",
             f"<p class='what'>{_esc(options.get('db', ''))} · faults {_esc(','.join(options.get('nemesis') or []) or 'none')}"
             f" · seed {_esc(test.get('seed', options.get('seed', '')))}</p>"]
    reasons = list(results.get("reasons", []))
    for name, sub in sorted(results.get("checkers", {}).items()):
        if isinstance(sub, dict) and sub.get("valid") is not True and sub.get("reason"):
            reasons.append(f"{name}: {sub['reason']}")
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{_esc(r)}</li>" for r in reasons) + "</ul>")
    stats = results.get("stats", {})
    parts.append(_table([("ok / fail / info", f"{stats.get('ok')} / {stats.get('fail')} / {stats.get('info')}"),
                         ("anomaly types", ", ".join(results.get("anomaly_types", [])) or "none"),
                         ("allowed", ", ".join(results.get("allowed", [])) or "none")]))
    anomalies = results.get("anomalies", {})
    if anomalies:
        parts.append("<h2>Anomalies</h2>")
    for kind, witnesses in sorted(anomalies.items()):
        allowed = " (allowed)" if kind in (results.get("allowed") or []) else ""
        shown = json.dumps(witnesses[:WITNESSES_SHOWN], indent=1, default=str)
        parts.append(f"<h3 class='anomaly'>{_esc(kind)}{allowed}: {len(witnesses)}"
                     f"{' (first ' + str(WITNESSES_SHOWN) + ' shown)' if len(witnesses) > WITNESSES_SHOWN else ''}"
                     f"</h3><pre>{_esc(shown)}</pre>")
    if (run_dir / "linearizability.html").exists():
        parts.append("<p><a href='linearizability.html'>the linearizability violation, drawn</a></p>")
    plots = [(png, caption) for png, caption in PLOTS if (run_dir / png).exists()]
    if plots:
        parts.append("<h2>Plots</h2><p>Grey bands: fault windows (from the fault's request to its heal's).</p>")
        parts += [f"<figure><img class='plot' src='{png}' alt='{_esc(caption)}'><figcaption>{_esc(caption)}"
                  f"</figcaption></figure>" for png, caption in plots]
    checkers = results.get("checkers", {})
    parts.append(_latency_table(checkers.get("perf") or {}))
    parts.append(_lag_table(checkers.get("kafka") or {}))
    parts.append(_recovery_table(checkers.get("recovery") or {}))
    parts.append(_target_section(results.get("run") or {}))
    parts.append(_log_section(run_dir))
    parts.append("<h2>Options</h2>" + _table(sorted((k, v) for k, v in options.items() if k != "nemesis_plan")))
    files = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")
                   if p.is_file() and not {"volume", "volumes", "s3"} & set(p.parts[len(run_dir.parts):-1]))
    parts.append("<h2>Files</h2><ul>" + "".join(f"<li><a href='{_esc(f)}'>{_esc(f)}</a></li>" for f in files)
                 + "</ul>")
    # The page tells a headless browser (and its tests) how many plots loaded.
    script = ("<script>window.addEventListener('load',()=>{const i=[...document.querySelectorAll('img.plot')];"
              "document.body.dataset.plots=i.length;"
              "document.body.dataset.plotsLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length;});</script>")
    page = ("<!doctype html><meta charset='utf-8'><title>highwater: " + _esc(word) + "</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}th{text-align:left;"
            "padding-right:1em}td{padding-right:1em}pre{background:#f1f3f5;padding:.5em;overflow:auto;"
            "max-height:30em}img.plot{max-width:100%}figure{margin:1em 0}</style>" + "".join(parts) + script)
    out = run_dir / "index.html"
    out.write_text(page, encoding="utf-8")
    return out
