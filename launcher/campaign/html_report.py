"""``kitebench matrix report RUN_ID --html FILE``: one self-contained HTML page of a run.

The page carries its data as JSON and renders it with a few lines of inline script (no server,
no network, no external asset): a pass/fail grid (submission × GPU/mode/variant), a score chart
per task × GPU (inline SVG bars, best first in the task's direction), and the failures with their
stage and error.
"""

from __future__ import annotations

import html
import json
from typing import Any

from launcher.campaign.queries import latest_per_cell
from launcher.campaign.store import Store
from launcher.errors import UsageError

_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0} th,td{border:1px solid #ccc;padding:4px 8px}
th{background:#f4f4f4;text-align:left}
td.cell{text-align:center;font-weight:600}
.success{background:#d7f5dc;color:#11622a}.failed{background:#fbd9d9;color:#8b1111}
.partial{background:#fff1c2;color:#7a5a00}.running,.pending{background:#e4ecfb;color:#243f85}
.skipped{background:#eee;color:#666} .err{font-family:monospace;white-space:pre-wrap;font-size:12px}
svg text{font:12px system-ui,sans-serif}
"""

_JS = r"""
const D = JSON.parse(document.getElementById('kb-data').textContent);
const el = (t, a = {}, txt) => { const e = document.createElement(t);
  for (const [k, v] of Object.entries(a)) e.setAttribute(k, v);
  if (txt !== undefined) e.textContent = txt; return e; };
const counts = {};
D.cells.forEach(c => counts[c.status] = (counts[c.status] || 0) + 1);
document.getElementById('kb-summary').textContent = D.cells.length + ' cells: ' +
  Object.entries(counts).sort().map(([s, n]) => n + ' ' + s).join(', ');
// grid: one table per task, rows submissions, columns gpu/mode/variant
const grid = document.getElementById('kb-grid');
[...new Set(D.cells.map(c => c.task))].forEach(task => {
  const cells = D.cells.filter(c => c.task === task);
  const cols = [...new Set(cells.map(c => c.gpu + ' ' + c.mode + (c.variant === 'default' ? '' : ' ' + c.variant)))];
  const subs = [...new Set(cells.map(c => c.submission))];
  grid.appendChild(el('h3', {}, task));
  const t = el('table', {'class': 'grid', 'data-task': task});
  const hr = el('tr'); hr.appendChild(el('th', {}, 'submission'));
  cols.forEach(c => hr.appendChild(el('th', {}, c))); t.appendChild(hr);
  subs.forEach(s => { const tr = el('tr'); tr.appendChild(el('th', {}, s));
    cols.forEach(col => { const c = cells.find(x => x.submission === s &&
        (x.gpu + ' ' + x.mode + (x.variant === 'default' ? '' : ' ' + x.variant)) === col);
      const td = c ? el('td', {'class': 'cell ' + c.status, 'data-status': c.status,
          'data-key': c.cell_key, title: c.error || ''}, c.status + (c.score != null ? ' ' + c.score.toPrecision(3) : ''))
        : el('td', {}, '');
      tr.appendChild(td); });
    t.appendChild(tr); });
  grid.appendChild(t);
});
// score charts: one per task × gpu, best first
const charts = document.getElementById('kb-charts');
const NS = 'http://www.w3.org/2000/svg';
const groups = {};
D.cells.filter(c => c.status === 'success' && c.score != null).forEach(c => {
  (groups[c.task + ' on ' + c.gpu] = groups[c.task + ' on ' + c.gpu] || []).push(c); });
Object.entries(groups).forEach(([name, cs]) => {
  const asc = cs[0].ascending !== false;
  cs.sort((a, b) => asc ? a.score - b.score : b.score - a.score);
  const max = Math.max(...cs.map(c => c.score)), h = 22 * cs.length + 10;
  charts.appendChild(el('h3', {}, name + ' — ' + (cs[0].metric || 'score') + (asc ? ' (lower is better)' : ' (higher is better)')));
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('width', 760); svg.setAttribute('height', h); svg.setAttribute('data-chart', name);
  cs.forEach((c, i) => {
    const r = document.createElementNS(NS, 'rect');
    r.setAttribute('x', 300); r.setAttribute('y', 5 + 22 * i); r.setAttribute('height', 16);
    r.setAttribute('width', Math.max(1, 380 * c.score / max)); r.setAttribute('fill', '#4a7bd0');
    const t = document.createElementNS(NS, 'text');
    t.setAttribute('x', 0); t.setAttribute('y', 18 + 22 * i);
    t.textContent = c.submission.split('/').pop() + ' ' + c.mode + ': ' + c.score.toPrecision(4);
    svg.appendChild(r); svg.appendChild(t); });
  charts.appendChild(svg);
});
// failures
const fails = D.cells.filter(c => c.status === 'failed' || c.status === 'partial');
const ft = document.getElementById('kb-failures');
if (!fails.length) ft.appendChild(el('p', {}, 'none'));
else { const t = el('table', {id: 'kb-failure-table'});
  const hr = el('tr'); ['task', 'submission', 'gpu', 'mode', 'status', 'stage', 'error'].forEach(h => hr.appendChild(el('th', {}, h)));
  t.appendChild(hr);
  fails.forEach(c => { const tr = el('tr', {'data-key': c.cell_key});
    [c.task, c.submission, c.gpu, c.mode, c.status, c.failure_stage || '', c.error || ''].forEach((v, i) =>
      tr.appendChild(el('td', i === 6 ? {'class': 'err'} : {}, v)));
    t.appendChild(tr); });
  ft.appendChild(t); }
"""


def report_data(store: Store, run_id: str) -> dict[str, Any]:
    run = store.get_run(run_id)
    if run is None:
        raise UsageError(f"no run {run_id} in the store {store.url}")
    cells = list(latest_per_cell(store.attempts(run_id=run_id)).values())
    keep = ("cell_key", "task", "submission", "gpu", "mode", "variant", "status",
            "failure_stage", "error", "score", "metric", "ascending", "build_url", "id")
    return {"run": {k: run[k] for k in ("id", "name", "backend", "status", "created_at",
                                         "finished_at")},
            "cells": [{k: c[k] for k in keep} for c in cells]}


def render_html(data: dict[str, Any]) -> str:
    run = data["run"]
    # no "<" at all in the JSON: an error text cannot end the script element or open a comment
    blob = json.dumps(data).replace("<", "\\u003c")
    title = html.escape(f"kitebench run {run['id']} — {run['name']}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
            f"<style>{_CSS}</style></head><body><h1>{title}</h1>"
            f"<p>backend {html.escape(run['backend'])}, status "
            f"<b id=kb-status>{html.escape(run['status'])}</b>, started "
            f"{html.escape(run['created_at'])}, finished {html.escape(run['finished_at'] or '-')}"
            f"</p><p id=kb-summary></p><h2>Pass/fail</h2><div id=kb-grid></div>"
            f"<h2>Scores</h2><div id=kb-charts></div><h2>Failures</h2><div id=kb-failures></div>"
            f"<script type=application/json id=kb-data>{blob}</script>"
            f"<script>{_JS}</script></body></html>")


def write_report(store: Store, run_id: str, path: str) -> int:
    """Write the page; returns the number of cells in it."""
    data = report_data(store, run_id)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(render_html(data))
    except OSError as e:
        raise UsageError(f"cannot write the report to {path}: {e.strerror or e}") from None
    return len(data["cells"])
