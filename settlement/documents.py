"""PDF documents: a buy order's VAT invoice data and a voucher programme's report for the city.

Text and plots are set in WenQuanYi Micro Hei, embedded in the PDF, when the machine has it
(Debian's fonts-wqy-microhei, which `make test` installs): Chinese then reads in every viewer.
Without it, text names Adobe's standard Chinese font STSong-Light (not embedded: readers with
Chinese fonts substitute one) and plot labels are English only. Ticks are plain 元 or 万元
(no scientific offset).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from exchange.domain.catalogue import cst_iso
from settlement.charts import CJK_FONT_FILE, chart_label, use_cjk_font
from settlement.statements import MILLION_TOKENS_ZH, TOKENS, UNITS_ZH, yuan


def _register_font() -> str:
    """The font the documents' text is set in, registered with reportlab."""
    if CJK_FONT_FILE.exists():
        pdfmetrics.registerFont(TTFont("WenQuanYiMicroHei", str(CJK_FONT_FILE), subfontIndex=0))
        return "WenQuanYiMicroHei"
    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    return "STSong-Light"


FONT = _register_font()
LINE_COLOUR = "#c0392b"
"""The colour of the line of vouchers used (a test looks for it on the rendered page)."""
BAR_COLOUR = "#2c7fb8"
YUAN = 100
TEN_THOUSAND_YUAN = 1_000_000
"""Fen in one 万元: plots switch to 万元 when the budget reaches 100 万元."""

TITLE = ParagraphStyle("title", fontName=FONT, fontSize=15, leading=20, spaceAfter=6)
BODY = ParagraphStyle("body", fontName=FONT, fontSize=9, leading=13)


def _table(rows: Sequence[Sequence[Any]], widths: Sequence[float] | None = None) -> Table:
    table = Table([[str(cell) for cell in row] for row in rows], colWidths=widths)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT, 8),
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke),
                ("ALIGN", (3, 1), (-1, -1), "RIGHT"),
            ]
        )
    )
    return table


def _pdf(flowables: list[Any]) -> bytes:
    out = io.BytesIO()
    SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm).build(flowables)
    return out.getvalue()


def invoice_pdf(invoice: Mapping[str, Any]) -> bytes:
    """The invoice data as a one-page PDF, amounts in 元."""
    seller, buyer = invoice["seller"], invoice["buyer"]
    parties = [
        ["", "名称 name", "纳税人识别号 USCC"],
        ["销售方 seller", seller["name"], seller["uscc"] or "-"],
        ["购买方 buyer", buyer["name"], buyer["uscc"] or "未登记 not registered"],
    ]
    items = [["项目名称 item", "规格型号 spec", "单位 unit", "数量 qty", "单价 price",
              "金额 amount", "税率 rate", "税额 tax"]]  # fmt: skip
    for item in invoice["items"]:
        price = item["unit_price"]
        unit, quantity = item["unit"], str(item["quantity"])
        if unit == TOKENS:
            # A bundle's refund, in the 百万tokens its purchase is shown in, every digit kept.
            sign = "-" if item["quantity"] < 0 else ""
            unit, quantity = MILLION_TOKENS_ZH, sign + _millions(abs(item["quantity"]))
        items.append(
            [
                item["item"],
                item["spec"],
                unit,
                quantity,
                "" if price is None else yuan(price),
                yuan(item["amount"]),
                f"{item['tax_rate_bps'] // 100}%",
                yuan(item["tax"]),
            ]
        )
    items.append(["合计 total", "", "", "", "", yuan(invoice["amount"]), "",
                  yuan(invoice["tax"])])  # fmt: skip
    return _pdf(
        [
            Paragraph(f"增值税发票数据 VAT invoice data: {invoice['order_id']}", TITLE),
            Paragraph(invoice["invoice_type"], BODY),
            Spacer(1, 4 * mm),
            _table(parties, [30 * mm, 90 * mm, 60 * mm]),
            Spacer(1, 4 * mm),
            _table(items),
            Spacer(1, 4 * mm),
            Paragraph(
                f"价税合计 (大写) {invoice['total_in_words']} (小写) ¥{yuan(invoice['total'])} "
                "total incl. tax",
                BODY,
            ),
            Paragraph(f"备注 remarks: {invoice['remarks']}", BODY),
            Paragraph(f"舍入 rounding: {invoice['rounding']}", BODY),
        ]
    )


