"""What the charts of reports (the programme's burn-down PNG, the PDFs' plots) are labelled in:
Chinese first where matplotlib has a Chinese font to draw it with, else English alone, as a
label of missing glyphs (boxes) would say nothing to anyone."""

from __future__ import annotations

from functools import cache
from pathlib import Path

CJK_FONT_FILE = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
"""A TrueType Chinese font to embed, where installed (the image's `fonts-wqy-microhei`)."""
CJK_FAMILIES = (
    "WenQuanYi Micro Hei",
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
)
"""Font families that draw Simplified Chinese, in the order the charts prefer them."""


@cache
def cjk_font() -> str | None:
    """The family of a Chinese font matplotlib knows (registering the one the image installs),
    or None where the machine has none. Cached: matplotlib would add the file again each time."""
    from matplotlib import font_manager

    if CJK_FONT_FILE.exists():
        font_manager.fontManager.addfont(str(CJK_FONT_FILE))
    known = {entry.name for entry in font_manager.fontManager.ttflist}
    return next((family for family in CJK_FAMILIES if family in known), None)


def use_cjk_font() -> bool:
    """Draw the charts' text in the Chinese font, with matplotlib's own for what it lacks;
    whether there is one."""
    import matplotlib

    family = cjk_font()
    if family is None:
        return False
    matplotlib.rcParams["font.family"] = [family, "DejaVu Sans"]
    return True


def chart_label(chinese: str, english: str) -> str:
    """A chart's label, Chinese first where matplotlib can draw Chinese, else English."""
    return f"{chinese} {english}" if cjk_font() is not None else english
