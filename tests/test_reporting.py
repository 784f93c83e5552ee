"""imf_kg.reporting: mean ± std rows, Markdown table, bar chart, and the three comparison files."""

from __future__ import annotations

import json
import math

import pytest

from imf_kg.errors import ToolkitError
from imf_kg.reporting import bar_chart, markdown_table, summarise, write_comparison

RECORDS = [
    {"method": "ima", "seed": 0, "micro_f1": 0.80, "macro_f1": 0.70},
    {"method": "hgt", "seed": 0, "micro_f1": 0.60, "macro_f1": 0.50},
    {"method": "ima", "seed": 1, "micro_f1": 0.84, "macro_f1": 0.72},
    {"method": "ima", "seed": 2, "micro_f1": 0.82, "macro_f1": None},
]


def test_summarise_mean_and_sample_std_in_order_of_appearance():
    rows = summarise(RECORDS, "method", ["micro_f1", "macro_f1"])
    assert [r["method"] for r in rows] == ["ima", "hgt"]
    ima, hgt = rows
    assert ima["n"] == 3 and ima["micro_f1_n"] == 3 and ima["macro_f1_n"] == 2
    assert ima["micro_f1_mean"] == pytest.approx(0.82)
    assert ima["micro_f1_std"] == pytest.approx(0.02)  # sample std of .80, .84, .82
    assert ima["macro_f1_mean"] == pytest.approx(0.71)
    assert hgt["micro_f1_std"] == 0.0  # a single run
    assert math.isnan(summarise(RECORDS, "method", ["mrr"])[0]["mrr_mean"])


def test_summarise_refuses_records_without_the_group_key():
    with pytest.raises(ToolkitError, match="method"):
        summarise([{"seed": 0, "mrr": 0.3}])


def test_markdown_table_cells_and_references():
    rows = summarise(RECORDS, "method", ["micro_f1", "macro_f1"])
    table = markdown_table(rows, ["micro_f1", "macro_f1"], labels={"micro_f1": "Micro-F1"},
                           references={"ima": {"micro_f1": 0.7578}}, title="T")
    lines = table.strip().splitlines()
    assert lines[0] == "### T"
    assert lines[2] == "| method | runs | Micro-F1 | macro_f1 |"
    assert "| ima | 3 | 0.8200 ± 0.0200 (paper 0.7578) | 0.7100 ± 0.0141 |" in lines
    assert "| hgt | 1 | 0.6000 ± 0.0000 | 0.5000 ± 0.0000 |" in lines


def test_bar_chart_writes_a_png(tmp_path):
    rows = summarise(RECORDS, "method", ["micro_f1", "macro_f1"])
    path = bar_chart(rows, ["micro_f1", "macro_f1"], tmp_path / "sub" / "plot.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_comparison_writes_table_plot_and_json(tmp_path):
    paths = write_comparison(RECORDS, tmp_path, ["micro_f1", "macro_f1"], "IMDB", extra={"seeds": [0, 1, 2]})
    assert set(paths) == {"table", "plot", "records"}
    assert "0.8200 ± 0.0200" in paths["table"].read_text()
    assert paths["plot"].stat().st_size > 1000
    saved = json.loads(paths["records"].read_text())
    assert saved["records"] == RECORDS and saved["seeds"] == [0, 1, 2] and saved["title"] == "IMDB"
    assert saved["summary"][0]["micro_f1_mean"] == pytest.approx(0.82)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files
