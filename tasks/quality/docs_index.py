"""The validation report of one night: every contract's results on one static HTML page.

GX builds one Data Docs site per run of a suite, and its pages load their scripts and
styles from CDNs. This page is written from the per-table reports the validate stage keeps
(`reports/validation/<dataset>/<as_of>/<table>.json`), so it lists every contract of the
night, carries the run identifiers (as_of, contract version and hash), and needs no network:
inline styles, no scripts. Each table's own GX site sits next to it under `gx/<table>/`.
"""

from __future__ import annotations

from html import escape

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; font-size: 0.9rem; }
th { background: #f2f2f2; }
.pass { color: #17692f; font-weight: 600; }
.fail { color: #b3261e; font-weight: 600; }
code { background: #f5f5f5; padding: 0 0.2rem; }
"""


def _verdict(success: bool) -> str:
    return '<span class="pass">passed</span>' if success else '<span class="fail">FAILED</span>'


def _outcomes_table(rows: list[dict]) -> str:
    if not rows:
        return "<p>No per-expectation results recorded.</p>"
    body = "".join(
        "<tr>"
        f"<td><code>{escape(str(r['rule']))}</code></td>"
        f"<td>{escape(str(r.get('column') or '–'))}</td>"
        f"<td>{_verdict(r['success'])}</td>"
        f"<td>{r.get('unexpected_count', 0):,}</td>"
        f"<td>{escape(str(r.get('observed') or ''))}</td>"
        "</tr>"
        for r in sorted(rows, key=lambda r: (r["success"], str(r["rule"])))
    )
    return (
        "<table><tr><th>rule</th><th>column</th><th>result</th><th>unexpected</th>"
        f"<th>observed</th></tr>{body}</table>"
    )


def _coverage(report: dict) -> str:
    """Which partitions were checked tonight, which were read back, what GX ran on."""
    if "partitions" not in report:  # a report written before partitions were cached
        return ""
    total = report.get("partitions") or 0
    rechecked = report.get("rechecked") or []
    gx_days = report.get("gx_partitions") or []
    if not rechecked:
        tonight = "no changed partition tonight: every result was read back from the cache"
    else:
        days = ", ".join(rechecked[-5:]) + (" …" if len(rechecked) > 5 else "")
        tonight = f"{len(rechecked)} checked tonight (new or changed: {escape(days)})"
    status = str(report.get("gx_status") or "")
    pending = (
        " (running in the background: reload later)"
        if status == "pending"
        else f" but did not finish: {escape(status)}"
        if status.startswith("failed")
        else ""
    )
    gx = (
        f"Great Expectations re-checked {len(gx_days)} of them ({report.get('gx_rows', 0):,} "
        f"rows: date={escape(gx_days[0])}…{escape(gx_days[-1])}){pending}"
        if gx_days
        else "Great Expectations did not run tonight"
        + (" (turned off: NIGHTSHIFT_VALIDATION_GX_MAX_ROWS=0)" if rechecked else "")
    )
    disagrees = "".join(
        f'<li class="fail">GX breaks a rule the native checks passed: {escape(line)}</li>'
        for line in report.get("gx_disagrees") or []
    )
    return (
        f"<p>Native checks on {total} partition(s): {tonight}, "
        f"{total - len(rechecked)} read back unchanged. {gx}.</p>"
        + (f"<ul>{disagrees}</ul>" if disagrees else "")
    )


def _table_section(report: dict) -> str:
    table = escape(report["dataset"])
    failures = "".join(
        f"<li><code>{escape(f['rule'])}</code>: {f['unexpected_count']:,} unexpected"
        + (f" in date={escape(', '.join(f['partitions'][:5]))}" if f.get("partitions") else "")
        + "</li>"
        for f in report.get("failures") or []
    )
    gx_link = (
        f' · <a href="gx/{table}/index.html">GX Data Docs for {table}</a>'
        if report.get("gx_docs")
        else ""
    )
    return (
        f'<section id="{table}"><h2>{table}: {_verdict(report["success"])}</h2>'
        f"<p>contract <code>{escape(report['contract'])}</code> · as_of "
        f"{escape(str(report.get('as_of', '')))} · {report['rows']:,} rows · "
        f"{report['expectations']} expectations{gx_link}</p>"
        + (f"<ul>{failures}</ul>" if failures else "")
        + _coverage(report)
        + "<h3>Every partition (native checks)</h3>"
        + _outcomes_table(report.get("results") or [])
        + (
            "<h3>Tonight's changed partitions (Great Expectations)</h3>"
            + _outcomes_table(report["gx_results"])
            if report.get("gx_results")
            else ""
        )
        + "</section>"
    )


def render_index(dataset: str, as_of: str, reports: list[dict]) -> str:
    """The night's page: a summary table of the contracts, then each contract's results."""
    reports = sorted(reports, key=lambda r: r["dataset"])
    summary = "".join(
        f'<tr><td><a href="#{escape(r["dataset"])}">{escape(r["dataset"])}</a></td>'
        f"<td><code>{escape(r['contract'])}</code></td><td>{_verdict(r['success'])}</td>"
        f"<td>{r['rows']:,}</td><td>{r['expectations']}</td>"
        f"<td>{len(r.get('failures') or [])}</td></tr>"
        for r in reports
    )
    title = f"nightshift validation: {escape(dataset)} as_of {escape(as_of)}"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{STYLE}</style></head><body>"
        f"<h1>{title}</h1>"
        f"<p>{len(reports)} contract(s) validated for the run "
        f"<code>{escape(dataset)}/{escape(as_of)}</code>.</p>"
        "<table><tr><th>table</th><th>contract (version+hash)</th><th>result</th>"
        f"<th>rows</th><th>expectations</th><th>broken rules</th></tr>{summary}</table>"
        + "".join(_table_section(r) for r in reports)
        + "</body></html>"
    )
