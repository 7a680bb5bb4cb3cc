"""`nurture stats --html`: one self-contained page a marketer can open or mail around,
with a funnel chart per sequence (inline SVG, no scripts, no external files)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from jinja2 import Environment, select_autoescape

from nurture.reports.stats import COLUMNS, Funnel, Scores, StepStats

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nurture report {{ generated }}</title>
<style>
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#2b2622;background:#faf7f2;margin:0}
main{max-width:980px;margin:0 auto;padding:32px 20px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:0 0 12px}
.muted{color:#7a6f66}.card{background:#fff;border:1px solid #e8e0d6;border-radius:10px;padding:20px;margin:16px 0}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 8px;text-align:right;border-bottom:1px solid #efe8df}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#7a6f66}
.sales{color:#9a3412}.education{color:#1d4e89}
</style></head><body><main>
<h1>Sequence report</h1>
<p class="muted">Generated {{ generated }} UTC. People, not emails, in the funnels; opens and
clicks by bots and prefetchers are left out.</p>
{% for f in funnels %}
<section class="card">
<h2>{{ f.sequence }}</h2>
{% if scores.get(f.sequence) %}<p class="muted">{{ scores[f.sequence].line() }}</p>{% endif %}
<svg role="img" aria-label="Funnel for {{ f.sequence }}" width="100%" viewBox="0 0 900 {{ 46 * f.stages()|length }}">
{% set top = f.entered or 1 %}
{% for label, count in f.stages() %}
  {% set width = (count / top * 560)|round(1) %}
  <rect x="230" y="{{ 46 * loop.index0 + 6 }}" width="{{ [width, 2]|max }}" height="34" rx="4"
        fill="{{ ['#1d4e89','#3b6fb0','#c2410c','#ea580c','#15803d'][loop.index0] }}"/>
  <text x="220" y="{{ 46 * loop.index0 + 28 }}" text-anchor="end" font-size="15">{{ label }}</text>
  <text x="{{ 240 + [width, 2]|max }}" y="{{ 46 * loop.index0 + 28 }}" font-size="15">{{ count }}
    {%- if f.entered and loop.index0 %} ({{ (100 * count / f.entered)|round|int }}%){% endif %}</text>
{% endfor %}
</svg>
<table><thead><tr><th>step</th><th>stage</th>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in steps if row.sequence == f.sequence %}
<tr><td>{{ row.step_id }}</td><td class="{{ row.stage }}">{{ row.stage }}</td>
{% for c in columns %}<td>{{ row.counts.get(c, 0) }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table>
</section>
{% endfor %}
<section class="card"><h2>Sales handoffs</h2>
{% if handoffs %}<p>{% for status, n in handoffs.items() %}{{ n }} {{ status }}{% if not loop.last %}, {% endif %}{% endfor %}</p>
{% else %}<p class="muted">Nobody has become sales-ready yet.</p>{% endif %}
</section>
</main></body></html>
"""


def write_report(
    path: Path, funnels: list[Funnel], steps: list[StepStats], handoffs: dict[str, int],
    generated: datetime, scores: list[Scores | None] | None = None,
) -> None:  # fmt: skip
    env = Environment(autoescape=select_autoescape(default_for_string=True))
    by_sequence = {s.sequence: s for s in scores or [] if s is not None}
    html = env.from_string(_PAGE).render(
        funnels=funnels, steps=steps, columns=COLUMNS, handoffs=handoffs, scores=by_sequence,
        generated=generated.strftime("%Y-%m-%d %H:%M"),
    )  # fmt: skip
    path.write_text(html, encoding="utf-8")
