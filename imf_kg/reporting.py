"""Comparison reports shared by link prediction (``imf-kg compare``) and node classification (``node-tasks compare``).

Input: one record (a flat dict) per run, e.g. ``{"method": "hgt-early", "seed": 0, "macro_f1": 0.74}``.
Output: rows with mean and standard deviation per method, a Markdown table ("mean ± std"), a bar chart
with error bars, and a JSON file with the records and the rows. Files are written atomically.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from imf_kg.errors import ToolkitError
from imf_kg.io import atomic_write_figure, atomic_write_json, atomic_write_text


def summarise(records: Sequence[Mapping], group_key: str = "method", metrics: Sequence[str] = ("micro_f1", "macro_f1")) -> List[dict]:
    """Group ``records`` by ``group_key`` (in order of first appearance) and average each metric.

    Returns one row per group: ``{group_key: name, "n": runs, "<metric>_mean": .., "<metric>_std": ..,
    "<metric>_n": runs that reported it}``. The standard deviation is the sample one (ddof = 1; 0.0 for a
    single run). A metric missing or None in a record is skipped for that record; a group with no value
    for a metric gets NaN.
    """
    groups: Dict[str, List[Mapping]] = {}
    for record in records:
        if group_key not in record:
            raise ToolkitError(f"a comparison record lacks the key {group_key!r}: {dict(record)}")
        groups.setdefault(str(record[group_key]), []).append(record)
    rows = []
    for name, members in groups.items():
        row = {group_key: name, "n": len(members)}
        for metric in metrics:
            values = [float(r[metric]) for r in members if r.get(metric) is not None]
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(values)
            row[f"{metric}_n"] = len(values)
        rows.append(row)
    return rows


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def markdown_table(
    rows: Sequence[Mapping],
    metrics: Sequence[str],
    group_key: str = "method",
    digits: int = 4,
    labels: Optional[Mapping[str, str]] = None,
    references: Optional[Mapping[str, Mapping[str, float]]] = None,
    title: Optional[str] = None,
    metric_digits: Optional[Mapping[str, int]] = None,
) -> str:
    """A Markdown table with one row per group and one "mean ± std" column per metric.

    Args:
        rows: output of :func:`summarise`.
        labels: metric -> column header (default: the metric name).
        references: group -> metric -> a published number, shown as an extra "(paper x)" after the cell.
        title: optional heading line above the table.
        metric_digits: metric -> digits, where it differs from ``digits`` (e.g. seconds with 1).
    """
    labels = labels or {}
    header = [group_key, "runs"] + [labels.get(m, m) for m in metrics]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in rows:
        cells = [str(row[group_key]), str(row.get("n", ""))]
        for metric in metrics:
            places = (metric_digits or {}).get(metric, digits)
            mean, std = row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_std", math.nan)
            cell = "n/a" if mean is None or math.isnan(mean) else f"{mean:.{places}f} ± {std:.{places}f}"
            ref = (references or {}).get(str(row[group_key]), {}).get(metric)
            if ref is not None:
                cell += f" (paper {ref:.{places}f})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: Sequence[Mapping], metrics: Sequence[str] | str, path: str | Path, group_key: str = "method",
              title: Optional[str] = None, labels: Optional[Mapping[str, str]] = None) -> Path:
    """Grouped bars (one group per row, one bar per metric) with ±1 std error bars, saved as PNG atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    labels = labels or {}
    names = [str(r[group_key]) for r in rows]
    width = 0.8 / max(len(metrics), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + 0.5 * len(names) * max(1, len(metrics))), 4.0))
    try:
        for i, metric in enumerate(metrics):
            means = [_finite(r.get(f"{metric}_mean")) for r in rows]
            stds = [_finite(r.get(f"{metric}_std")) for r in rows]
            positions = [k + (i - (len(metrics) - 1) / 2) * width for k in range(len(names))]
            ax.bar(positions, means, width, yerr=stds, capsize=3, label=labels.get(metric, metric))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        finite = [_finite(r.get(f"{m}_mean")) - _finite(r.get(f"{m}_std")) for r in rows for m in metrics]
        low = min(finite) if finite else 0.0
        ax.set_ylim(bottom=max(0.0, low - 0.05))  # differences between methods are small: zoom in
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")  # never over a bar
        if title:
            ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=10)
        fig.tight_layout()
        return atomic_write_figure(path, fig, dpi=120)
    finally:
        plt.close(fig)


def _finite(value) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def write_comparison(
    records: Sequence[Mapping],
    out_dir: str | Path,
    metrics: Sequence[str],
    title: str,
    group_key: str = "method",
    labels: Optional[Mapping[str, str]] = None,
    references: Optional[Mapping[str, Mapping[str, float]]] = None,
    stem: str = "comparison",
    extra: Optional[Mapping] = None,
    plot_metrics: Optional[Sequence[str]] = None,
    metric_digits: Optional[Mapping[str, int]] = None,
    notes: Optional[str] = None,
) -> Dict[str, Path]:
    """Write ``<stem>.md`` (table), ``<stem>.png`` (bar chart) and ``<stem>.json`` (records, rows, title, extra).

    ``plot_metrics`` (default: ``metrics``) are the bars of the chart, e.g. leaving out a time column;
    ``notes`` is Markdown appended under the table in ``<stem>.md``.
    Returns {"table": path, "plot": path, "records": path}.
    """
    out_dir = Path(out_dir)
    rows = summarise(records, group_key, metrics)
    table = markdown_table(rows, metrics, group_key, labels=labels, references=references, title=title,
                           metric_digits=metric_digits)
    plotted = list(plot_metrics) if plot_metrics is not None else list(metrics)
    paths = {
        "table": atomic_write_text(out_dir / f"{stem}.md", table + (f"\n{notes.rstrip()}\n" if notes else "")),
        "plot": bar_chart(rows, plotted, out_dir / f"{stem}.png", group_key, title=title, labels=labels),
        "records": atomic_write_json(out_dir / f"{stem}.json", {
            "title": title, "group_key": group_key, "metrics": list(metrics), "summary": rows,
            "records": [dict(r) for r in records], **({"references": references} if references else {}),
            **(dict(extra) if extra else {}),
        }),
    }
    return paths
