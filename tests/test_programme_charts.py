"""The programme's burn-down chart (`cx report programme`, `?format=png`) can be read: its line
is drawn inside the plot, not on its frame, its tick labels are plain yuan, and its labels are
Chinese first where a Chinese font can draw them; the report's CSV is headed Chinese first."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from settlement import charts
from settlement.charts import cjk_font
from settlement.reports import BURN_DOWN_COLOUR, burn_down_figure, burn_down_png, report_csv
from tests.conftest import missing


def test_a_large_budget_barely_spent_draws_a_visible_line_with_plain_labels(
    tmp_path: Path,
) -> None:
    budget = 100_000_000  # 1,000,000 元: matplotlib's default axis said "1e6" and hid the line
    report = {
        "programme_id": "hangzhou",
        "budget": budget,
        "burn_down": [
            {"day": "20271201", "spent": 180_000, "remaining": budget - 180_000},
            {"day": "20271202", "spent": 45_000, "remaining": budget - 225_000},
        ],
    }
    axes = burn_down_figure(report).axes[0]
    axes.figure.canvas.draw()
    assert axes.yaxis.get_offset_text().get_text() == ""
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert "1,000,000" in labels, labels
    path = tmp_path / "chart.png"
    burn_down_png(report, path)
    image = Image.open(path).convert("RGB")
    target = tuple(int(BURN_DOWN_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    height = image.size[1]
    pixels = image.load()
    assert pixels is not None
    # Inside the plot, clear of its frame (the saved image has the figure's size and dpi).
    box = axes.get_window_extent()
    top, bottom = round(height - box.y1) + 5, round(height - box.y0) - 5
    drawn = [
        (x, y)
        for y in range(top, bottom)
        for x in range(round(box.x0) + 5, round(box.x1) - 5)
        if all(abs(pixels[x, y][i] - target[i]) < 40 for i in range(3))
    ]
    assert len(drawn) > 300, len(drawn)


REPORT = {
    "programme_id": "hangzhou",
    "budget": 1_000_000,
    "granted": 600_000,
    "reserved": 50_000,
    "committed": 180_000,
    "clawed_back": 20_000,
    "remaining": 820_000,
    "burn_down": [{"day": "20271201", "spent": 180_000, "remaining": 820_000}],
    "by_enterprise": [
        {
            "name": "杭州算力科技有限公司",
            "uscc": "91330100MA2AXXXX0X",
            "account_id": "hz-lab",
            "purchases": 2,
            "units": {"card-hour": 12, "million-tokens": 3},
            "gross": 600_000,
            "voucher": 180_000,
        }
    ],
    "by_region": [],
    "by_class": [],
}


def test_the_report_csv_heads_every_column_chinese_first_with_amounts_in_fen() -> None:
    rows = list(csv.reader(io.StringIO(report_csv(REPORT))))
    assert rows[0] == [
        "项目 programme",
        "预算(分) budget",
        "已授予(分) granted",
        "已预留(分) reserved",
        "已使用(分) committed",
        "已追回(分) clawed_back",
        "剩余(分) remaining",
    ]
    assert rows[1] == ["hangzhou", "1000000", "600000", "50000", "180000", "20000", "820000"]
    assert rows[3] == ["日期 day", "当日使用(分) spent", "剩余(分) remaining"]
    assert rows[4] == ["20271201", "180000", "820000"]
    units = ["卡时 card-hour", "核时 core-hour", "百万tokens million-tokens"]
    tail = ["购买笔数 purchases", *units, "总额(分) gross", "算力券(分) voucher"]
    enterprise = ["企业 enterprise", "统一社会信用代码 credit code", "账户 account"]
    assert rows[6] == [*enterprise, *tail]
    named = ["杭州算力科技有限公司", "91330100MA2AXXXX0X", "hz-lab"]
    assert rows[7] == [*named, "2", "12", "0", "3", "600000", "180000"]
    assert rows[9] == ["地区 region", *tail]
    assert rows[11] == ["资源类型 class", *tail]


def _texts(figure: Any) -> list[str]:
    axes = figure.axes[0]
    return [
        axes.get_title(),
        axes.get_ylabel(),
        axes.get_xlabel(),
        axes.get_xticklabels()[0].get_text(),
    ]


def test_the_burn_down_png_is_labelled_chinese_first_with_no_glyph_missing(
    tmp_path: Path,
) -> None:
    if cjk_font() is None:
        missing("no Chinese font matplotlib can draw with: make test installs one (make fonts)")
    figure = burn_down_figure(REPORT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        figure.canvas.draw()
        burn_down_png(REPORT, tmp_path / "chart.png")
    assert _texts(figure) == [
        "算力券项目 hangzhou 预算消耗 voucher programme hangzhou: budget burn-down",
        "剩余预算(元) remaining budget (CNY)",
        "日期(中国标准时间) day (China Standard Time)",
        "起始 start",
    ]


def test_without_a_chinese_font_the_burn_down_is_labelled_in_english(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(charts, "cjk_font", lambda: None)
    assert _texts(burn_down_figure(REPORT)) == [
        "voucher programme hangzhou: budget burn-down",
        "remaining budget (CNY)",
        "day (China Standard Time)",
        "start",
    ]