LINE_NAMES = {
    "deposits": "入金 deposits",
    "withdrawals": "出金 withdrawals",
    "purchases": "购买算力 compute bought (gross)",
    "fees": "交易服务费 fees",
    "rebates": "返佣 maker rebates",
    "vouchers": "政府算力券 government vouchers",
    "voucher_clawbacks": "算力券追回 voucher clawbacks",
    "fee_concessions": "平台手续费减免 platform fee concessions",
    "platform_discounts": "平台折扣 platform discounts",
    "refunds": "未交付退款 refunds of undelivered units",
    "penalties_received": "收到违约金 penalties received",
    "penalties_paid": "支付违约金 penalties paid",
    "sales": "销售收入 sales",
    "sale_fees": "销售手续费 fees on sales",
    "other": "其他 other",
}
"""What a statement's lines are called on paper, Chinese first."""
PARTS = {
    "government": "政府 government (vouchers)",
    "platform": "平台 platform",
    "firm": "企业 firm",
}


def statement_pdf(statement: Mapping[str, Any]) -> bytes:
    """A month's statement as PDF: every line in 元, the opening and closing money and who
    bore the cost of the compute bought."""
    lines = [["项目 line", "金额 amount (元)"]] + [
        [LINE_NAMES[name], yuan(amount)] for name, amount in statement["lines"].items() if amount
    ]
    split = statement["split"]
    shares = split["shares_bps"] or {}
    parts = [["承担方 borne by", "金额 amount (元)", "占比 share (bps)"]] + [
        [label, yuan(split[part]), shares.get(part, "-")] for part, label in PARTS.items()
    ]
    return _pdf(
        [
            Paragraph(f"对账单 Statement: {statement['account_id']}, {statement['month']}", TITLE),
            Paragraph("中国标准时间 China Standard Time; 金额单位 元 (CNY)", BODY),
            Spacer(1, 4 * mm),
            _table(
                [
                    ["期初 opening", yuan(statement["opening"])],
                    ["本期净变动 net change", yuan(statement["net_change"])],
                    ["期末 closing", yuan(statement["closing"])],
                ]
            ),
            Spacer(1, 4 * mm),
            _table(lines, [110 * mm, 50 * mm]),
            Spacer(1, 4 * mm),
            Paragraph(f"算力成本 Cost of compute bought: {yuan(split['cost'])} 元", BODY),
            _table(parts),
            Paragraph(
                "占比按最大余数法取整, 合计 10000 bps. Shares are rounded down, the basis points "
                "left over going to the largest remainders, so they sum to 10,000.",
                BODY,
            ),
            *_cascades_table(statement.get("cascades", [])),
            *_bundles_section(statement.get("bundles", [])),
        ]
    )


def _cascades_table(cascades: list[Mapping[str, Any]]) -> list[Any]:
    """The strips that became positions in their hourly contracts this month, if any."""
    if not cascades:
        return []
    roles = {"holder": "持有 held", "provider": "售出 sold"}
    rows = [
        [
            "合约 strip",
            "转换时间 cascaded (CST)",
            "身份 role",
            "每小时数量 units/hour",
            "小时 hours",
        ]
    ]
    rows += [
        [c["symbol"], cst_iso(c["ts"]), roles[c["role"]], str(c["units"]), str(c["hours"])]
        for c in cascades
    ]
    return [
        Spacer(1, 4 * mm),
        Paragraph("周/夜/月合约转为小时合约 Strips cascaded into their hourly contracts", BODY),
        _table(rows),
    ]


