"""The programme's burn-down chart (`cx report programme`, `?format=png`) can be read: its line
is drawn inside the plot, not on its frame, and its tick labels are plain yuan."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from settlement.reports import BURN_DOWN_COLOUR, burn_down_figure, burn_down_png


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
