"""The compute supermarket in headless Chromium (Debian's package, driven by Playwright), as each
role uses it: a buyer finds the cheapest fitting product, compares, reads its price history, lets
帮我选 plan and buy a need, and buys with a voucher; a provider deposits a night schedule and
sees it sold; an enterprise registers and applies for a voucher and a programme administrator
approves its application; a buyer bids a need in the day-ahead auction (日前市场) and reads
the clearing prices and its result once it clears; an operator bands a product, halts and
resumes a contract and reads the dead letters. Every view passes axe-core's WCAG 2 A/AA rules
(labels, names, contrast) and its controls are reached by the keyboard. Screenshots of each
view at desktop and phone widths go to reports/screenshots/ (and to docs/img/ with
CX_SCREENSHOTS=docs).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cx_client import ExchangeClient
from playwright.async_api import Browser, Page, async_playwright, expect

from exchange.domain.catalogue import CHINA_STANDARD_TIME as CST
from tests.conftest import missing
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle
from tests.e2e.test_day_ahead_api import (
    BEFORE_GATE_MS,
    DATE,
    GATE_MS,
    GZ,
    NM,
    _at,
    _fund,
    _offer,
)
from tests.e2e.test_day_ahead_api import _settings as _day_ahead_settings

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = (
    ROOT / "docs" / "img"
    if os.environ.get("CX_SCREENSHOTS") == "docs"
    else ROOT / "reports" / "screenshots"
)
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
GZ0, GZ1 = "H100-80G.GZ.20271201T00", "H100-80G.GZ.20271201T01"
YRD0, YRD1 = "H100-80G.YRD.20271201T00", "H100-80G.YRD.20271201T01"
NMG0 = "A100-80G.NMG.20271201T00"
USCC = "91330106MA2B3C4D5D"
TIMEOUT_MS = 15_000


def _required(path: Path, how: str) -> Path:
    if not path.exists():
        missing(f"{path} is required ({how})")
    return path


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium (`make chromium` installs it) and axe-core (`make web`)."""
    _required(AXE, "make web installs it")
    return _required(CHROMIUM, "make chromium installs it")


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def _page(browser: Browser, url: str, key: str | None, errors: list[str]) -> Page:
    page = await browser.new_page(viewport=DESKTOP, locale="zh-CN")
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url + "/")
    await expect(page.get_by_test_id("nav-market")).to_have_text("选购")
    if key is not None:
        await page.get_by_test_id("api-key").fill(key)
        await page.get_by_test_id("use-key").click()
        await expect(page.get_by_test_id("who")).not_to_contain_text("未登录")
    return page


