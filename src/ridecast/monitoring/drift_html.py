"""A drift report as one self-contained HTML page: inline CSS, inline SVG, no script, no links.

The page opens from a file, a mail attachment or a CI artifact with nothing else to fetch: each
numeric column is drawn as paired histogram bars in SVG, each categorical column as bars of its
most common categories, reference in grey and current in blue, with the score and the verdict.
"""

from __future__ import annotations

from html import escape

from ridecast.monitoring.drift import METHOD_LABELS, ColumnDrift, DriftReport, Histogram

_REFERENCE_COLOUR = "#94a3b8"
_CURRENT_COLOUR = "#2563eb"

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #0f172a;
       margin: 0 auto; max-width: 980px; padding: 24px; background: #f8fafc; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 0; }
.sub { color: #475569; margin: 0 0 12px; }
.verdict { font-weight: 600; padding: 10px 14px; border-radius: 8px; margin: 12px 0 20px; }
.verdict.drift { background: #fee2e2; color: #991b1b; }
.verdict.ok { background: #dcfce7; color: #166534; }
table.summary { border-collapse: collapse; width: 100%; background: #fff; margin-bottom: 20px; }
table.summary th, table.summary td { text-align: left; padding: 6px 10px;
       border-bottom: 1px solid #e2e8f0; }
table.summary td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; font-size: 12px; font-weight: 700; padding: 2px 8px;
       border-radius: 999px; letter-spacing: .04em; }
.badge.drift { background: #dc2626; color: #fff; }
.badge.ok { background: #e2e8f0; color: #334155; }
section.column { background: #fff; border: 1px solid #e2e8f0; border-radius: 10px;
       padding: 14px 16px; margin-bottom: 16px; }
section.column.drifted { border-color: #fca5a5; }
.head { display: flex; gap: 10px; align-items: center; margin-bottom: 6px; }
.figures { color: #475569; margin: 0 0 10px; }
.legend span { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
       vertical-align: -1px; margin: 0 4px 0 12px; }
svg text { font: 11px system-ui, sans-serif; fill: #475569; }
table.bars { border-collapse: collapse; width: 100%; }
table.bars td { padding: 2px 6px; vertical-align: middle; }
table.bars td.label { width: 34%; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
       max-width: 300px; }
table.bars td.share { width: 8%; text-align: right; font-variant-numeric: tabular-nums;
       color: #475569; }
.bar { height: 9px; border-radius: 2px; margin: 1px 0; }
ul.notes { color: #475569; padding-left: 18px; }
footer { color: #64748b; font-size: 13px; margin-top: 24px; }
"""


def render_html(report: DriftReport) -> str:
    """The whole page for ``report``; every text from the report is escaped."""
    verdict_class = "drift" if report.dataset_drifted else "ok"
    drifted = len(report.drifted_columns)
    relation = ">=" if report.dataset_drifted else "<"
    verdict = (
        f"{'Dataset drift' if report.dataset_drifted else 'No dataset drift'}: "
        f"{drifted} of {len(report.columns)} columns drifted "
        f"(share {report.share_drifted:.2f} {relation} {report.drift_share:g})"
    )
    model = f" · predictions by {escape(report.model)}" if report.model else ""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Drift: {escape(report.current_label)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Drift of {escape(report.current_label)}</h1>",
        f'<p class="sub">against {escape(report.reference_label)}{model}</p>',
        f'<p class="verdict {verdict_class}">{escape(verdict)}</p>',
        _summary(report),
        *(_column_section(c) for c in report.columns),
    ]
    if report.notes:
        parts.append('<ul class="notes">')
        parts.extend(f"<li>{escape(note)}</li>" for note in report.notes)
        parts.append("</ul>")
    parts.append(
        "<footer>ridecast monitor drift. Methods and thresholds follow Evidently's defaults: "
        "Wasserstein distance / reference std and Jensen-Shannon distance drift at &ge; 0.1; "
        "with small samples, K-S and chi-square drift at p &lt; 0.05; the dataset drifts when "
        "at least half its columns do. See docs/monitoring.md.</footer>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _badge(drifted: bool) -> str:
    if drifted:
        return '<span class="badge drift">DRIFT</span>'
    return '<span class="badge ok">ok</span>'


def _score(column: ColumnDrift) -> str:
    return f"{column.score:.3g}" if column.is_p_value else f"{column.score:.3f}"


def _summary(report: DriftReport) -> str:
    rows = [
        "<table class=summary><thead><tr><th>column</th><th>method</th><th>score</th>"
        "<th>drift when</th><th>rows (ref / cur)</th><th></th></tr></thead><tbody>"
    ]
    for c in report.columns:
        rows.append(
            f"<tr><td>{escape(c.column)}</td><td>{escape(METHOD_LABELS[c.method])}</td>"
            f'<td class="num">{_score(c)}</td><td>{escape(c.rule)}</td>'
            f'<td class="num">{c.reference_rows:,} / {c.current_rows:,}</td>'
            f"<td>{_badge(c.drifted)}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)


def _column_section(column: ColumnDrift) -> str:
    figures = f"{METHOD_LABELS[column.method]} {_score(column)} (drift when {column.rule})"
    if column.reference_mean is not None and column.current_mean is not None:
        figures += f"; mean {column.reference_mean:.3g} → {column.current_mean:.3g}"
    if column.noise is not None:
        figures += f"; sampling noise ≈ {column.noise:.3f}"
    chart = _histogram_svg(column.histogram) if column.histogram else _category_bars(column)
    legend = (
        f'<p class="legend"><span style="background:{_REFERENCE_COLOUR}"></span>reference'
        f'<span style="background:{_CURRENT_COLOUR}"></span>current</p>'
    )
    drifted = " drifted" if column.drifted else ""
    return (
        f'<section class="column{drifted}"><div class="head"><h2>{escape(column.column)}</h2>'
        f"{_badge(column.drifted)}</div><p class=figures>{escape(figures)}</p>"
        f"{chart}{legend}</section>"
    )


def _histogram_svg(histogram: Histogram) -> str:
    """Paired bars per bin, reference then current, on one share axis."""
    width, height, bottom, left = 900, 170, 22, 36
    bins = len(histogram.reference)
    top = max(*histogram.reference, *histogram.current, 1e-12)
    slot = (width - left) / bins
    bar = slot * 0.42

    def y(share: float) -> float:
        return (height - bottom) * (1.0 - share / top)

    shapes = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        'stroke="#cbd5e1"/>',
        f'<text x="{left - 4}" y="10" text-anchor="end">{top:.0%}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0%</text>',
    ]
    edges = histogram.edges
    for i in range(bins):
        x = left + i * slot
        span = f"{edges[i]:.3g} to {edges[i + 1]:.3g}"
        for offset, share, colour, who in (
            (0.06, histogram.reference[i], _REFERENCE_COLOUR, "reference"),
            (0.52, histogram.current[i], _CURRENT_COLOUR, "current"),
        ):
            shapes.append(
                f'<rect x="{x + slot * offset:.1f}" y="{y(share):.1f}" width="{bar:.1f}" '
                f'height="{height - bottom - y(share):.1f}" fill="{colour}">'
                f"<title>{who} {span}: {share:.1%}</title></rect>"
            )
    for i in (0, bins // 2, bins):
        anchor = "start" if i == 0 else "end" if i == bins else "middle"
        shapes.append(
            f'<text x="{left + i * slot:.1f}" y="{height - 6}" text-anchor="{anchor}">'
            f"{edges[i]:.3g}</text>"
        )
    return (
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="histogram of reference and current">{"".join(shapes)}</svg>'
    )


def _category_bars(column: ColumnDrift) -> str:
    """A pair of bars per category, scaled to the largest one shown; "other" (all the rest
    together) gets its shares only, or its bars would flatten every other one."""
    named = [c for c in column.categories if c.category != "other"]
    top = max([max(c.reference, c.current) for c in named] + [1e-12])
    rows = ["<table class=bars><tbody>"]
    for c in column.categories:
        bars = ""
        if c.category != "other":
            bars = (
                f'<div class="bar" style="width:{c.reference / top:.1%};'
                f'background:{_REFERENCE_COLOUR}"></div>'
                f'<div class="bar" style="width:{c.current / top:.1%};'
                f'background:{_CURRENT_COLOUR}"></div>'
            )
        rows.append(
            f"<tr><td class=label title='{escape(c.label)}'>{escape(c.label)}</td>"
            f"<td>{bars}</td><td class=share>{c.reference:.1%}<br>{c.current:.1%}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)