def _bundles_section(bundles: list[Mapping[str, Any]]) -> list[Any]:
    """The month's token bundles and their draw-down, if any: 百万 tokens and 元."""
    if not bundles:
        return []
    roles = {"holder": "持有\nholder", "provider": "供应\nprovider"}
    rows = [
        [
            "合约\ncontract", "角色\nrole", "买入 bought\n(百万 tokens)",
            "已用 used\n(百万 tokens)", "已付\npaid (元)", "退款\nrefunded (元)",
            "算力券\nvoucher (元)", "退回\nreturned (元)",
        ]
    ] + [
        [
            b["symbol"], roles[b["role"]], str(b["bought"]), _millions(b["used_tokens"]),
            yuan(b["paid"]), yuan(b["refunded"]), yuan(b.get("voucher", 0)),
            yuan(b.get("voucher_returned", 0)),
        ]
        for b in bundles
    ]  # fmt: skip
    return [
        Spacer(1, 4 * mm),
        Paragraph("Token 资源包及用量 Token bundles and their draw-down", BODY),
        _table(rows),
    ]


def _millions(tokens: int) -> str:
    """Tokens as millions with every digit: 3,666,663 tokens are 3.666663 百万 tokens."""
    return f"{tokens // 1_000_000}.{tokens % 1_000_000:06d}"


def _scale(budget: int) -> tuple[int, str]:
    """Fen per plotted unit and the unit's name: 万元 for budgets of 100 万元 or more."""
    if budget >= 100 * TEN_THOUSAND_YUAN:
        return TEN_THOUSAND_YUAN, "10,000 CNY (wan yuan)"
    return YUAN, "CNY (yuan)"