async def _check_view(page: Page, name: str, keyboard: list[str]) -> None:
    """The view passes axe-core's WCAG 2 A and AA rules, the keyboard reaches `keyboard` (test
    ids) from the top of the page, and screenshots are taken at desktop and phone widths."""
    await page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = await page.evaluate(
        "async () => await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa']})"
    )
    violations = [
        (v["id"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
    ]
    assert violations == [], f"{name}: {violations}"
    seen: set[str] = set()
    await page.locator("body").focus()
    for _ in range(120):
        await page.keyboard.press("Tab")
        testid = await page.evaluate("() => document.activeElement?.dataset?.testid || ''")
        seen.add(testid)
        if set(keyboard) <= seen:
            break
    assert set(keyboard) <= seen, f"{name}: not reached by Tab: {set(keyboard) - seen}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}-desktop.png", full_page=True)
    await page.set_viewport_size(PHONE)
    await page.wait_for_timeout(300)  # charts redraw at the new width on the next frames
    await page.screenshot(path=SCREENSHOTS / f"{name}-phone.png", full_page=True)
    await page.set_viewport_size(DESKTOP)
    await page.wait_for_timeout(300)


async def _setup_market(exchange: RunningExchange) -> tuple[str, str]:
    """Asks in three products, a trade for the price history, a voucher grant for the buyer;
    the buyer's and provider's keys."""
    buyer_key = await exchange.key_for("sme-web", "buyer")
    provider_key = await exchange.key_for("idc-web", "provider")
    admin = await exchange.as_("city-admin", "programme_admin")
    programme = {
        "programme_id": "hangzhou-2027", "issuer": "Hangzhou", "budget": 10_000_000,
        "rate_bps": 3_000, "cap_per_contract": 100_000, "cap_per_enterprise": 1_000_000,
        "regions": ["YRD"], "valid_from": 0, "valid_until": 1_830_297_600_000,
    }  # fmt: skip
    assert (await admin.post("/v1/programmes", json=programme)).status_code == 201
    buyer_client = await exchange.as_("sme-web")
    enterprise = {
        "name": "杭州小微算力科技有限公司",
        "uscc": USCC,
        "kind": "sme",
        "city": "hangzhou",
    }
    assert (await buyer_client.post("/v1/accounts/sme-web/enterprise", json=enterprise)).is_success
    application = {"application_id": "hz-1", "amount": 500_000, "intended_use": "模型微调"}
    applied = await buyer_client.post("/v1/programmes/hangzhou-2027/applications", json=application)
    assert applied.is_success, applied.text
    grant = {"application_id": "hz-1", "limit": 500_000}
    assert (await admin.post("/v1/programmes/hangzhou-2027/grants", json=grant)).is_success
    async with (
        ExchangeClient(exchange.base_url, buyer_key) as buyer,
        ExchangeClient(exchange.base_url, provider_key) as provider,
    ):
        await buyer.deposit_cash(1_000_000)
        for symbol, price in ((GZ0, 1900), (GZ1, 1900), (YRD0, 2000), (YRD1, 2000), (NMG0, 1100)):
            await provider.deposit_capacity(symbol, 20)
            await provider.place_order(symbol, "sell", price, 10)
        # One trade, so the GZ product has a price history.
        await buyer.place_order(GZ0, "buy", 1900, 1)
    return buyer_key, provider_key


async def test_a_buyer_finds_the_cheapest_product_plans_a_need_and_buys_with_a_voucher(
    tmp_path: Path, browser: Browser
) -> None:
    errors: list[str] = []
    async with running_exchange(settings_for(tmp_path)) as exchange:
        buyer_key, _ = await _setup_market(exchange)
        page = await _page(browser, exchange.base_url, buyer_key, errors)

        # The catalogue: products cheapest after voucher first. YRD asks 20.00 but the buyer's
        # voucher pays 30% of it there, so 14.00 beats GZ's 19.00; A100 at 11.00 a card-hour is
        # 34.88 per standard card-hour.
        first = page.locator("article.product").first
        await expect(first).to_have_attribute("data-testid", "product-H100-80G.YRD")
        await expect(page.get_by_test_id("lowest-ask-H100-80G.YRD")).to_have_text("20.00 元/卡时")
        await expect(page.get_by_test_id("lowest-net-H100-80G.YRD")).to_have_text("14.00 元/卡时")
        await expect(page.get_by_test_id("per-std-A100-80G.NMG")).to_have_text("34.88 元/标准卡时")
        # Filters: at most 15 yuan per standard card-hour after voucher leaves only YRD.
        await page.get_by_test_id("filter-max").fill("15")
        await expect(page.locator("article.product")).to_have_count(1)
        await page.get_by_test_id("filter-max").fill("")
        await page.get_by_test_id("filter-region").select_option("GZ")
        await expect(page.locator("article.product")).to_have_count(2)  # H100 and CPU
        await page.get_by_test_id("filter-region").select_option("")

        # Compare two products side by side.
        await page.get_by_test_id("compare-H100-80G.YRD").check()
        await page.get_by_test_id("compare-H100-80G.GZ").check()
        table = page.get_by_test_id("compare-table")
        await expect(table).to_contain_text("14.00 元/标准卡时")
        await expect(table).to_contain_text("19.00 元/标准卡时")

        # The GZ product's price history (from its one trade) and its delivery hours in CST.
        await page.get_by_test_id("details-H100-80G.GZ").click()
        await expect(page.get_by_test_id("history-chart")).to_be_visible()
        await expect(page.get_by_test_id(f"hour-{GZ0}")).to_contain_text("12/01 00:00")
        await expect(page.get_by_test_id(f"hour-{GZ0}")).to_contain_text("交易中")
        # Its one trade, shown once.
        await expect(page.get_by_test_id("trades").get_by_test_id("trade")).to_have_count(1)
        await expect(page.get_by_test_id("trades")).to_contain_text("19.00 元")
        await _check_view(
            page, "market", ["api-key", "nav-wizard", "filter-region", "details-H100-80G.YRD"]
        )

        # English on the switch, every string from the other catalogue.
        await page.get_by_test_id("language").click()
        await expect(page.get_by_test_id("nav-wizard")).to_have_text("Help me choose")
        await expect(page.get_by_test_id("lowest-net-H100-80G.YRD")).to_have_text(
            "CNY 14.00 / card-hour"
        )
        await page.get_by_test_id("language").click()
        await expect(page.get_by_test_id("nav-wizard")).to_have_text("帮我选")

        # 帮我选: fine-tuning a 7B model on 0.1B tokens: the estimate per card, then the
        # plans for "I know the cards I need" (2 H100 a hour for 2 hours), bought in one click.
        await page.get_by_test_id("nav-wizard").click()
        await page.get_by_test_id("hours").fill("2")
        await page.get_by_test_id("run-wizard").click()
        summary = page.get_by_test_id("estimate-summary")
        await expect(summary).to_contain_text("4200 PFLOP")
        await expect(summary).to_contain_text("134.4 GB")
        await expect(page.get_by_test_id("estimate-H100-80G")).to_contain_text("是")
        # A tenth of the tokens: one H100 an hour would do the work but cannot hold the model.
        await page.get_by_test_id("tokens").fill("0.01")
        await page.get_by_test_id("run-wizard").click()
        await expect(page.get_by_test_id("estimate-H100-80G")).to_contain_text("放不下模型")
        await expect(page.get_by_test_id("estimate-H20")).to_contain_text("是")
        await page.get_by_test_id("task-known").check()
        await page.get_by_test_id("known-cards").fill("2")
        await page.get_by_test_id("run-wizard").click()
        explanation = page.get_by_test_id("plan-explanation")
        await expect(explanation).to_contain_text("推荐 H100-80G.GZ")
        await expect(explanation).to_contain_text("76.00 元")
        await expect(explanation).to_contain_text("在 2 个可行方案中最便宜")
        await expect(explanation).to_contain_text("便宜 4.00 元")
        # Ranked before vouchers, GZ wins; the buyer's voucher (YRD only) would make YRD
        # cheaper, and the page says so.
        await expect(explanation).to_contain_text("H100-80G.YRD 券后只需 56.00 元")
        # Naming the voucher ranks after it: YRD at 80.00, 56.00 after the voucher's 30%.
        await page.get_by_test_id("wizard-voucher").fill("hangzhou-2027")
        await page.get_by_test_id("run-wizard").click()
        await expect(explanation).to_contain_text("推荐 H100-80G.YRD")
        await expect(explanation).to_contain_text("共 80.00 元（券后 56.00 元）")
        await _check_view(page, "wizard", ["task-known", "hours", "run-wizard", "place-need"])
        await page.get_by_test_id("place-need").click()
        await expect(page.get_by_test_id("need-result")).to_contain_text("全部成交")

        # An order with a voucher, answered with matching's result.
        await page.goto(f"{exchange.base_url}/#/orders?symbol={YRD0}")
        await expect(page.get_by_test_id("order-price")).to_have_value("20.00")
        await page.get_by_test_id("order-quantity").fill("2")
        await page.get_by_test_id("order-voucher").fill("hangzhou-2027")
        await page.get_by_test_id("place-order").click()
        await expect(page.get_by_test_id("order-result")).to_contain_text("全部成交：2/2")
        await expect(page.get_by_test_id("fills").get_by_test_id("fill")).to_have_count(4)
        # The statement of the month of the latest fill and the voucher order's VAT invoice.
        for button, name in (("statement-pdf", "statement-"), ("invoice-pdf", "invoice-")):
            async with page.expect_download() as downloading:
                await page.locator(f"[data-testid^='{button}']").first.click()
            download = await downloading.value
            assert download.suggested_filename.startswith(name)
            saved = tmp_path / download.suggested_filename
            await download.save_as(saved)
            assert saved.read_bytes().startswith(b"%PDF")
        # A resting bid, with self-trade prevention of its own: amend it, then cancel it.
        await page.get_by_test_id("order-price").fill("15.00")
        await page.get_by_test_id("order-quantity").fill("1")
        await page.get_by_test_id("order-voucher").fill("")
        await page.get_by_test_id("order-stp_group").fill("desk-a")
        await page.get_by_test_id("order-stp_mode").select_option("cancel_both")
        await expect(page.get_by_test_id("order-stp_mode")).to_contain_text("两单都撤销")
        async with page.expect_request("**/v1/orders?answer=result") as placing:
            await page.get_by_test_id("place-order").click()
        sent = (await placing.value).post_data_json
        assert (sent["stp_group"], sent["stp_mode"]) == ("desk-a", "cancel_both")
        await expect(page.get_by_test_id("order-result")).to_contain_text("已挂单")
        order = page.get_by_test_id("open-order")
        await expect(order).to_have_count(1)
        order_id = await order.get_attribute("data-order")
        await page.get_by_test_id(f"amend-price-{order_id}").fill("15.10")
        await page.get_by_test_id(f"amend-{order_id}").click()
        await expect(page.get_by_test_id("order-result")).to_contain_text("15.10 元")
        await _check_view(page, "orders", ["order-symbol", "place-order", f"cancel-{order_id}"])
        await page.get_by_test_id(f"cancel-{order_id}").click()
        await expect(page.get_by_test_id("order-result")).to_contain_text("已撤单")
        await expect(page.get_by_test_id("open-order")).to_have_count(0)
    assert errors == []


async def test_a_provider_deposits_a_night_schedule_and_sees_it_sold(
    tmp_path: Path, browser: Browser
) -> None:
    errors: list[str] = []
    # H100s in Guizhou list hour by hour two days ahead too (China Standard Time), so the
    # night after tomorrow is listed and far from its gate closure whenever the test runs.
    settings = settings_for(tmp_path).model_copy(
        update={"listings": "H100-80G.GZ", "listing_days": 2}
    )
    night = (datetime.now(CST) + timedelta(days=2)).date()
    first_night_hour = f"H100-80G.GZ.{night:%Y%m%d}T00"
    async with running_exchange(settings) as exchange:
        provider_key = await exchange.key_for("idc-night", "provider")
        buyer_key = await exchange.key_for("sme-night", "buyer")
        async with ExchangeClient(exchange.base_url, provider_key) as provider:
            await provider.deposit_cash(100_000)  # the asks' delivery bonds
        page = await _page(browser, exchange.base_url, provider_key, errors)
        await page.get_by_test_id("nav-provider").click()
        # Every night 00-08 (one night here), firm, with an ask at the reserve price in each hour.
        await page.get_by_test_id("schedule-class").select_option("H100-80G")
        await page.get_by_test_id("schedule-region").select_option("GZ")
        await page.get_by_test_id("schedule-first-day").fill(night.isoformat())
        await page.get_by_test_id("schedule-from").fill("0")
        await page.get_by_test_id("schedule-to").fill("8")
        await page.get_by_test_id("schedule-reserve").fill("17.00")
        await page.get_by_test_id("deposit-schedule").click()
        await expect(page.get_by_test_id("provider-result")).to_contain_text(
            "已存入 8 个时段，挂出 8 个卖单，0 个卖单未受理"
        )
        async with ExchangeClient(exchange.base_url, buyer_key) as buyer:
            await buyer.deposit_cash(100_000)
            await buyer.place_order(first_night_hour, "buy", 1700, 3)
        # Sold: 3 of the 8 cards of that hour, 38% used, paid out at the reserve price.
        await expect(page.get_by_test_id(f"sold-{first_night_hour}")).to_have_text("3")
        sold = page.get_by_test_id(f"capacity-{first_night_hour}")
        await expect(sold).to_contain_text("38%")
        await expect(sold).to_contain_text("51.00 元")
        await expect(page.locator("[data-testid^='capacity-H100-80G.GZ.']")).to_have_count(8)
        await _check_view(page, "provider", ["schedule-class", "deposit-schedule"])
    assert errors == []


async def test_an_enterprise_applies_and_an_administrator_approves_its_application(
    tmp_path: Path, browser: Browser
) -> None:
    errors: list[str] = []
    async with running_exchange(settings_for(tmp_path)) as exchange:
        admin_key = await exchange.key_for("city-admin", "programme_admin")
        buyer_key = await exchange.key_for("sme-hz-1", "buyer")
        admin = await _page(browser, exchange.base_url, admin_key, errors)
        await admin.get_by_test_id("nav-admin").click()
        await admin.locator("summary").click()
        await admin.get_by_test_id("programme-id").fill("hz-2027")
        await admin.get_by_test_id("programme-issuer").fill("杭州市")
        await admin.get_by_test_id("programme-budget").fill("1000000")
        await admin.get_by_test_id("create-programme").click()
        await expect(admin.get_by_test_id("report-budget")).to_have_text("1000000.00 元")

        # The enterprise registers with its credit code and applies.
        buyer = await _page(browser, exchange.base_url, buyer_key, errors)
        await buyer.get_by_test_id("nav-vouchers").click()
        await buyer.get_by_test_id("enterprise-name").fill("杭州小微算力科技有限公司")
        await buyer.get_by_test_id("enterprise-uscc").fill(USCC)
        await buyer.get_by_test_id("enterprise-city").fill("hangzhou")
        await buyer.get_by_test_id("register-form-submit").click()
        await expect(buyer.get_by_test_id("registered")).to_contain_text(USCC)
        await buyer.get_by_test_id("apply-programme").fill("hz-2027")
        await buyer.get_by_test_id("apply-amount").fill("5000")
        await buyer.get_by_test_id("apply-use").fill("微调客服模型")
        await buyer.get_by_test_id("apply-form-submit").click()
        mine = buyer.get_by_test_id("my-applications")
        await expect(mine).to_contain_text("待审核")
        await _check_view(buyer, "vouchers", ["enterprise-name", "apply-form-submit"])

        # The administrator sees it with the registered name and code, and approves it.
        row = admin.locator("[data-testid^='application-']")
        await expect(row).to_contain_text("杭州小微算力科技有限公司")
        await expect(row).to_contain_text(USCC)
        application_id = (await row.get_attribute("data-testid") or "").removeprefix("application-")
        await _check_view(admin, "admin", [f"approve-{application_id}", f"reject-{application_id}"])
        await admin.get_by_test_id(f"limit-{application_id}").fill("4500")
        await admin.get_by_test_id(f"approve-{application_id}").click()
        await expect(admin.get_by_test_id(f"status-{application_id}")).to_contain_text("已批准")
        await expect(admin.get_by_test_id("report-granted")).to_have_text("4500.00 元")
        await expect(mine).to_contain_text("已批准")
        await expect(mine).to_contain_text("4500.00 元")
        async with admin.expect_download() as downloading:
            await admin.get_by_test_id("report-pdf").click()
        assert (await downloading.value).suggested_filename == "programme-hz-2027.pdf"
    assert errors == []


async def test_an_operator_halts_and_resumes_a_contract(tmp_path: Path, browser: Browser) -> None:
    errors: list[str] = []
    async with running_exchange(settings_for(tmp_path)) as exchange:
        operator_key = await exchange.key_for("ops", "operator")
        buyer_key = await exchange.key_for("sme-ops", "buyer")
        # A record settlement cannot read, which it sets aside to the dead-letter topic.
        producer = await exchange.runtime.log.producer()
        poison = await producer.send_and_wait(exchange.runtime.topics.events, 0, b"\xff{no")
        await producer.close()
        await settle(exchange.runtime)
        page = await _page(browser, exchange.base_url, operator_key, errors)
        await page.get_by_test_id("nav-operator").click()
        await expect(page.get_by_test_id("stages")).to_contain_text("risk")
        letter = page.get_by_test_id("dead-letter")
        await expect(letter).to_have_count(1)
        await expect(letter).to_have_attribute(
            "data-source", f"{poison.topic}:{poison.partition}:{poison.offset}"
        )
        await expect(letter).to_contain_text("环节自动移出")
        # A band for the GZ family, shown beside each of its contracts.
        await expect(page.get_by_test_id(f"band-{GZ0}")).to_have_text("不限")
        form = page.get_by_test_id("band-form")
        await form.locator("select[name=family]").select_option("H100-80G.GZ")
        await form.locator("input[name=band]").fill("1.50")
        await form.get_by_role("button").click()
        await expect(page.get_by_test_id(f"band-{GZ0}")).to_have_text("1.50 元")
        await expect(page.get_by_test_id(f"band-{YRD0}")).to_have_text("不限")
        await page.get_by_test_id("operator-reason").fill("演练")
        await page.get_by_test_id(f"halt-{GZ0}").click()
        await expect(page.get_by_test_id(f"state-{GZ0}")).to_have_text("已暂停")
        # The buyer sees the halt wherever the contract appears.
        buyer = await _page(browser, exchange.base_url, buyer_key, errors)
        await buyer.get_by_test_id("details-H100-80G.GZ").click()
        await expect(buyer.get_by_test_id(f"hour-{GZ0}")).to_contain_text("已暂停")
        await expect(buyer.get_by_test_id("product-H100-80G.GZ")).to_contain_text("已暂停")
        await _check_view(page, "operator", ["operator-reason", "market-halt", f"resume-{GZ0}"])
        await page.get_by_test_id(f"resume-{GZ0}").click()
        await expect(page.get_by_test_id(f"state-{GZ0}")).to_have_text("交易中")
        await page.get_by_test_id("audit").click()
        await expect(page.get_by_test_id("audit-result")).to_contain_text("审计通过")
    assert errors == []


async def test_a_buyer_bids_a_need_in_the_day_ahead_auction_and_reads_its_result(
    tmp_path: Path, browser: Browser
) -> None:
    errors: list[str] = []
    now = [BEFORE_GATE_MS]
    settings = _day_ahead_settings(tmp_path)
    async with running_exchange(settings, clock_ms=lambda: now[0]) as exchange:
        await _at(exchange, BEFORE_GATE_MS)
        await _offer(exchange, "p-gz", GZ, 1500, 5)
        await _offer(exchange, "p-nm", NM, 1400, 5)
        await _fund(exchange, "lab", 10_000)
        page = await _page(browser, exchange.base_url, exchange.keys["lab"], errors)
        await page.evaluate(f"location.hash = '#/dayahead?date={DATE}'")
        await expect(page.get_by_test_id("day-ahead-countdown")).to_contain_text("距截止申报还有")
        await page.get_by_test_id("need-from").fill("9")
        await page.get_by_test_id("need-until").fill("11")
        await page.get_by_test_id("need-max").fill("36")
        await page.get_by_test_id("day-ahead-need-submit").click()
        await expect(page.get_by_test_id("day-ahead-result")).to_contain_text("2 个备选方案")
        await expect(page.locator("#day-ahead-mine")).to_contain_text("截止申报后")
        await _check_view(page, "dayahead", ["need-cards", "day-ahead-need-submit"])

        now[0] = GATE_MS + 60_000
        await expect(page.get_by_test_id("day-ahead-summary").first).to_contain_text("已出清")
        # The need went to Inner Mongolia, whose sellers ask less: 1 card an hour at their ask.
        await expect(page.get_by_test_id(f"price-{NM[0]}")).to_contain_text("14.00 ×1")
        assert "null" not in await page.locator("#day-ahead-summary").inner_text()
        results = page.get_by_test_id("day-ahead-results")
        await expect(results).to_contain_text("中标")
        await expect(results).to_contain_text("同组其他方案中标")
        await expect(results).to_contain_text("28.00 元")
        await _check_view(page, "dayahead-cleared", [])
    assert errors == []


async def test_the_day_ahead_view_leads_to_the_intraday_auctions(
    tmp_path: Path, browser: Browser
) -> None:
    """With intraday auctions, a day's auction links to the last and the next one; an intraday
    auction's view says what it is and offers no day-ahead bid."""
    errors: list[str] = []
    settings = _day_ahead_settings(tmp_path, CX_INTRADAY_AUCTION_HOURS=1)
    async with running_exchange(settings, clock_ms=lambda: BEFORE_GATE_MS) as exchange:
        await _at(exchange, BEFORE_GATE_MS)
        await _fund(exchange, "lab", 10_000)
        page = await _page(browser, exchange.base_url, exchange.keys["lab"], errors)
        await page.evaluate(f"location.hash = '#/dayahead?date={DATE}'")
        links = page.get_by_test_id("intraday-links")
        await expect(links).to_contain_text("日内集合竞价（北京时间）")
        await expect(links).to_contain_text("下一场")
        await links.locator("a").nth(1).click()
        await expect(page.locator("#day-ahead-title")).to_contain_text("日内集合竞价")
        await expect(page.get_by_test_id("day-ahead-summary").first).to_contain_text("收集申报")
        assert await page.get_by_test_id("day-ahead-need").count() == 0
        await _check_view(page, "intraday", [])
    assert errors == []


async def test_the_market_view_shows_strips_and_bundles_by_their_terms(
    tmp_path: Path, browser: Browser
) -> None:
    """A week of H100s and a month of Qwen tokens show in their products beside the hours,
    each named by its term, start and hours, and counted apart from the hours on offer."""
    errors: list[str] = []
    trading = datetime(2027, 11, 29, 10, tzinfo=CST)
    week, month = "H100-80G.GZ.W20271206", "TOK-QWEN.YRD.M202712"
    settings = settings_for(tmp_path).model_copy(
        update={"listings": "H100-80G.GZ,TOK-QWEN.YRD", "listing_days": 2, "term_days": 14}
    )
    async with running_exchange(settings, lambda: int(trading.timestamp() * 1000)) as exchange:
        provider_key = await exchange.key_for("idc-terms", "provider")
        async with ExchangeClient(exchange.base_url, provider_key) as provider:
            await provider.deposit_cash(1_000_000)
            for symbol, price in ((week, 1_010), (month, 180)):
                await provider.deposit_capacity(symbol, 5)
                await provider.place_order(symbol, "sell", price, 5)
        await settle(exchange.runtime)
        page = await _page(browser, exchange.base_url, None, errors)
        await expect(page.get_by_test_id("terms-H100-80G.GZ")).to_have_text("1 / 4 个有卖价")
        await expect(page.get_by_test_id("terms-TOK-QWEN.YRD")).to_contain_text("1 / ")
        await page.get_by_test_id("details-H100-80G.GZ").click()
        await expect(page.get_by_test_id(f"hour-{week}")).to_contain_text(
            "周合约 2027-12-06 起（168 小时）"
        )
        await expect(page.get_by_test_id(f"hour-{week}")).to_contain_text("10.10")
        await expect(page.get_by_test_id("hour-H100-80G.GZ.N20271206")).to_contain_text(
            "周夜间合约 2027-12-06 起（每日 0-8 时）（56 小时）"
        )
        await page.get_by_test_id("details-TOK-QWEN.YRD").click()
        await expect(page.get_by_test_id(f"hour-{month}")).to_contain_text("月资源包 2027-12")
        await _check_view(page, "market-terms", [])
    assert errors == []


async def test_a_provider_draws_a_token_bundle_down_from_the_page(
    tmp_path: Path, browser: Browser
) -> None:
    """A month's Qwen bundle bought in its period is owed at once; the provider reports the
    tokens used on the page (a bundle is metered in tokens, again and again), and the buyer's
    deliveries show how much it has used."""
    errors: list[str] = []
    now = datetime(2027, 12, 10, 10, tzinfo=CST)
    month = "TOK-QWEN.YRD.M202712"
    settings = settings_for(tmp_path).model_copy(
        update={"listings": "TOK-QWEN.YRD", "listing_days": 2, "term_days": 14}
    )
    async with running_exchange(settings, lambda: int(now.timestamp() * 1000)) as exchange:
        provider_key = await exchange.key_for("idc-qwen", "provider")
        buyer_key = await exchange.key_for("sme-qwen", "buyer")
        async with ExchangeClient(exchange.base_url, provider_key) as provider:
            await provider.deposit_cash(100_000)
            await provider.deposit_capacity(month, 10)
            await provider.place_order(month, "sell", 180, 10)
        async with ExchangeClient(exchange.base_url, buyer_key) as buyer:
            await buyer.deposit_cash(100_000)
            await buyer.place_order(month, "buy", 180, 4)
        await settle(exchange.runtime)
        page = await _page(browser, exchange.base_url, provider_key, errors)
        await page.get_by_test_id("nav-provider").click()
        await page.get_by_test_id(f"meter-{month}").fill("1250000")
        await page.get_by_test_id(f"report-{month}").click()
        await expect(page.get_by_test_id("provider-result")).to_contain_text("已上报计量")
        await expect(page.get_by_test_id("provider-deliveries")).to_contain_text("按用量扣减中")
        buyer_page = await _page(browser, exchange.base_url, buyer_key, errors)
        await buyer_page.get_by_test_id("nav-orders").click()
        await expect(buyer_page.get_by_test_id("delivery")).to_contain_text("已用 1,250,000 tokens")
        await _check_view(page, "provider-bundle", [f"meter-{month}", f"report-{month}"])
    assert errors == []


async def test_views_asked_for_together_render_once(tmp_path: Path, browser: Browser) -> None:
    """A view shown while another still renders (a key entered while the page loads, found
    by CI) waits for it: two renders interleaved filled the view twice, every control twice."""
    errors: list[str] = []
    async with running_exchange(settings_for(tmp_path)) as exchange:
        page = await _page(browser, exchange.base_url, None, errors)
        await expect(page.get_by_test_id("filter-max")).to_have_count(1)
        await page.evaluate("Promise.all([CX.show(), CX.show(), CX.show()])")
        await expect(page.get_by_test_id("filter-max")).to_have_count(1)
        await expect(page.locator("#products")).to_have_count(1)
    assert errors == []
