// 日前市场: the day-ahead auction. The next auction's gate counts down; a day's clearing prices
// show as a region x hour table coloured from cheap to dear; a buyer bids a need in the auction
// and, once it has cleared, sees what each of the account's orders got.
"use strict";

(() => {
  const { t, el, field, api, yuan, amount } = CX;
  const HOUR = 3600e3;
  const DAY = 24 * HOUR;

  // The delivery day (CST date) the next auction clears: tomorrow, or the day after once
  // today's gate has passed.
  function nextDay(gateMs) {
    const today = Date.parse(CX.cstDate(Date.now()) + "T00:00:00+08:00");
    const tomorrow = today + DAY;
    return gateMs !== null && Date.now() >= gateMs ? CX.cstDate(tomorrow + DAY) : CX.cstDate(tomorrow);
  }

  function countdown(gateMs) {
    const left = Math.max(0, gateMs - Date.now());
    const hours = Math.floor(left / HOUR);
    const minutes = Math.floor((left % HOUR) / 60e3);
    const seconds = Math.floor((left % 60e3) / 1e3);
    return t("dayahead.countdown", { hours, minutes: String(minutes).padStart(2, "0"), seconds: String(seconds).padStart(2, "0") });
  }

  // A price's colour between the day's cheapest (cool) and dearest (warm) clearing prices.
  function heat(price, low, high) {
    if (price === null || high === low) return "";
    const share = (price - low) / (high - low);
    return `background: hsl(${Math.round(200 - 180 * share)}, 70%, 88%)`;
  }

  function pricesTable(auction) {
    const hours = [...new Set(auction.regions.flatMap((r) => r.hours.map((h) => h.hour)))].sort();
    const prices = auction.regions.flatMap((r) => r.hours.flatMap((h) => h.contracts.map((c) => c.price))).filter((p) => p !== null);
    const low = Math.min(...prices);
    const high = Math.max(...prices);
    return el("div", { class: "scroll" }, el("table", { "data-testid": "day-ahead-prices" },
      el("caption", {}, t("dayahead.prices", { date: auction.date })),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, t("dayahead.region")), ...hours.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...auction.regions.map((r) => el("tr", {},
        el("th", { scope: "row" }, CX.region(r.region)),
        ...hours.map((hour) => {
          const found = r.hours.find((h) => h.hour === hour);
          const cells = found ? found.contracts : [];
          return el("td", { style: cells.length ? heat(cells[0].price, low, high) : "" },
            ...cells.map((c) => el("div", { "data-testid": "price-" + c.symbol },
              `${c.resource_class} ${amount(c.price)}`, el("span", { class: "note" }, " ×" + c.volume))));
        }))))));
  }

  function summary(auction) {
    const result = auction.result;
    const rows = [t("dayahead.status-line", { status: t("dayahead.status." + auction.status), gate: CX.cst(auction.gate_ms) })];
    if (result) {
      rows.push(t("dayahead.result-line", { welfare: yuan(result.welfare), bound: yuan(result.bound), gap: result.gap_ppm, orders: result.orders, accepted: result.accepted }));
    }
    return rows.map((text) => el("p", { "data-testid": "day-ahead-summary" }, text));
  }

  function resultsTable(results) {
    if (!results.orders.length) return el("p", { class: "note" }, t("dayahead.no-orders"));
    return el("div", { class: "scroll" }, el("table", { "data-testid": "day-ahead-results" },
      el("caption", {}, t("dayahead.my-results")),
      el("thead", {}, el("tr", {}, ...["dayahead.hours", "dayahead.limit", "dayahead.quantity", "dayahead.outcome", "dayahead.amount"].map((k) => el("th", { scope: "col" }, t(k))))),
      el("tbody", {}, ...results.orders.map((o) => el("tr", { "data-testid": "result-" + o.order_id },
        el("td", {}, o.symbols[0] + (o.symbols.length > 1 ? ` … ${o.symbols[o.symbols.length - 1].slice(-3)}` : "")),
        el("td", {}, yuan(o.price)),
        el("td", {}, String(o.quantity)),
        el("td", {}, t("dayahead.order." + o.status), o.reason ? el("div", { class: "note" }, t("dayahead.reason." + o.reason, { defaultValue: o.reason })) : null),
        el("td", {}, yuan(o.amount)))))));
  }

  function say(text, ok) {
    const out = document.getElementById("day-ahead-result");
    out.textContent = text;
    out.className = "result " + (ok ? "ok" : "error");
  }

  function needForm(date) {
    const regions = ["GZ", "NMG", "NX", "GS", "YRD", "JJJ", "GBA", "CY"];
    const node = el("form", { class: "order-form", "data-testid": "day-ahead-need" },
      field("dayahead.cards", el("input", { name: "cards", inputMode: "numeric", required: true, size: 4, value: "1", "data-testid": "need-cards" })),
      field("dayahead.need-hours", el("input", { name: "hours", inputMode: "numeric", required: true, size: 3, value: "2", "data-testid": "need-hours" })),
      field("dayahead.from", el("input", { name: "from", inputMode: "numeric", required: true, size: 3, value: "9", "data-testid": "need-from" })),
      field("dayahead.until", el("input", { name: "until", inputMode: "numeric", required: true, size: 3, value: "18", "data-testid": "need-until" })),
      field("dayahead.regions", el("select", { name: "regions", multiple: true, size: 3, "data-testid": "need-regions" },
        ...regions.map((r) => el("option", { value: r, selected: r === "GZ" || r === "NMG" }, CX.region(r))))),
      field("dayahead.max-total", el("input", { name: "max", inputMode: "decimal", required: true, size: 8, "data-testid": "need-max" })),
      el("button", { type: "submit", class: "primary", "data-testid": "day-ahead-need-submit" }, t("dayahead.bid")));
    node.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(node);
      const day = Date.parse(date + "T00:00:00+08:00");
      try {
        const need = await api("POST", "/v1/needs", {
          unit: "cards", quantity: Number(data.get("cards")), hours: Number(data.get("hours")),
          earliest_start: day + Number(data.get("from")) * HOUR, deadline: day + Number(data.get("until")) * HOUR,
          regions: data.getAll("regions").map((r) => ({ region: r })), max_total: CX.toFen(data.get("max")), day_ahead: true,
        });
        say(t("dayahead.bid-placed", { count: need.group.alternatives.length, price: yuan(need.group.price) }), true);
      } catch (error) {
        say(CX.problemText(error), false);
      }
      await refresh(date);
    });
    return node;
  }

  // Links between a day's auction and the intraday auctions around now (named by CST time).
  function intradayLinks(date, intraday) {
    if (!intraday) return [];
    const link = (key, text) => el("a", { href: `#/dayahead?date=${key}`, "data-testid": "intraday-" + key }, text);
    const day = date.slice(0, 10);
    return [el("p", { class: "note", "data-testid": "intraday-links" }, t("dayahead.intraday-links"),
      link(intraday.previous, t("dayahead.intraday-previous", { date: intraday.previous.replace("T", " ") })), " · ",
      link(intraday.next, t("dayahead.intraday-next", { date: intraday.next.replace("T", " ") })),
      isIntraday(date) ? [" · ", link(day, t("dayahead.day-ahead-link", { date: day }))] : [])];
  }

  const isIntraday = (date) => date.includes("T");

  async function refresh(date) {
    const auction = await api("GET", `/v1/day-ahead/${date}`);
    const clock = auction.status === "collecting" ? [el("p", { "data-testid": "day-ahead-countdown" }, countdown(auction.gate_ms))] : [];
    document.getElementById("day-ahead-summary").replaceChildren(...summary(auction), ...clock, ...intradayLinks(date, auction.intraday));
    document.getElementById("day-ahead-table").replaceChildren(auction.result ? pricesTable(auction) : el("p", { class: "note" }, t("dayahead.no-result")));
    if (CX.state.me) {
      const results = await api("GET", `/v1/day-ahead/${date}/results`);
      document.getElementById("day-ahead-mine").replaceChildren(resultsTable(results));
    }
  }

  async function render(root) {
    const hash = new URLSearchParams(location.hash.split("?")[1] || "");
    let date = hash.get("date");
    if (!date) {
      const probe = await api("GET", `/v1/day-ahead/${nextDay(null)}`);
      date = nextDay(probe.gate_ms);
    }
    const buyer = CX.state.me && CX.state.me.role === "buyer";
    root.append(
      el("section", { "aria-labelledby": "day-ahead-title" },
        el("h2", { id: "day-ahead-title" }, t(isIntraday(date) ? "dayahead.intraday-title" : "dayahead.title", { date: date.replace("T", " ") })),
        el("p", { class: "note" }, t(isIntraday(date) ? "dayahead.intraday-explain" : "dayahead.explain")),
        el("div", { id: "day-ahead-summary", role: "status" }),
        el("div", { id: "day-ahead-table" })),
      buyer && !isIntraday(date) ? el("section", { "aria-labelledby": "day-ahead-bid" },
        el("h3", { id: "day-ahead-bid" }, t("dayahead.bid-title")),
        needForm(date),
        el("p", { id: "day-ahead-result", class: "result", role: "status", "data-testid": "day-ahead-result" })) : null,
      CX.state.me ? el("section", { id: "day-ahead-mine" }) : null);
    await refresh(date);
    CX.every(1000, () => refresh(date));
  }

  CX.register("dayahead", { render });
})();
