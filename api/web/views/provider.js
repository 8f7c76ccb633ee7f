// The provider's console: deposit idle capacity on a schedule (firm or recallable, with a
// reserve price), see what of it sold (utilisation), sales and payouts, bonds, recalls and the
// metering to report.
"use strict";

(() => {
  const { t, el, field, api, yuan } = CX;

  function say(text, ok) {
    const out = document.getElementById("provider-result");
    out.textContent = text;
    out.className = "result " + (ok ? "ok" : "error");
  }

  function scheduleForm(contracts) {
    const cards = contracts.filter((c) => !c.resource_class.endsWith("-INT"));
    const classes = [...new Set(cards.map((c) => c.resource_class))].sort();
    const regions = [...new Set(cards.map((c) => c.region))].sort();
    const first = contracts.map((c) => c.delivery_start).sort()[0];
    const form = el("form", { class: "order-form", "data-testid": "schedule-form" },
      field("provider.class", el("select", { name: "resource_class", "data-testid": "schedule-class" }, ...classes.map((c) => el("option", { value: c }, c)))),
      field("provider.region", el("select", { name: "region", "data-testid": "schedule-region" }, ...regions.map((r) => el("option", { value: r }, CX.region(r))))),
      field("provider.cards", el("input", { name: "quantity", type: "number", min: "1", value: "8", "data-testid": "schedule-quantity" })),
      field("provider.first-day", el("input", { name: "first_day", type: "date", value: first ? first.slice(0, 10) : "", "data-testid": "schedule-first-day" })),
      field("provider.days", el("input", { name: "days", type: "number", min: "1", max: "31", value: "1" })),
      field("provider.from-hour", el("input", { name: "from_hour", type: "number", min: "0", max: "23", value: "0", "data-testid": "schedule-from" })),
      field("provider.to-hour", el("input", { name: "to_hour", type: "number", min: "0", max: "24", value: "8", "data-testid": "schedule-to" })),
      el("label", { class: "check" }, el("input", { name: "recallable", type: "checkbox" }), t("provider.recallable")),
      field("provider.reserve", el("input", { name: "reserve", inputMode: "decimal", size: 8, "data-testid": "schedule-reserve" })),
      el("button", { type: "submit", class: "primary", "data-testid": "deposit-schedule" }, t("provider.deposit")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const body = { resource_class: data.get("resource_class"), region: data.get("region"), quantity: Number(data.get("quantity")),
        first_day: data.get("first_day"), days: Number(data.get("days")), from_hour: Number(data.get("from_hour")),
        to_hour: Number(data.get("to_hour")), recallable: data.get("recallable") === "on" };
      if (data.get("reserve")) body.reserve_price = CX.toFen(data.get("reserve"));
      try {
        const answer = await api("POST", `/v1/accounts/${encodeURIComponent(CX.state.me.account_id)}/capacity-deposits`, body);
        say(t("provider.deposited", { hours: answer.contracts.length, asks: answer.asks.length, refused: answer.refused_asks.length }), true);
      } catch (error) {
        say(CX.problemText(error), false);
      }
      await refresh();
    });
    return form;
  }

  async function refresh() {
    const me = CX.state.me;
    const [account, obligations, deliveries] = await Promise.all([
      api("GET", "/v1/accounts/" + encodeURIComponent(me.account_id)).catch(() => ({ capacity: [], positions: [], cash: { available: 0, held: 0 } })),
      api("GET", "/v1/obligations"), api("GET", "/v1/deliveries").catch(() => []),
    ]);
    const sold = new Map(obligations.map((o) => [o.symbol, o]));
    const symbols = [...new Set([...account.capacity.map((c) => c.symbol), ...sold.keys()])].sort();
    const rows = symbols.map((symbol) => {
      const capacity = account.capacity.find((c) => c.symbol === symbol) || { available: 0, held: 0 };
      const o = sold.get(symbol) || { quantity: 0, payout: 0 };
      const total = capacity.available + capacity.held + o.quantity;
      const used = total ? Math.round((100 * o.quantity) / total) : 0;
      return el("tr", { "data-testid": "capacity-" + symbol }, el("td", {}, symbol), el("td", {}, String(total)),
        el("td", {}, String(capacity.held)), el("td", { "data-testid": "sold-" + symbol }, String(o.quantity)),
        el("td", {}, el("meter", { min: 0, max: 100, value: used, "aria-label": t("provider.utilisation") }), " ", used + "%"),
        el("td", {}, yuan(o.payout)));
    });
    const payout = obligations.reduce((sum, o) => sum + o.payout, 0);
    const bonds = deliveries.reduce((sum, d) => sum + (d.status === "settled" ? 0 : d.bond), 0);
    // An hour is metered once, in units delivered; a token bundle again and again, in the
    // tokens its holder used since the last report, each report paid at once.
    const meter = (d) => {
      const bundle = CX.isBundle(d.symbol);
      const input = el("input", { type: "number", min: "0", value: bundle ? "0" : String(d.quantity), size: bundle ? 10 : 4,
        "aria-label": t(bundle ? "provider.tokens-used" : "provider.delivered"), "data-testid": "meter-" + d.symbol });
      return el("span", {}, input, el("button", { type: "button", "data-testid": "report-" + d.symbol, onclick: async () => {
        const report = bundle ? { tokens: Number(input.value) } : { delivered: Number(input.value) };
        try { await api("POST", "/v1/deliveries/metering", { symbol: d.symbol, buyer_id: d.buyer_id, ...report }); say(t("provider.metered"), true); } catch (error) { say(CX.problemText(error), false); }
        await refresh();
      } }, t("provider.report")));
    };
    const recall = (d) => el("button", { type: "button", onclick: async () => {
      try { await api("POST", "/v1/deliveries/recalls", { symbol: d.symbol, quantity: d.quantity, reason: t("provider.recall-reason") }); say(t("provider.recalled"), true); } catch (error) { say(CX.problemText(error), false); }
      await refresh();
    } }, t("provider.recall"));
    document.getElementById("provider-state").replaceChildren(
      el("p", { "data-testid": "provider-totals" }, t("provider.totals", { payout: yuan(payout), bonds: yuan(bonds), held: yuan(account.cash.held), cash: yuan(account.cash.available) })),
      el("div", { class: "scroll" }, el("table", { "data-testid": "utilisation" }, el("caption", {}, t("provider.utilisation-title")),
        el("thead", {}, el("tr", {}, ...["orders.contract", "provider.deposited-units", "provider.in-asks", "provider.sold", "provider.utilisation", "provider.payout"].map((k) => el("th", { scope: "col" }, t(k))))),
        el("tbody", {}, ...rows))),
      el("div", { class: "scroll" }, el("table", { "data-testid": "provider-deliveries" }, el("caption", {}, t("provider.deliveries")),
        el("thead", {}, el("tr", {}, ...["orders.contract", "provider.buyer", "orders.quantity", "provider.bond", "orders.delivery-status", ""].map((k) => el("th", { scope: "col" }, k ? t(k) : "")))),
        el("tbody", {}, ...deliveries.map((d) => el("tr", {}, el("td", {}, d.symbol), el("td", {}, d.buyer_id), el("td", {}, String(d.quantity)),
          el("td", {}, yuan(d.bond)), el("td", {}, t("delivery." + d.status, { defaultValue: d.status })),
          el("td", {}, d.status === "owed" || d.status === "drawing" ? meter(d) : "", d.status === "owed" && d.symbol.includes("-INT.") ? recall(d) : "")))))));
  }

  async function render(root) {
    const contracts = await CX.loadContracts();
    root.append(
      el("section", { "aria-labelledby": "provider-title" },
        el("h2", { id: "provider-title" }, t("provider.title")),
        el("p", { class: "note" }, t("provider.explain")),
        scheduleForm(contracts),
        el("p", { id: "provider-result", class: "result", role: "status", "data-testid": "provider-result" })),
      el("section", { id: "provider-state", "aria-label": t("provider.state") }));
    await refresh();
    CX.every(3000, refresh);
  }

  CX.register("provider", { roles: ["provider"], render });
})();
