"""The supermarket page in headless Chromium (Debian's package, driven by Playwright).

A buyer loads the page, signs in with an API key, places an order through the form, sees it in
the book, amends it, sees a trade arrive on the tape when a provider sells into it, and cancels
the rest; the provider sees its obligation and payout. Screenshots go to reports/screenshots/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cx_client import ExchangeClient
from playwright.async_api import Page, async_playwright, expect

from tests.e2e.harness import running_exchange, settings_for

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
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
SCREENSHOTS = Path(__file__).resolve().parents[2] / "reports" / "screenshots"
GZ0 = "H100-80G.GZ.20271201T00"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium (`make chromium` installs it)."""
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"headless Chromium is required at {CHROMIUM} (make chromium installs it)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


async def _sign_in(page: Page, url: str, key: str, who: str) -> None:
    await page.goto(url)
    await expect(page.get_by_test_id(f"cell-{GZ0}")).to_be_visible()
    await page.get_by_test_id("api-key").fill(key)
    await page.get_by_test_id("use-key").click()
    await expect(page.get_by_test_id("who")).to_have_text(who)
    await expect(page.get_by_test_id("connection")).to_have_text("live")


async def test_a_buyer_trades_on_the_supermarket_page(tmp_path: Path, chromium: Path) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with running_exchange(settings_for(tmp_path)) as exchange:
        buyer_key = await exchange.key_for("sme-web", "buyer")
        provider_key = await exchange.key_for("provider-web", "provider")
        async with (
            ExchangeClient(exchange.base_url, buyer_key) as buyer,
            ExchangeClient(exchange.base_url, provider_key) as provider,
        ):
            await buyer.deposit_cash(100_000)
            await provider.deposit_capacity(GZ0, 10)
            # Something on the other side of the book, away from the buyer's price.
            await provider.place_order(GZ0, "sell", 1900, 4)

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(chromium), args=CHROMIUM_ARGS
                )
                try:
                    page = await browser.new_page(viewport={"width": 1400, "height": 1100})
                    page.set_default_timeout(TIMEOUT_MS)
                    expect.set_options(timeout=TIMEOUT_MS)
                    errors: list[str] = []
                    page.on("pageerror", lambda error: errors.append(str(error)))

                    await _sign_in(page, exchange.base_url + "/", buyer_key, "sme-web (buyer)")
                    cell = page.get_by_test_id(f"cell-{GZ0}")
                    await expect(page.get_by_test_id(f"ask-{GZ0}")).to_have_text("19.00")
                    await cell.click()
                    await expect(page.get_by_test_id("contract-title")).to_contain_text(GZ0)
                    await expect(page.get_by_test_id("ask-1900")).to_have_text("19.00")

                    # Place a bid through the form; it shows in the book and in my orders.
                    await page.get_by_test_id("order-side").select_option("buy")
                    await page.get_by_test_id("order-price").fill("18.00")
                    await page.get_by_test_id("order-quantity").fill("3")
                    await page.get_by_test_id("place-order").click()
                    await expect(page.get_by_test_id("order-result")).to_contain_text(
                        "buy 3 at 18.00: accepted"
                    )
                    await expect(page.get_by_test_id("bid-1800")).to_have_text("18.00")
                    mine = page.get_by_test_id("my-order")
                    await expect(mine).to_have_count(1)
                    order_id = await mine.get_attribute("data-order")
                    assert order_id is not None

                    # Amend its price: the book moves to the new level.
                    await page.get_by_test_id(f"amend-price-{order_id}").fill("18.10")
                    await page.get_by_test_id(f"amend-{order_id}").click()
                    await expect(page.get_by_test_id("order-result")).to_contain_text(
                        "amended: now 3 at 18.10"
                    )
                    await expect(page.get_by_test_id("bid-1810")).to_have_text("18.10")
                    await expect(page.get_by_test_id("bid-1800")).to_have_count(0)

                    # A provider sells into it: the trade arrives on the tape and in my fills.
                    await provider.place_order(GZ0, "sell", 1810, 2)
                    trade = page.get_by_test_id("tape").get_by_test_id("trade").first
                    await expect(trade).to_contain_text("18.10")
                    await expect(
                        page.get_by_test_id("my-fills").get_by_test_id("fill")
                    ).to_have_count(1)
                    await expect(page.get_by_test_id("my-order")).to_contain_text("2")
                    await page.screenshot(path=SCREENSHOTS / "supermarket.png", full_page=True)

                    # Cancel what is left.
                    order_id = await page.get_by_test_id("my-order").get_attribute("data-order")
                    await page.get_by_test_id(f"cancel-{order_id}").click()
                    await expect(page.get_by_test_id("order-result")).to_contain_text(
                        "1 units never filled"
                    )
                    await expect(page.get_by_test_id("my-order")).to_have_count(0)
                    await expect(page.get_by_test_id("bid-1810")).to_have_count(0)

                    # The provider's view: deposits, the obligation to deliver, and the payout.
                    seller = await browser.new_page(viewport={"width": 1400, "height": 1100})
                    seller.set_default_timeout(TIMEOUT_MS)
                    await _sign_in(
                        seller, exchange.base_url + "/", provider_key, "provider-web (provider)"
                    )
                    await expect(seller.get_by_test_id("provider")).to_be_visible()
                    await expect(seller.get_by_test_id("obligations")).to_contain_text(GZ0)
                    await expect(seller.get_by_test_id("payout-total")).to_have_text("36.20")
                    await expect(seller.get_by_test_id("deposits")).to_contain_text(GZ0)
                    await seller.screenshot(
                        path=SCREENSHOTS / "supermarket-provider.png", full_page=True
                    )
                    assert errors == []
                finally:
                    await browser.close()
    assert (SCREENSHOTS / "supermarket.png").stat().st_size > 10_000


async def test_a_call_auctions_trade_shows_on_the_tape_as_auction(
    tmp_path: Path, chromium: Path
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        buyer_key = await exchange.key_for("sme-web", "buyer")
        provider_key = await exchange.key_for("provider-web", "provider")
        operator = await exchange.operator()
        async with (
            ExchangeClient(exchange.base_url, buyer_key) as buyer,
            ExchangeClient(exchange.base_url, provider_key) as provider,
        ):
            await buyer.deposit_cash(100_000)
            await provider.deposit_capacity(GZ0, 10)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(chromium), args=CHROMIUM_ARGS
                )
                try:
                    page = await browser.new_page(viewport={"width": 1400, "height": 1100})
                    page.set_default_timeout(TIMEOUT_MS)
                    expect.set_options(timeout=TIMEOUT_MS)
                    await _sign_in(page, exchange.base_url + "/", buyer_key, "sme-web (buyer)")
                    await page.get_by_test_id(f"cell-{GZ0}").click()

                    reason = {"reason": "auction drill"}
                    await operator.post(f"/v1/admin/contracts/{GZ0}/halt", json=reason)
                    await provider.place_order(GZ0, "sell", 1800, 2)
                    await buyer.place_order(GZ0, "buy", 1850, 2)
                    await operator.post(f"/v1/admin/contracts/{GZ0}/resume", json=reason)
                    trade = page.get_by_test_id("tape").get_by_test_id("trade").first
                    await expect(trade).to_contain_text("18.00")
                    await expect(trade).to_contain_text("auction")
                    await expect(trade).not_to_contain_text("null")
                finally:
                    await browser.close()