def _plot(draw: Any, width_in: float = 7.0, height_in: float = 3.0) -> Image:
    """A matplotlib figure drawn by `draw(axes)`, as a reportlab image."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import FuncFormatter

    use_cjk_font()
    figure, axes = pyplot.subplots(figsize=(width_in, height_in))
    draw(axes)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _plain(value)))
    axes.grid(True, color="#dddddd")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=120)
    pyplot.close(figure)
    out.seek(0)
    return Image(out, width=width_in * 25 * mm, height=height_in * 25 * mm)


def _premium(premium_bps: int | None) -> str:
    """What the voucher's purchases paid against the others, in words: there is nothing to
    compare while nothing in the contracts it paid for was bought without it."""
    if premium_bps is None:
        return "无可比较 no other buyers: nothing in these contracts was bought without the voucher"
    return (
        f"purchases with the voucher paid {premium_bps} bps more than the others' average "
        "price per unit"
    )


def _unit(unit: str) -> str:
    """A unit, Chinese first: 卡时 card-hour, 核时 core-hour, 百万tokens million-tokens."""
    return f"{UNITS_ZH.get(unit, MILLION_TOKENS_ZH)} {unit}"


def _plain(value: float) -> str:
    """A tick label in plain digits with thousands separators and at most two decimals."""
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def programme_pdf(report: Mapping[str, Any]) -> bytes:
    """The programme's report for the city: budget and use, vouchers used and clawed back by
    month, compute bought per 元 of voucher, the spread across enterprises, and what the
    voucher's purchases paid per unit against the others in the same contracts."""
    city = report["city"]
    per, unit = _scale(report["budget"])
    summary = [
        ["预算 budget", "已授予 granted", "已使用 used", "已追回 clawed back",
         "净使用 net used", "剩余 remaining"],
        [yuan(report[k]) for k in ("budget", "granted", "committed", "clawed_back",
                                   "net_used", "remaining")],
    ]  # fmt: skip
    months = [["月份 month", "使用 used", "追回 clawed back", "净 net"]] + [
        [m["month"], yuan(m["used"]), yuan(m["clawed_back"]), yuan(m["used"] - m["clawed_back"])]
        for m in city["by_month"]
    ]
    compute = [["单位 unit", "数量 units", "每元算力券 units per 元 of voucher"]] + [
        [_unit(c["unit"]), c["units"], c["units_per_yuan"]] for c in city["compute_per_yuan"]
    ]
    spread = city["spread"]
    prices = [["合同 contract", "单位 unit", "用券 with voucher", "用券均价 avg",
               "其他 others", "其他均价 others avg", "差 premium bps"]] + [
        [p["symbol"], _unit(p["unit"]), p["holder_units"], yuan(p["holder_avg"]),
         p["other_units"], yuan(p["other_avg"]), p["premium_bps"]]
        for p in city["prices"]
    ]  # fmt: skip

    def used_over_time(axes: Any) -> None:
        days = ["start"] + [
            f"{e['day'][:4]}-{e['day'][4:6]}-{e['day'][6:]}" for e in city["by_day"]
        ]
        used = [0.0] + [entry["net_used"] / per for entry in city["by_day"]]
        budget = report["budget"] / per
        axes.plot(range(len(days)), used, color=LINE_COLOUR, linewidth=2.5, marker="o")
        # The budget line only when use comes near it: otherwise it would squash what was
        # used onto the axis.
        if max(used, default=0) * 2 >= budget:
            axes.axhline(budget, color="#555555", linestyle="--", label="budget")
            axes.legend(loc="upper left")
        axes.set_xticks(range(len(days)), days, rotation=30, ha="right")
        axes.set_ylim(bottom=0, top=max(max(used, default=0) * 1.25, 1.0))
        axes.set_ylabel(chart_label("累计净使用", f"used to date, {unit}"))
        axes.set_xlabel(chart_label("日期", "day (China Standard Time)"))

    def distribution(axes: Any) -> None:
        amounts = [e["net_voucher"] / YUAN for e in spread["by_enterprise"]]
        axes.bar(range(len(amounts)), amounts, color=BAR_COLOUR)
        axes.set_xticks(range(len(amounts)), [e["name"] for e in spread["by_enterprise"]],
                        rotation=30, ha="right")  # fmt: skip
        axes.set_ylabel(chart_label("净算力券", "net voucher, CNY (yuan)"))
        axes.set_xlabel(chart_label("企业(从大到小)", "enterprise, largest first"))

    flowables: list[Any] = [
        Paragraph(
            f"算力券项目报告 Compute voucher programme report: {report['programme_id']}", TITLE
        ),
        Paragraph(
            f"发放方 issuer: {report.get('issuer') or '-'}; 金额单位 元 (CNY); "
            "时间为中国标准时间 China Standard Time",
            BODY,
        ),
        Spacer(1, 3 * mm),
        _table(summary),
        Spacer(1, 3 * mm),
        Paragraph("净使用随时间 Net voucher used over time", BODY),
        _plot(used_over_time),
        Paragraph("按月 By month", BODY),
        _table(months),
        Spacer(1, 3 * mm),
        Paragraph(
            "每元算力券购得算力 Compute bought with vouchers per 元 of voucher committed", BODY
        ),
        _table(compute),
        Spacer(1, 3 * mm),
        Paragraph(
            f"补贴分布 Spread of subsidy: {spread['enterprises']} 家企业 enterprises; "
            f"前10% top 10% ({spread['top_count']}) received {spread['top_10pct_bps']} bps; "
            f"基尼系数 Gini {spread['gini_bps']} bps",
            BODY,
        ),
        _plot(distribution),
        Paragraph(
            "用券购买与同一合同其他购买的单价 Gross price per unit, purchases with the voucher "
            f"vs the others, same contracts: {_premium(city['holder_premium_bps'])}",
            BODY,
        ),
        _table(prices),
    ]
    return _pdf(flowables)
