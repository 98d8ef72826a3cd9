"""A linearizability violation as a standalone HTML page (no scripts, no
external resources): the operations around the violation on a timeline, one
row per process, the longest linearizable prefix numbered in its order, the
operation that cannot be placed in red, and the model state after the
prefix. Input: a ``nonlinearizable`` witness (linearizable.violation_witness).
"""
from __future__ import annotations

import html
import json

ROW_H = 26
LEFT = 120
WIDTH = 1100


def _fmt_input(e):
    inp = e.get("input")
    s = json.dumps(inp, default=str)
    if e.get("output") is not None:
        s += " \u2192 " + json.dumps(e["output"], default=str)
    return s if len(s) <= 90 else s[:87] + "..."


def render_html(witness: dict, title: str = "Linearizability violation",
                source: str | None = None) -> str:
    tl = witness.get("timeline") or []
    esc = html.escape
    rows = {}
    for e in tl:
        p = (e.get("op") or {}).get("process", "?")
        rows.setdefault(json.dumps(p, default=str), []).append(e)
    times = [e["call"] for e in tl] + [e["ret"] for e in tl if e.get("ret") is not None]
    t0 = min(times) if times else 0
    t1 = max(times) if times else 1
    span = (t1 - t0) or 1
    open_end = t1 + span * 0.05
    scale = (WIDTH - LEFT - 20) / ((open_end - t0) or 1)

    def x(t):
        return LEFT + (t - t0) * scale

    # lanes: ops of one process never overlap, but draw each on its own
    # sub-lane when they do (indeterminate ops stay open to the end)
    svg = []
    y = 10
    for p, es in rows.items():
        lanes = []
        placed = []
        for e in sorted(es, key=lambda e: e["call"]):
            end = e["ret"] if e.get("ret") is not None else open_end
            for li, last_end in enumerate(lanes):
                if e["call"] >= last_end:
                    lanes[li] = end
                    placed.append((li, e, end))
                    break
            else:
                lanes.append(end)
                placed.append((len(lanes) - 1, e, end))
        svg.append(f'<text x="4" y="{y + 17}" class="proc">process {esc(p)}</text>')
        for li, e, end in placed:
            yy = y + li * ROW_H
            cls = "bad" if e.get("cannot_place") else (
                "lin" if e.get("linearized") is not None else "rest")
            if e.get("ret") is None:
                cls += " open"
            x0, x1 = x(e["call"]), max(x(end), x(e["call"]) + 3)
            label = _fmt_input(e)
            if e.get("linearized") is not None:
                label = f'#{e["linearized"] + 1} ' + label
            tip = json.dumps({k: v for k, v in e.items() if k != "cannot_place"}, default=str)
            svg.append(f'<g class="{cls}"><title>{esc(tip)}</title>'
                       f'<rect x="{x0:.1f}" y="{yy + 3}" width="{x1 - x0:.1f}" '
                       f'height="{ROW_H - 6}" rx="3"/>'
                       f'<text x="{x0 + 3:.1f}" y="{yy + 17}">{esc(label)}</text></g>')
        y += max(1, len(lanes)) * ROW_H + 6
    height = y + 30
    svg.append(f'<text x="{LEFT}" y="{height - 8}" class="axis">t = {t0} '
               f'\u2026 {t1} {esc(str(witness.get("time_unit", "")))}</text>')

    op = witness.get("op") or {}
    facts = [("model", witness.get("model")), ("key", witness.get("key")),
             ("operation that cannot be placed", json.dumps(op, default=str)),
             ("longest linearizable prefix", f'{witness.get("prefix_length")} operations'),
             ("state after the prefix", json.dumps(witness.get("state"), default=str))]
    facts_html = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(str(v))}</code></td></tr>"
                         for k, v in facts if v is not None)
    tail = "".join(f"<li><code>{esc(json.dumps(r, default=str))}</code></li>"
                   for r in witness.get("prefix_tail") or [])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 16px; }}
th {{ text-align: left; padding: 2px 12px 2px 0; vertical-align: top; }}
code {{ font-size: 12px; word-break: break-all; }}
svg text {{ font: 11px monospace; }}
svg .proc {{ font-weight: bold; }}
.lin rect {{ fill: #cfe8cf; stroke: #3a7d3a; }}
.rest rect {{ fill: #eee; stroke: #999; }}
.bad rect {{ fill: #f6c6c6; stroke: #c00; stroke-width: 2; }}
.open rect {{ stroke-dasharray: 4 3; }}
.legend span {{ display: inline-block; padding: 1px 8px; margin-right: 8px; border: 1px solid; }}
</style></head><body>
<h1>{esc(title)}</h1>
{f'<p>History: <code>{esc(source)}</code></p>' if source else ''}
<table>{facts_html}</table>
<p class="legend"><span style="background:#cfe8cf;border-color:#3a7d3a">linearized (#order)</span>
<span style="background:#f6c6c6;border-color:#c00">cannot be placed</span>
<span style="background:#eee;border-color:#999">not linearized</span>
<span style="border-style:dashed">indeterminate (no return)</span></p>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}">
{''.join(svg)}
</svg>
<h2>Last operations of the prefix</h2><ol>{tail}</ol>
<p>No order of these operations consistent with real time explains the red one: every
operation that completed before it began must precede it, and the model rejects it in
every state the search could reach. The timeline shows the prefix's last operations and
every operation not yet linearized that began before the red one returned.</p>
</body></html>
"""


def write_html(witness: dict, path, source: str | None = None) -> str:
    text = render_html(witness, source=source)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return str(path)
