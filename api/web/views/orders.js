// Orders: every order type POST /v1/orders takes, answered with matching's result
// (?answer=result); block orders; open orders with amend and cancel; fills; cash, capacity
// and positions; deliveries with disputes; invoices to download.
"use strict";

(() => {
  const { t, el, field, api, yuan } = CX;
  const TIME_IN_FORCE = ["GTC", "GTD", "DAY", "IOC", "FOK"];
  const STP_MODES = ["cancel_resting", "cancel_incoming", "cancel_both", "decrement"];

  function say(text, ok) {
    const out = document.getElementById("order-result");
    out.textContent = text;
    out.className = "result " + (ok ? "ok" : "error");
  }

  // The order's outcome in words: rests, filled (at what average), or cancelled and why.
  function outcome(order, answer) {
    const r = answer.result;
    if (answer.status === "pending" || !r) return t("orders.accepted-pending", { id: answer.order_id });
    const paid = r.fills.reduce((sum, f) => sum + f.price * f.quantity, 0);
    const average = r.filled ? yuan(Math.round(paid / r.filled)) : "–";
    const vars = { filled: r.filled, quantity: order.quantity, average, remaining: r.remaining, reason: t("cancel-reason." + r.reason, { defaultValue: r.reason || "" }) };
    return t("orders.result-" + r.status, vars);
  }

  function orderForm(contracts, preset) {
    const value = {};
    const input = (name, attrs) => el("input", { name, "data-testid": "order-" + name, ...attrs });
    const select = (name, options) => el("select", { name, "data-testid": "order-" + name }, ...options.map(([v, label]) => el("option", { value: v, selected: v === preset[name] }, label)));
    const form = el("form", { class: "order-form", "data-testid": "order-form" },
      field("orders.contract", select("symbol", contracts.map((c) => [c.symbol, c.symbol + " · " + CX.cstHour(c.delivery_start)]))),
      el("p", { class: "field" }, el("span", {}, t("orders.market-state")), el("span", { id: "order-state" })),
      field("orders.side", select("side", [["buy", t("side.buy")], ["sell", t("side.sell")]])),
      field("orders.type", select("order_type", [["limit", t("orders.limit")], ["market", t("orders.market")]])),
      field("orders.price", input("price", { inputMode: "decimal", size: 8, value: preset.price || "" })),
      field("orders.quantity", input("quantity", { type: "number", min: "1", step: "1", value: "1" })),
      field("orders.tif", select("time_in_force", TIME_IN_FORCE.map((x) => [x, t("tif." + x)]))),
      field("orders.expire", input("expire_at", { type: "datetime-local" })),
      field("orders.min-quantity", input("min_quantity", { type: "number", min: "0", step: "1", value: "0" })),
      el("label", { class: "check" }, input("all_or_none", { type: "checkbox" }), t("orders.all-or-none")),
      el("label", { class: "check" }, input("post_only", { type: "checkbox" }), t("orders.post-only")),
      field("orders.stp-group", input("stp_group", { size: 14, placeholder: t("orders.stp-group-placeholder") })),
      field("orders.stp-mode", select("stp_mode", STP_MODES.map((x) => [x, t("stp." + x)]))),
      field("orders.voucher", input("voucher", { size: 14, placeholder: t("orders.voucher-placeholder") })),
      field("orders.limit-basis", select("limit_basis", [["gross", t("orders.gross")], ["net", t("orders.net")]])),
      el("button", { type: "submit", class: "primary", "data-testid": "place-order" }, t("orders.place")));
    const showState = () => {
      const c = contracts.find((x) => x.symbol === form.elements.symbol.value);
      document.getElementById("order-state").replaceChildren(c ? CX.stateBadge(c.state) : "");
    };
    form.elements.symbol.addEventListener("change", showState);
    setTimeout(showState);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const price = CX.toFen(data.get("price"));
      if (price === null) return say(t("orders.bad-price"), false);
      const order = { symbol: data.get("symbol"), side: data.get("side"), order_type: data.get("order_type"), price,
        quantity: Number(data.get("quantity")), time_in_force: data.get("time_in_force"),
        min_quantity: Number(data.get("min_quantity")), all_or_none: data.get("all_or_none") === "on",
        post_only: data.get("post_only") === "on", stp_mode: data.get("stp_mode"), limit_basis: data.get("limit_basis"),
        client_order_id: "web-" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6) };
      if (data.get("voucher")) order.voucher = data.get("voucher");
      if (data.get("stp_group")) order.stp_group = data.get("stp_group");
      if (order.time_in_force === "GTD") order.expire_at = Date.parse(data.get("expire_at") + ":00Z") - 8 * 3600e3;
      try {
        const answer = await api("POST", "/v1/orders?answer=result", order);
        say(outcome(order, answer), true);
      } catch (error) {
        say(t("orders.refused", { reason: CX.problemText(error) }), false);
      }
      await refresh();
    });
    return form;
  }

  function blockForm(contracts) {
    const families = [...new Set(contracts.map((c) => c.resource_class + "." + c.region))].sort();
    const form = el("form", { class: "order-form", "data-testid": "block-form" },
      field("orders.family", el("select", { name: "family" }, ...families.map((f) => el("option", { value: f }, f)))),
      field("orders.first-hour", el("select", { name: "first" }, ...[...new Set(contracts.map((c) => c.delivery_start))].sort().map((h) => el("option", { value: h }, CX.cstHour(h))))),
      field("orders.hours", el("input", { name: "hours", type: "number", min: "1", max: "24", value: "2" })),
      field("orders.side", el("select", { name: "side" }, el("option", { value: "buy" }, t("side.buy")), el("option", { value: "sell" }, t("side.sell")))),
      field("orders.average-price", el("input", { name: "price", inputMode: "decimal", size: 8 })),
      field("orders.quantity-per-hour", el("input", { name: "quantity", type: "number", min: "1", value: "1" })),
      el("button", { type: "submit" }, t("orders.place-block")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const first = Date.parse(data.get("first"));
      const symbols = [];
      for (let i = 0; i < Number(data.get("hours")); i++) {
        const hour = contracts.find((c) => c.resource_class + "." + c.region === data.get("family") && Date.parse(c.delivery_start) === first + i * 3600e3);
        if (!hour) return say(t("orders.block-hours-missing"), false);
        symbols.push(hour.symbol);
      }
      try {
        const answer = await api("POST", "/v1/block-orders", { symbols, side: data.get("side"), price: CX.toFen(data.get("price")), quantity: Number(data.get("quantity")) });
        say(t("orders.block-answer", { status: answer.status }), true);
      } catch (error) {
        say(t("orders.refused", { reason: CX.problemText(error) }), false);
      }
      await refresh();
    });
    return form;
  }

  function table(testid, caption, heads, rows) {
    return el("div", { class: "scroll" }, el("table", { "data-testid": testid },
      el("caption", {}, t(caption)),
      el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { scope: "col" }, h ? t(h) : "")))),
      el("tbody", {}, ...rows)));
  }

  async function refresh() {
    const me = CX.state.me;
    const [open, fills, account, deliveries] = await Promise.all([
      api("GET", "/v1/orders?status=open&limit=50"), api("GET", "/v1/fills?limit=20"),
      api("GET", "/v1/accounts/" + encodeURIComponent(me.account_id)).catch(() => null),
      api("GET", "/v1/deliveries").catch(() => []),
    ]);
    const stateOf = (symbol) => (CX.state.contracts.find((c) => c.symbol === symbol) || {}).state;
    const openRows = open.map((o) => {
      const price = el("input", { value: CX.amount(o.price), size: 7, "aria-label": t("orders.new-price"), "data-testid": "amend-price-" + o.order_id });
      return el("tr", { "data-testid": "open-order", "data-order": o.order_id },
        el("td", {}, o.symbol, " ", CX.stateBadge(stateOf(o.symbol))), el("td", {}, t("side." + o.side)), el("td", {}, yuan(o.price)),
        el("td", {}, String(o.quantity)), el("td", {}, String(o.filled)),
        el("td", {}, price,
          el("button", { type: "button", "data-testid": "amend-" + o.order_id, onclick: async () => {
            try { const a = await api("PATCH", "/v1/orders/" + o.order_id, { price: CX.toFen(price.value) }); say(t("orders.amended", { remaining: a.remaining, price: yuan(a.price) }), true); } catch (error) { say(CX.problemText(error), false); }
            await refresh();
          } }, t("orders.amend")),
          el("button", { type: "button", "data-testid": "cancel-" + o.order_id, onclick: async () => {
            try { const a = await api("DELETE", "/v1/orders/" + o.order_id); say(t("orders.cancelled", { remaining: a.remaining }), true); } catch (error) { say(CX.problemText(error), false); }
            await refresh();
          } }, t("orders.cancel"))));
    });
    const box = document.getElementById("my-orders");
    box.replaceChildren(
      el("p", { "data-testid": "cash" }, account ? t("orders.cash", { available: yuan(account.cash.available), held: yuan(account.cash.held) }) : ""),
      table("open-orders", "orders.open", ["orders.contract", "orders.side", "orders.price", "orders.quantity", "orders.filled", ""], openRows),
      table("fills", "orders.fills", ["orders.time", "orders.contract", "orders.side", "orders.price", "orders.quantity", "orders.amount"],
        fills.map((f) => el("tr", { "data-testid": "fill" }, el("td", {}, CX.cst(f.ts)), el("td", {}, f.symbol), el("td", {}, t("side." + f.side)),
          el("td", {}, yuan(f.price)), el("td", {}, String(f.quantity)), el("td", {}, yuan(f.price * f.quantity))))),
      table("positions", "orders.positions", ["orders.contract", "orders.position", "orders.capacity"],
        account ? [...new Set([...account.positions.map((p) => p.symbol), ...account.capacity.map((c) => c.symbol)])].sort().map((symbol) => {
          const position = account.positions.find((p) => p.symbol === symbol);
          const capacity = account.capacity.find((c) => c.symbol === symbol);
          return el("tr", {}, el("td", {}, symbol), el("td", {}, String(position ? position.quantity : 0)),
            el("td", {}, capacity ? t("orders.capacity-of", { available: capacity.available, held: capacity.held }) : "–"));
        }) : []),
      table("deliveries", "orders.deliveries", ["orders.contract", "orders.counterparty", "orders.quantity", "orders.amount", "orders.delivery-status", ""],
        deliveries.map((d) => el("tr", { "data-testid": "delivery" }, el("td", {}, d.symbol),
          el("td", {}, me.role === "buyer" ? d.provider_id : d.buyer_id), el("td", {}, String(d.quantity)), el("td", {}, yuan(d.amount)),
          el("td", {}, t("delivery." + d.status, { defaultValue: d.status }) + (d.delivered !== null && d.delivered !== undefined ? " · " + t(CX.isBundle(d.symbol) ? "orders.tokens-used" : "orders.delivered", { n: d.delivered.toLocaleString("zh-CN") }) : "")),
          el("td", {}, me.role === "buyer" && CxDeliveries.disputable(d) ? el("button", { type: "button", onclick: async () => {
            try { await api("POST", "/v1/deliveries/disputes", { symbol: d.symbol, provider_id: d.provider_id, reason: t("orders.dispute-reason") }); say(t("orders.disputed"), true); } catch (error) { say(CX.problemText(error), false); }
            await refresh();
          } }, t("orders.dispute")) : "")))),
      el("p", {}, el("button", { type: "button", "data-testid": "invoices", onclick: downloadInvoices }, t("orders.download-invoices"))),
      statements(fills));
  }

  // The month's statement (对账单) and each buy order's VAT invoice data, as the API files them.
  function statements(fills) {
    const latest = fills.length ? fills[0].ts : Date.now();
    const month = el("input", { type: "month", value: CX.cstDate(latest).slice(0, 7), "data-testid": "statement-month" });
    const fetchFile = (path, name) => CX.downloadFrom(path, name).then(() => say(t("orders.downloaded", { name }), true), (error) => say(CX.problemText(error), false));
    const buys = [...new Set(fills.filter((f) => f.side === "buy").map((f) => f.order_id))];
    return el("section", { "aria-labelledby": "statements-title", "data-testid": "statements" },
      el("h3", { id: "statements-title" }, t("orders.statements")),
      el("p", {}, CX.field("orders.month", month), " ",
        el("button", { type: "button", "data-testid": "statement-pdf", onclick: () => fetchFile(`/v1/statements?month=${month.value}&format=pdf`, `statement-${month.value}.pdf`) }, t("orders.statement-pdf")), " ",
        el("button", { type: "button", "data-testid": "statement-json", onclick: () => fetchFile(`/v1/statements?month=${month.value}`, `statement-${month.value}.json`) }, t("orders.statement-json"))),
      buys.length ? el("ul", { class: "note" }, ...buys.map((id) => el("li", {}, id, " ",
        ...["pdf", "csv", "json"].map((format) => el("button", { type: "button", "data-testid": `invoice-${format}-${id}`, onclick: () => fetchFile(`/v1/orders/${id}/invoice.${format}`, `invoice-${id}.${format}`) }, t("orders.invoice-" + format)))))) : null);
  }

  async function downloadInvoices() {
    const me = CX.state.me;
    const invoices = await api("GET", `/v1/accounts/${encodeURIComponent(me.account_id)}/invoices`);
    const lines = [["order_id", "issued_cst", "programme_id", "symbol", "quantity", "unit", "gross", "voucher", "fee", "concession", "paid"].join(",")];
    for (const invoice of invoices.invoices || []) {
      for (const c of invoice.contracts || []) {
        lines.push([invoice.order_id, CX.cst(invoice.issued_ts), invoice.programme_id || "", c.symbol, c.quantity, c.unit,
          CX.amount(c.gross), CX.amount(c.voucher), CX.amount(c.fee), CX.amount(c.concession), CX.amount(c.paid)].join(","));
      }
    }
    CX.download(`invoices-${me.account_id}.csv`, lines.join("\n") + "\n", "text/csv");
    CX.download(`invoices-${me.account_id}.json`, JSON.stringify(invoices, null, 2), "application/json");
  }

  async function render(root) {
    const contracts = await CX.loadContracts();
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    const symbol = params.get("symbol") || "";
    const contract = contracts.find((c) => c.symbol === symbol);
    const preset = { symbol, side: "buy", price: contract && contract.best_ask ? CX.amount(contract.best_ask) : "" };
    root.append(
      el("section", { "aria-labelledby": "orders-title" },
        el("h2", { id: "orders-title" }, t("orders.title")),
        orderForm(contracts, preset),
        el("p", { id: "order-result", class: "result", role: "status", "data-testid": "order-result" }),
        el("details", {}, el("summary", {}, t("orders.block-title")), blockForm(contracts))),
      el("section", { id: "my-orders", "aria-label": t("orders.mine") }));
    await refresh();
    CX.every(3000, refresh);
  }

  CX.register("orders", { roles: ["buyer", "provider"], render });
})();
