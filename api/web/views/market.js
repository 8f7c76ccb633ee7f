// The buyer's catalogue: each resource class and region is a product card (what it is, the
// lowest ask gross and after the key's vouchers, per standard card-hour, hours on offer,
// sellers), with filters, a side-by-side comparison of two or three, and a product's price
// history (GET /v1/families/{family}/history) and delivery hours.
"use strict";

(() => {
  const { t, el, field, api, yuan, perUnit, perStd, region, stateBadge } = CX;
  const chosen = new Set();                         // families picked for comparison
  const filters = { region: "", cls: "", maxPerStd: "", kind: "" };
  let detail = null;                                // the family whose details are open
  let history = null;                               // its Chart.js chart

  const memoryOf = (description) => (/(\d+)\s*GB/.exec(description) || [])[1];
  const isTerm = (c) => c.term && c.term !== "H";

  // A contract's delivery as a person reads it: the hour, or the term with its start and hours
  // (a week, its nights, a month of cards; a day, week or month bundle of tokens).
  function deliveryOf(c) {
    if (!isTerm(c)) return CX.cstHour(c.delivery_start);
    const start = CX.cstDate(Date.parse(c.delivery_start));
    const bundle = c.unit === "million-tokens" && c.term !== "D" ? "bundle-" : "";
    return t("term." + bundle + c.term, { start, month: start.slice(0, 7) }) +
      (c.unit === "million-tokens" ? "" : t("term.hours", { hours: c.hours }));
  }
  const isInterruptible = (cls) => cls.endsWith("-INT");
  const minOf = (values) => {
    const present = values.filter((v) => v !== null && v !== undefined);
    return present.length ? Math.min(...present) : null;
  };

  // Contracts grouped into products, cheapest per standard card-hour (or per unit) first.
  function products(contracts) {
    const byFamily = new Map();
    for (const c of contracts) {
      const family = c.resource_class + "." + c.region;
      if (!byFamily.has(family)) byFamily.set(family, []);
      byFamily.get(family).push(c);
    }
    return [...byFamily].map(([family, contracts]) => {
      const first = contracts[0];
      const hours = contracts.filter((c) => !isTerm(c));
      const terms = contracts.filter(isTerm);
      const offered = hours.filter((c) => c.best_ask !== null);
      return {
        family, hours, terms, contracts, cls: first.resource_class, region: first.region, unit: first.unit,
        description: first.description, factor: first.performance_factor,
        memory: memoryOf(first.description),
        // A strip's price is per card-hour and a bundle's per million tokens, as an hour's.
        ask: minOf(contracts.map((c) => c.best_ask)),
        net: minOf(contracts.map((c) => c.best_ask_net)),
        askPerStd: minOf(contracts.map((c) => c.best_ask_per_std)),
        netPerStd: minOf(contracts.map((c) => c.best_ask_net_per_std)),
        offeredHours: offered.length,
        offeredTerms: terms.filter((c) => c.best_ask !== null).length,
        sellers: [...new Set(contracts.flatMap((c) => c.sellers))],
        states: [...new Set(hours.map((c) => c.state).filter((s) => s && s !== "continuous"))],
      };
    }).sort((a, b) => (a.netPerStd ?? a.net ?? Infinity) - (b.netPerStd ?? b.net ?? Infinity) || a.family.localeCompare(b.family));
  }

  function passes(p) {
    if (filters.region && p.region !== filters.region) return false;
    if (filters.cls && p.cls.replace(/-INT$/, "") !== filters.cls) return false;
    if (filters.kind === "firm" && isInterruptible(p.cls)) return false;
    if (filters.kind === "interruptible" && !isInterruptible(p.cls)) return false;
    const max = CX.toFen(filters.maxPerStd);
    if (max !== null && (p.netPerStd === null || p.netPerStd > max)) return false;
    return true;
  }

  function card(p) {
    const fact = (label, value, testid) => [el("dt", {}, t(label)), el("dd", { "data-testid": testid }, value)];
    const compare = el("input", { type: "checkbox", checked: chosen.has(p.family), "data-testid": "compare-" + p.family,
      onchange: (e) => { if (e.target.checked && chosen.size >= 3) { e.target.checked = false; return; } e.target.checked ? chosen.add(p.family) : chosen.delete(p.family); renderCompare(); } });
    return el("article", { class: "product", "data-testid": "product-" + p.family, "aria-labelledby": "title-" + p.family },
      el("h3", { id: "title-" + p.family }, p.description, " · ", region(p.region)),
      el("p", { class: "badges" },
        isInterruptible(p.cls) ? el("span", { class: "badge interruptible" }, t("market.interruptible")) : null,
        ...p.states.map(stateBadge)),
      el("dl", {},
        fact("market.memory", p.memory ? t("market.gb", { n: p.memory }) : "–"),
        fact("market.performance", p.factor ? t("market.factor", { factor: Number(p.factor).toFixed(2) }) : t("market.no-factor")),
        fact("market.lowest-ask", perUnit(p.ask, p.unit), "lowest-ask-" + p.family),
        fact("market.after-voucher", perUnit(p.net, p.unit), "lowest-net-" + p.family),
        p.factor ? fact("market.per-std", perStd(p.netPerStd), "per-std-" + p.family) : [],
        fact("market.offered-hours", t("market.hours-of", { offered: p.offeredHours, listed: p.hours.length })),
        p.terms.length ? fact("market.terms", t("market.terms-of", { offered: p.offeredTerms, listed: p.terms.length }), "terms-" + p.family) : [],
        fact("market.sellers", p.sellers.length ? p.sellers.join("、") : t("market.no-stalls"))),
      el("div", { class: "actions" },
        el("button", { type: "button", "data-testid": "details-" + p.family, "aria-expanded": String(detail === p.family),
          onclick: () => openDetail(p.family) }, t("market.details")),
        el("label", { class: "check" }, compare, t("market.compare"))));
  }

  let all = [];

  function renderList() {
    const shown = all.filter(passes);
    document.getElementById("products").replaceChildren(...(shown.length ? shown.map(card) : [el("p", {}, t("market.none"))]));
    document.getElementById("product-count").textContent = t("market.count", { count: shown.length });
  }

  function renderCompare() {
    const picked = all.filter((p) => chosen.has(p.family));
    const box = document.getElementById("compare");
    if (picked.length < 2) { box.replaceChildren(el("p", { class: "note" }, t("market.compare-hint"))); return; }
    const row = (label, value) => el("tr", {}, el("th", { scope: "row" }, t(label)), ...picked.map((p) => el("td", {}, value(p))));
    const cheapest = minOf(picked.map((p) => p.netPerStd));
    box.replaceChildren(el("table", { "data-testid": "compare-table" },
      el("caption", {}, t("market.compare-title")),
      el("thead", {}, el("tr", {}, el("td"), ...picked.map((p) => el("th", { scope: "col" }, p.description, " · ", region(p.region))))),
      el("tbody", {},
        row("market.memory", (p) => (p.memory ? t("market.gb", { n: p.memory }) : "–")),
        row("market.performance", (p) => (p.factor ? t("market.factor", { factor: Number(p.factor).toFixed(2) }) : t("market.no-factor"))),
        row("market.lowest-ask", (p) => perUnit(p.ask, p.unit)),
        row("market.after-voucher", (p) => perUnit(p.net, p.unit)),
        row("market.per-std", (p) => el("span", { class: p.netPerStd !== null && p.netPerStd === cheapest ? "best" : "" }, perStd(p.netPerStd))),
        row("market.offered-hours", (p) => t("market.hours-of", { offered: p.offeredHours, listed: p.hours.length })),
        row("market.sellers", (p) => String(p.sellers.length)))));
  }

  const historyOf = (family, interval) =>
    api("GET", `/v1/families/${encodeURIComponent(family)}/history?interval=${interval}&limit=${interval === "1d" ? 35 : 168}`);

  // Days to weeks by day; a product traded on fewer than three days opens by the hour.
  async function openDetail(family, picked = null) {
    detail = family;
    const p = all.find((x) => x.family === family);
    const box = document.getElementById("detail");
    let interval = picked || "1d";
    let points = await historyOf(family, interval);
    if (!picked && points.length < 3) {
      interval = "1h";
      points = await historyOf(family, interval);
    }
    const canvas = el("canvas", { role: "img", "data-testid": "history-chart", "aria-label": t("market.history-label", { count: points.length }) });
    const hours = el("table", { "data-testid": "hours" },
      el("caption", {}, t("market.hours-title")),
      el("thead", {}, el("tr", {}, ...["market.delivery", "market.state", "market.bid", "market.ask", "market.after-voucher", "market.per-std", ""].map((k) => el("th", { scope: "col" }, k ? t(k) : "")))),
      el("tbody", {}, ...p.contracts.map((c) => el("tr", { "data-testid": "hour-" + c.symbol },
        el("td", {}, deliveryOf(c)), el("td", {}, stateBadge(c.state)),
        el("td", {}, yuan(c.best_bid)), el("td", {}, yuan(c.best_ask)), el("td", {}, yuan(c.best_ask_net)),
        el("td", {}, c.best_ask_net_per_std === null ? "–" : yuan(c.best_ask_net_per_std)),
        el("td", {}, el("a", { href: "#/orders?symbol=" + encodeURIComponent(c.symbol), "data-testid": "buy-" + c.symbol }, t("market.buy")))))));
    // The latest trades of the product's contracts, each once (by trade id), newest first.
    const traded = p.contracts.filter((c) => c.volume_24h > 0 || c.last !== null);
    const lists = await Promise.all(traded.map((c) => api("GET", `/v1/contracts/${encodeURIComponent(c.symbol)}/trades?limit=10`)));
    const trades = [...new Map(lists.flat().map((x) => [x.trade_id, x])).values()].sort((a, b) => b.ts - a.ts).slice(0, 10);
    const tape = el("table", { "data-testid": "trades" },
      el("caption", {}, t("market.trades")),
      el("thead", {}, el("tr", {}, ...["orders.time", "market.delivery", "orders.price", "orders.quantity"].map((k) => el("th", { scope: "col" }, t(k))))),
      el("tbody", {}, ...trades.map((x) => el("tr", { "data-testid": "trade" }, el("td", {}, CX.cst(x.ts)),
        el("td", {}, deliveryOf(p.contracts.find((c) => c.symbol === x.symbol))), el("td", {}, yuan(x.price)), el("td", {}, String(x.quantity))))));
    const toggle = (value, label) => el("button", { type: "button", "aria-pressed": String(interval === value), onclick: () => openDetail(family, value) }, t(label));
    box.replaceChildren(
      el("h2", { id: "detail-title", "data-testid": "detail-title", tabindex: "-1" }, p.description, " · ", region(p.region)),
      el("div", { class: "actions" }, toggle("1d", "market.by-day"), toggle("1h", "market.by-hour")),
      points.length ? el("div", { class: "chart" }, canvas) : el("p", { class: "note", "data-testid": "no-history" }, t("market.no-history")),
      el("div", { class: "scroll" }, hours),
      trades.length ? el("div", { class: "scroll" }, tape) : null);
    if (history) history.destroy();
    history = null;
    if (points.length) {
      const label = (pt) => (interval === "1d" ? CX.cstDay(pt.start) : CX.cst(pt.start));
      const price = (pt) => ((p.factor ? pt.vwap_per_std : pt.vwap) ?? null) / 100;
      history = new Chart(canvas, {
        type: "line",
        data: { labels: points.map(label), datasets: [{ label: p.factor ? t("market.vwap-std") : t("market.vwap", { unit: CX.unitName(p.unit) }), data: points.map(price), borderColor: "#0b5cad", backgroundColor: "#0b5cad33", fill: true, tension: 0.2 }] },
        options: { animation: false, maintainAspectRatio: false, scales: { y: { title: { display: true, text: t("money.unit-yuan") } } } },
      });
    }
    document.querySelectorAll("[data-testid^='details-']").forEach((b) => b.setAttribute("aria-expanded", String(b.dataset.testid === "details-" + family)));
    document.getElementById("detail-title").focus();
  }

  async function render(root) {
    detail = null;
    const contracts = await CX.loadContracts();
    all = products(contracts);
    const regions = [...new Set(all.map((p) => p.region))].sort();
    const classes = [...new Set(all.map((p) => p.cls.replace(/-INT$/, "")))].sort();
    const select = (key, options, testid) => {
      const control = el("select", { "data-testid": testid, onchange: (e) => { filters[key] = e.target.value; renderList(); } },
        ...options.map(([value, label]) => el("option", { value, selected: filters[key] === value }, label)));
      return control;
    };
    root.append(
      el("section", { "aria-labelledby": "market-title" },
        el("h2", { id: "market-title" }, t("market.title")),
        el("p", { class: "note" }, t("market.explain")),
        el("form", { class: "filters", "data-testid": "filters", onsubmit: (e) => e.preventDefault() },
          field("market.region", select("region", [["", t("market.any")], ...regions.map((r) => [r, region(r)])], "filter-region")),
          field("market.class", select("cls", [["", t("market.any")], ...classes.map((c) => [c, c])], "filter-class")),
          field("market.kind", select("kind", [["", t("market.any")], ["firm", t("market.firm")], ["interruptible", t("market.interruptible")]], "filter-kind")),
          field("market.max-per-std", el("input", { inputMode: "decimal", size: 6, value: filters.maxPerStd, "data-testid": "filter-max",
            oninput: (e) => { filters.maxPerStd = e.target.value; renderList(); } }))),
        el("p", { id: "product-count", class: "note", role: "status" }),
        el("div", { id: "products", class: "products" })),
      el("section", { id: "compare", "aria-live": "polite" }),
      el("section", { id: "detail", class: "detail" }));
    renderList();
    renderCompare();
    CX.every(3000, async () => {
      all = products(await CX.loadContracts());
      if (!document.activeElement || !document.getElementById("products").contains(document.activeElement)) renderList();
      renderCompare();
    });
  }

  CX.register("market", { render });
})();
