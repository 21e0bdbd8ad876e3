"""``--report report.html``: one self-contained HTML file of a ``--verify`` run.

Every finding with its verdict and evidence, the run summary, and plots per step of the
loss, the gradient norm and the update/weight ratio per parameter group, the learning
rate and the memory in use. The plots are inline SVG drawn here (no script, no font, no
network), so the file opens anywhere, offline, and prints.
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence, TextIO

from mllint.reporters import Report

#: Line colours, cycled (Okabe-Ito, readable by colour-blind readers).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
_STATUS_COLOUR = {"confirmed": "#b00020", "refuted": "#1b7a2f", "not-reached": "#a06000",
                  "error": "#7a1b7a"}

Series = tuple[str, Sequence[tuple[float, float]]]


def render(report: Report, out: TextIO) -> None:
    out.write(document(report))


def document(report: Report) -> str:
    run = report.verify_summary
    series = run.series if run is not None else {}
    parts = [_HEAD, "<h1>mllint --verify report</h1>"]
    if run is not None:
        parts.append(f'<p class="summary">{_e(run.text())}</p>')
        if run.failed and run.output_tail:
            parts.append("<h3>Last lines of the script's output</h3>"
                         f"<pre>{_e(run.output_tail)}</pre>")
        for note in run.notes:
            parts.append(f'<p class="note">{_e(note)}</p>')
    parts.append(_findings(report))
    parts.append(_plots(series))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _findings(report: Report) -> str:
    if not report.diagnostics:
        return "<h2>Findings</h2><p>No findings.</p>"
    rows = []
    for d in report.diagnostics:
        f, v = d.finding, d.verdict
        status = v.status.value if v is not None else "not verified"
        colour = _STATUS_COLOUR.get(status, "#444")
        kind = "runtime check" if d.runtime_only else "static rule"
        evidence = _e(v.evidence) if v is not None else ""
        rows.append(
            f'<tr class="finding" data-code="{_e(f.code)}" data-status="{_e(status)}">'
            f"<td><b>{_e(f.code)}</b><br><span class=\"name\">{_e(f.name)}</span>"
            f"<br><small>{kind}</small></td>"
            f"<td>{_e(f.path)}:{f.line}</td>"
            f"<td>{_e(f.message)}"
            + (f'<div class="hint">hint: {_e(f.hint)}</div>' if f.hint else "")
            + "</td>"
            f'<td><span class="badge" style="background:{colour}">{_e(status)}</span>'
            f'<div class="evidence">{evidence}</div></td></tr>')
    return ("<h2>Findings</h2><table><thead><tr><th>Code</th><th>Where</th><th>What</th>"
            "<th>--verify</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _plots(series: dict[str, Any]) -> str:
    charts = []
    loss = [(float(s), v) for s, v in series.get("loss", []) if v is not None]
    if loss:
        charts.append(line_chart("Loss at each backward()", [("loss", loss)], "step"))
    grad, ratio, lr = [], [], []
    for o in series.get("optimizers", []):
        for g in o.get("groups", []):
            label = f"{o['optimizer']} group {g['group']}" + (
                f" ({o['site']})" if o.get("site") else "")
            steps = o.get("steps") or range(1, len(g.get("lr", [])) + 1)
            grad.append((label, _points(steps, g.get("grad_norm", []))))
            ratio.append((label, _points(steps, g.get("update_ratio", []))))
            lr.append((label, _points(steps, g.get("lr", []))))
    if grad:
        charts.append(line_chart("Gradient norm per parameter group", grad, "optimizer step",
                                 log_y=True))
        charts.append(line_chart("Update / weight ratio per parameter group (healthy: about "
                                 "1e-3)", ratio, "optimizer step", log_y=True, band=(1e-4, 1e-2)))
        charts.append(line_chart("Learning rate per parameter group", lr, "optimizer step"))
    memory = [(float(s), v / 2**20) for s, v in series.get("memory_bytes", [])]
    if memory:
        kind = "CUDA allocator" if series.get("memory_kind") == "cuda" else "process RSS"
        charts.append(line_chart(f"Memory in use ({kind}, MiB)", [("memory", memory)],
                                 "optimizer step"))
    if not charts:
        return "<h2>Per-step series</h2><p>The run recorded no optimizer step.</p>"
    return "<h2>Per-step series</h2>" + "".join(f'<div class="chart">{c}</div>' for c in charts)


def _points(steps: Any, values: Sequence[Any]) -> list[tuple[float, float]]:
    return [(float(s), float(v)) for s, v in zip(steps, values) if v is not None]


def line_chart(title: str, series: list[Series], x_label: str, *, log_y: bool = False,
               band: tuple[float, float] | None = None, width: int = 640,
               height: int = 260) -> str:
    """An SVG line chart: one polyline per series, axes with a few ticks, a legend."""
    left, right, top, bottom = 64, 16, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    pts = [(x, y) for _, data in series for x, y in data if not log_y or y > 0]
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 18 * len(series)}" '
           f'role="img" aria-label="{_e(title)}">',
           f'<text x="{left}" y="16" class="title">{_e(title)}</text>']
    if not pts:
        svg.append(f'<text x="{left}" y="{top + 20}">no finite values</text></svg>')
        return "".join(svg)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    ys = [math.log10(p[1]) if log_y else p[1] for p in pts]
    y0, y1 = min(ys), max(ys)
    if band is not None and log_y:
        y0, y1 = min(y0, math.log10(band[0])), max(y1, math.log10(band[1]))
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 1, y1 + 1
    if x1 - x0 < 1e-12:
        x0, x1 = x0 - 1, x1 + 1

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        v = math.log10(y) if log_y else y
        return top + plot_h - (v - y0) / (y1 - y0) * plot_h

    if band is not None and log_y:
        ya, yb = sy(band[1]), sy(band[0])
        svg.append(f'<rect x="{left}" y="{ya:.1f}" width="{plot_w}" height="{yb - ya:.1f}" '
                   'class="band"/>')
    svg.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>')
    for i in range(5):
        value = y0 + (y1 - y0) * i / 4
        y = top + plot_h - plot_h * i / 4
        label = _fmt(10 ** value if log_y else value)
        svg.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                   f'class="grid"/><text x="{left - 6}" y="{y + 4:.1f}" class="tick" '
                   f'text-anchor="end">{label}</text>')
    for i in range(5):
        value = x0 + (x1 - x0) * i / 4
        x = sx(value)
        svg.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" class="tick" '
                   f'text-anchor="middle">{_fmt(value)}</text>')
    svg.append(f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h + 32}" class="tick" '
               f'text-anchor="middle">{_e(x_label)}</text>')
    for n, (label, data) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in data if not log_y or y > 0)
        if coords:
            svg.append(f'<polyline class="series" data-label="{_e(label)}" points="{coords}" '
                       f'fill="none" stroke="{colour}" stroke-width="1.8"/>')
        ly = height + 18 * n + 4
        svg.append(f'<rect x="{left}" y="{ly}" width="12" height="4" fill="{colour}"/>'
                   f'<text x="{left + 18}" y="{ly + 6}" class="tick">{_e(label)}</text>')
    svg.append("</svg>")
    return "".join(svg)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-2:
        return f"{value:.1e}"
    return f"{value:.3g}"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mllint --verify report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
td, th { border-bottom: 1px solid #ddd; padding: 6px 8px; vertical-align: top; text-align: left;
         overflow-wrap: anywhere; }
th:nth-child(1) { width: 9em; } th:nth-child(2) { width: 16em; }
.badge { color: #fff; border-radius: 4px; padding: 1px 6px; font-size: 0.85em; }
.evidence { font-size: 0.9em; margin-top: 4px; }
.hint { color: #225; font-size: 0.9em; margin-top: 4px; }
.name { color: #066; }
.summary { font-weight: 600; }
.note { color: #555; font-size: 0.9em; margin: 2px 0; }
pre { background: #f5f5f5; padding: 8px; overflow-x: auto; }
.chart { margin: 1em 0; }
svg .title { font-weight: 600; font-size: 13px; }
svg .tick { font-size: 11px; fill: #444; }
svg .frame { fill: none; stroke: #999; }
svg .grid { stroke: #eee; }
svg .band { fill: #e7f4e4; }
</style></head><body>"""
