// The supermarket page: the catalogue grid, a contract's live depth and trades, an order form,
// the participant's orders and fills, and a provider's deposits, obligations and payouts.
// Everything live comes from the WebSocket stream (/v1/stream); see docs/API.md.
"use strict";

const state = {
  contracts: new Map(),   // symbol -> contract (GET /v1/contracts), updated by quotes
  selected: null,
  book: null,             // {symbol, seq, bids: Map, asks: Map} of the selected contract
  key: sessionStorage.getItem("cx-key") || "",
  me: null,
  orders: new Map(),      // own open orders
  socket: null,
  retry: 0,
};

const $ = (id) => document.getElementById(id);
const money = (fen) => (fen === null || fen === undefined ? "-" : (fen / 100).toFixed(2));
// Times are shown in China Standard Time (UTC+8), like the delivery hours.
const time = (ms) => (ms ? new Date(ms + 8 * 3600e3).toISOString().slice(11, 19) : "");
const hourLabel = (iso) => iso.slice(5, 10) + " " + iso.slice(11, 16);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) node.append(child);
  return node;
};

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (state.key) headers.authorization = "Bearer " + state.key;
  const response = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.detail || response.statusText);
    error.problem = data;
    error.status = response.status;
    throw error;
  }
  return data;
}

// ---- catalogue grid -------------------------------------------------------------------------

async function loadCatalogue() {
  const contracts = await api("GET", "/v1/contracts");
  for (const c of contracts) state.contracts.set(c.symbol, c);
  const families = [...new Set(contracts.map((c) => c.resource_class + "|" + c.region))].sort();
  const hours = [...new Set(contracts.map((c) => c.delivery_start))].sort();
  const head = el("tr", {}, el("th", {}, "resource class"), el("th", {}, "region"));
  for (const h of hours) head.append(el("th", {}, hourLabel(h)));
  $("grid").tHead.replaceChildren(head);
  const body = $("grid").tBodies[0];
  body.replaceChildren();
  for (const family of families) {
    const [cls, region] = family.split("|");
    const sample = contracts.find((c) => c.resource_class === cls && c.region === region);
    const factor = sample.performance_factor ? ` (${sample.performance_factor} std)` : "";
    const row = el("tr", {},
      el("td", { title: sample.description }, cls + factor),
      el("td", {}, sample.region_name));
    for (const h of hours) {
      const c = contracts.find((x) => x.resource_class === cls && x.region === region && x.delivery_start === h);
      if (!c) { row.append(el("td", { class: "empty" }, "-")); continue; }
      const cell = el("td", { class: "cell", "data-symbol": c.symbol, "data-testid": "cell-" + c.symbol });
      cell.addEventListener("click", () => select(c.symbol));
      row.append(cell);
      renderCell(c.symbol);
    }
    body.append(row);
  }
}

function renderCell(symbol, flash) {
  const c = state.contracts.get(symbol);
  const cell = document.querySelector(`td.cell[data-symbol="${symbol}"]`);
  if (!c || !cell) return;
  const perStd = c.performance_factor !== null;
  const table = el("table", {},
    el("tr", {}, el("th", {}, ""), el("th", {}, "gross"), el("th", {}, "net")),
    el("tr", {}, el("td", {}, "ask"),
      el("td", { class: "ask", "data-testid": "ask-" + symbol }, money(c.best_ask)),
      el("td", { class: "ask" }, money(c.best_ask_net))),
    el("tr", {}, el("td", {}, "/std"),
      el("td", {}, perStd ? money(c.best_ask_per_std) : "n/a"),
      el("td", {}, perStd ? money(c.best_ask_net_per_std) : "n/a")));
  const foot = el("div", { class: "foot" },
    el("span", { class: "bid" }, "bid " + money(c.best_bid)),
    ` · last ${money(c.last)} · ${c.unit}`);
  cell.replaceChildren(table, foot);
  cell.classList.toggle("selected", symbol === state.selected);
  if (flash) { cell.classList.remove("flash"); void cell.offsetWidth; cell.classList.add("flash"); }
}

// ---- contract view --------------------------------------------------------------------------

function select(symbol) {
  const previous = state.selected;
  state.selected = symbol;
  state.book = { symbol, seq: -1, bids: new Map(), asks: new Map() };
  for (const cell of document.querySelectorAll("td.cell")) {
    cell.classList.toggle("selected", cell.dataset.symbol === symbol);
  }
  const c = state.contracts.get(symbol);
  $("contract-title").textContent = `${symbol} · ${c.description} · ${c.region_name} · ${c.unit}`;
  $("order-symbol").value = symbol;
  $("capacity-symbol").value = symbol;
  if (!$("order-price").value && (c.best_ask || c.best_bid)) $("order-price").value = money(c.best_ask || c.best_bid);
  $("tape").tBodies[0].replaceChildren();
  $("stats").replaceChildren();
  if (previous && previous !== symbol) send({ op: "unsubscribe", symbols: [previous], channels: ["depth", "stats"] });
  send({ op: "subscribe", symbols: [symbol], channels: ["depth", "stats", "trades"] });
  renderBook();
  api("GET", `/v1/contracts/${encodeURIComponent(symbol)}/trades?limit=20`).then((trades) => {
    if (state.selected === symbol) for (const t of trades.reverse()) addTrade(t);
  });
}

function applyDepth(message) {
  const book = state.book;
  if (!book || book.symbol !== message.symbol) return;
  if (message.type === "depth_snapshot") {
    book.bids = new Map(message.bids.map(([p, q]) => [p, q]));
    book.asks = new Map(message.asks.map(([p, q]) => [p, q]));
    book.seq = message.seq;
  } else {
    if (book.seq < 0 || message.seq <= book.seq) return;   // before the snapshot, or seen
    if (message.seq !== book.seq + 1) {                       // a gap: ask for a fresh snapshot
      book.seq = -1;
      send({ op: "snapshot", symbols: [message.symbol] });
      return;
    }
    for (const [side, levels] of [[book.bids, message.bids], [book.asks, message.asks]]) {
      for (const [p, q] of levels) { if (q) side.set(p, q); else side.delete(p); }
    }
    book.seq = message.seq;
  }
  renderBook();
}

function renderBook() {
  const book = state.book;
  const body = $("ladder").tBodies[0];
  body.replaceChildren();
  if (!book) return;
  const bids = [...book.bids].sort((a, b) => b[0] - a[0]);
  const asks = [...book.asks].sort((a, b) => a[0] - b[0]);
  for (let i = 0; i < Math.max(bids.length, asks.length, 1) && i < 12; i++) {
    const bid = bids[i], ask = asks[i];
    body.append(el("tr", { "data-testid": "level" },
      el("td", { class: "bid" }, bid ? String(bid[1]) : ""),
      el("td", { class: "bid", "data-testid": bid ? "bid-" + bid[0] : "" }, bid ? money(bid[0]) : ""),
      el("td", { class: "ask", "data-testid": ask ? "ask-" + ask[0] : "" }, ask ? money(ask[0]) : ""),
      el("td", { class: "ask" }, ask ? String(ask[1]) : "")));
  }
  drawDepth(bids, asks);
}

function drawDepth(bids, asks) {
  const canvas = $("depth-chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 24;
  ctx.clearRect(0, 0, w, h);
  if (!bids.length && !asks.length) {
    ctx.fillStyle = "#5b6570"; ctx.font = "13px sans-serif";
    ctx.fillText("no orders in the book", pad, h / 2);
    return;
  }
  const cumulate = (levels) => { let total = 0; return levels.map(([p, q]) => [p, (total += q)]); };
  const cb = cumulate(bids), ca = cumulate(asks);
  const prices = [...cb, ...ca].map((l) => l[0]);
  // A margin on both sides, so a single level on each side still shows as an area.
  let lo = Math.min(...prices), hi = Math.max(...prices);
  const margin = Math.max(hi - lo, 20) * 0.2;
  lo -= margin; hi += margin;
  const top = Math.max(1, ...cb.map((l) => l[1]), ...ca.map((l) => l[1]));
  const x = (p) => pad + ((p - lo) / (hi - lo)) * (w - 2 * pad);
  const y = (q) => h - pad - (q / top) * (h - 2 * pad);
  const area = (levels, colour, leftwards) => {
    if (!levels.length) return;
    ctx.beginPath();
    ctx.moveTo(x(levels[0][0]), y(0));
    let prev = 0;
    for (const [p, q] of levels) { ctx.lineTo(x(p), y(prev)); ctx.lineTo(x(p), y(q)); prev = q; }
    ctx.lineTo(leftwards ? pad : w - pad, y(prev));
    ctx.lineTo(leftwards ? pad : w - pad, y(0));
    ctx.closePath();
    ctx.fillStyle = colour + "33"; ctx.fill();
    ctx.strokeStyle = colour; ctx.lineWidth = 2; ctx.stroke();
  };
  area(cb, "#0a7d3b", true);
  area(ca, "#b3261e", false);
  ctx.fillStyle = "#5b6570"; ctx.font = "11px sans-serif";
  ctx.fillText(money(lo), pad, h - 6);
  ctx.fillText(money(hi), w - pad - 30, h - 6);
  ctx.fillText(String(top) + " units", pad, 14);
}

function addTrade(message) {
  const c = state.contracts.get(message.symbol);
  if (c) { c.last = message.price; renderCell(message.symbol, true); }
  if (message.symbol !== state.selected) return;
  const body = $("tape").tBodies[0];
  const row = el("tr", { "data-testid": "trade", class: "flash" },
    el("td", {}, time(message.ts)),
    el("td", {}, money(message.price)),
    el("td", {}, money(message.price_per_std)),
    el("td", {}, String(message.quantity)),
    // A call auction's trade has no aggressor: neither side took.
    el("td", { class: message.aggressor ?? "auction" }, message.aggressor ?? "auction"));
  body.prepend(row);
  while (body.rows.length > 30) body.deleteRow(-1);
}

function showStats(message) {
  if (message.symbol !== state.selected) return;
  const item = (label, value) => el("span", {}, label + " ", el("b", {}, value));
  $("stats").replaceChildren(
    item("last", money(message.last)),
    item("/std", money(message.last_per_std)),
    item("24h high", money(message.high)),
    item("24h low", money(message.low)),
    item("24h volume", String(message.volume)),
    item("trades", String(message.trades)),
    item("vwap", money(message.vwap)));
}

function applyQuote(message) {
  const c = state.contracts.get(message.symbol);
  if (!c) return;
  c.best_bid = message.bid ? message.bid.price : null;
  c.best_ask = message.ask ? message.ask.price : null;
  c.best_bid_per_std = message.bid_per_std;
  c.best_ask_per_std = message.ask_per_std;
  // Net of vouchers depends on the key's grants: without a key it is the gross price; with
  // one the exchange prices it (GET /v1/contracts/{symbol}), at most once a second.
  c.best_ask_net = c.best_ask;
  c.best_ask_net_per_std = message.ask_per_std;
  renderCell(message.symbol, message.ts !== null);
  if (state.key) refreshNet(message.symbol);
}

async function refreshNets() {
  // The catalogue priced for this key: only its net prices are taken (the stream keeps the rest).
  const contracts = await api("GET", "/v1/contracts").catch(() => []);
  for (const fresh of contracts) {
    const c = state.contracts.get(fresh.symbol);
    if (!c || fresh.best_ask !== c.best_ask) continue;
    c.best_ask_net = fresh.best_ask_net;
    c.best_ask_net_per_std = fresh.best_ask_net_per_std;
    renderCell(fresh.symbol, false);
  }
}

const netRefresh = new Map();

function refreshNet(symbol) {
  if (netRefresh.has(symbol)) return;
  netRefresh.set(symbol, setTimeout(async () => {
    netRefresh.delete(symbol);
    const fresh = await api("GET", "/v1/contracts/" + encodeURIComponent(symbol)).catch(() => null);
    const c = state.contracts.get(symbol);
    if (!fresh || !c || fresh.best_ask !== c.best_ask) return;
    c.best_ask_net = fresh.best_ask_net;
    c.best_ask_net_per_std = fresh.best_ask_net_per_std;
    renderCell(symbol, false);
  }, 1000));
}

// ---- the participant ------------------------------------------------------------------------

async function useKey(key) {
  state.key = key;
  try {
    state.me = await api("GET", "/v1/me");
  } catch (error) {
    state.me = null;
    state.key = "";
    sessionStorage.removeItem("cx-key");
    $("who").textContent = "key refused: " + error.message;
    return;
  }
  sessionStorage.setItem("cx-key", key);
  $("who").textContent = `${state.me.account_id} (${state.me.role})`;
  $("forget-key").hidden = false;
  $("provider").hidden = state.me.role !== "provider";
  send({ op: "auth", key });
  send({ op: "subscribe", channels: ["orders", "fills", "balances", "obligations"] });
  await refreshNets();
  await loadFills();
  if (state.me.role === "provider") await loadProvider();
}

function forgetKey() {
  sessionStorage.removeItem("cx-key");
  location.reload();
}

function renderOrders() {
  const body = $("my-orders").tBodies[0];
  body.replaceChildren();
  for (const o of state.orders.values()) {
    const price = el("input", { value: money(o.price), "data-testid": "amend-price-" + o.order_id });
    const amend = el("button", { type: "button", "data-testid": "amend-" + o.order_id }, "Amend");
    amend.addEventListener("click", () => amendOrder(o.order_id, price.value));
    const cancel = el("button", { type: "button", "data-testid": "cancel-" + o.order_id }, "Cancel");
    cancel.addEventListener("click", () => cancelOrder(o.order_id));
    body.append(el("tr", { "data-testid": "my-order", "data-order": o.order_id },
      el("td", {}, o.symbol), el("td", {}, o.side), el("td", {}, money(o.price)),
      el("td", {}, String(o.quantity)), el("td", {}, String(o.filled)),
      el("td", { "data-testid": "status-" + o.order_id }, o.status),
      el("td", {}, price, amend, cancel)));
  }
}

function applyOrder(o) {
  if (o.status === "open") state.orders.set(o.order_id, o);
  else state.orders.delete(o.order_id);
  renderOrders();
}

function applyBalance(message) {
  $("balance").textContent =
    `cash ${money(message.cash.available)} CNY available, ${money(message.cash.held)} held`;
}

function addFill(f, prepend = true) {
  const body = $("my-fills").tBodies[0];
  const row = el("tr", { "data-testid": "fill" },
    el("td", {}, time(f.ts)), el("td", {}, f.symbol), el("td", {}, f.side),
    el("td", {}, money(f.price)), el("td", {}, String(f.quantity)),
    el("td", {}, money(f.price * f.quantity)), el("td", {}, f.liquidity));
  if (prepend) body.prepend(row); else body.append(row);
  while (body.rows.length > 20) body.deleteRow(-1);
}

async function loadFills() {
  const fills = await api("GET", "/v1/fills?limit=20");
  $("my-fills").tBodies[0].replaceChildren();
  for (const f of fills) addFill(f, false);
}

function applySnapshot(message) {
  state.orders = new Map(message.open_orders.map((o) => [o.order_id, o]));
  renderOrders();
  applyBalance(message);
  renderDeposits(message.capacity);
  renderObligations(message.obligations);
}

async function loadProvider() {
  try {
    const account = await api("GET", "/v1/accounts/" + encodeURIComponent(state.me.account_id));
    renderDeposits(account.capacity);
  } catch (error) {
    if (error.status !== 404) throw error;
  }
  renderObligations(await api("GET", "/v1/obligations"));
}

function renderDeposits(capacity) {
  $("deposits").tBodies[0].replaceChildren(...capacity.map((c) =>
    el("tr", {}, el("td", {}, c.symbol), el("td", {}, String(c.available)), el("td", {}, String(c.held)))));
}

const obligations = new Map();
function renderObligations(list) {
  for (const o of list) obligations.set(o.symbol, o);
  const rows = [...obligations.values()].sort((a, b) => a.symbol.localeCompare(b.symbol));
  $("obligations").tBodies[0].replaceChildren(...rows.map((o) =>
    el("tr", {}, el("td", {}, o.symbol), el("td", {}, o.delivery_start ? hourLabel(o.delivery_start) : "-"),
      el("td", {}, String(o.quantity)), el("td", {}, money(o.payout)))));
  $("payout-total").textContent = money(rows.reduce((sum, o) => sum + o.payout, 0));
}

function result(text, ok) {
  $("order-result").textContent = text;
  $("order-result").className = "result " + (ok ? "ok" : "error");
}

function toFen(text) {
  const match = /^\s*(\d+)(?:\.(\d{1,2}))?\s*$/.exec(text);
  if (!match) return null;
  return Number(match[1]) * 100 + Number((match[2] || "0").padEnd(2, "0"));
}

async function placeOrder(event) {
  event.preventDefault();
  if (!state.me) return result("enter an API key first", false);
  if (!state.selected) return result("pick a contract in the catalogue first", false);
  const price = toFen($("order-price").value);
  const quantity = Number($("order-quantity").value);
  if (price === null) return result("price: CNY with at most two decimals, e.g. 18.00", false);
  const order = {
    symbol: state.selected,
    side: $("order-side").value,
    price,
    quantity,
    client_order_id: "web-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 8),
  };
  try {
    const answer = await api("POST", "/v1/orders", order);
    result(`${order.side} ${quantity} at ${money(price)}: ${answer.status} (${answer.order_id})`, true);
  } catch (error) {
    result("refused: " + error.message, false);
  }
}

async function amendOrder(orderId, priceText) {
  const price = toFen(priceText);
  if (price === null) return result("amend: price must be CNY, e.g. 18.10", false);
  try {
    const answer = await api("PATCH", "/v1/orders/" + orderId, { price });
    const kept = answer.kept_priority ? ", time priority kept" : "";
    result(`amended: now ${answer.remaining} at ${money(answer.price)} (${answer.order_id}${kept})`, true);
  } catch (error) {
    result("amend refused: " + error.message, false);
  }
}

async function cancelOrder(orderId) {
  try {
    const answer = await api("DELETE", "/v1/orders/" + orderId);
    result(`cancelled ${orderId}: ${answer.remaining} units never filled`, true);
  } catch (error) {
    result("cancel refused: " + error.message, false);
  }
}

async function depositCapacity(event) {
  event.preventDefault();
  if (!state.selected || !state.me) return;
  try {
    await api("POST", `/v1/accounts/${encodeURIComponent(state.me.account_id)}/deposits`,
      { kind: "capacity", symbol: state.selected, quantity: Number($("capacity-quantity").value) });
    result("capacity deposited", true);
  } catch (error) {
    result("deposit refused: " + error.message, false);
  }
}

// ---- the stream -----------------------------------------------------------------------------

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(message));
}

function connect() {
  const url = location.origin.replace(/^http/, "ws") + "/v1/stream";
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onopen = () => {
    state.retry = 0;
    $("connection").textContent = "live";
    $("connection").className = "on";
    send({ op: "subscribe", symbols: [...state.contracts.keys()], channels: ["quote", "trades"] });
    if (state.selected) select(state.selected);
    if (state.me) {
      send({ op: "auth", key: state.key });
      send({ op: "subscribe", channels: ["orders", "fills", "balances", "obligations"] });
    }
  };
  socket.onmessage = (event) => handle(JSON.parse(event.data));
  socket.onclose = (event) => {
    $("connection").textContent = "reconnecting" + (event.reason ? ": " + event.reason : "");
    $("connection").className = "off";
    const delay = Math.min(5000, 250 * 2 ** state.retry++);
    setTimeout(connect, delay);
  };
}

function handle(m) {
  switch (m.type) {
    case "quote": applyQuote(m); break;
    case "depth_snapshot": case "depth": applyDepth(m); break;
    case "trade": addTrade(m); break;
    case "stats": showStats(m); break;
    case "order": applyOrder(m); break;
    case "fill": addFill(m); break;
    case "balance": applyBalance(m); break;
    case "obligation": renderObligations([m]); break;
    case "account_snapshot": applySnapshot(m); break;
    case "resync": for (const s of m.snapshots) handle(s); break;
    case "error": console.warn("stream:", m.message); break;
    default: break;
  }
}

async function start() {
  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); useKey($("api-key").value.trim()); });
  $("forget-key").addEventListener("click", forgetKey);
  $("order-form").addEventListener("submit", placeOrder);
  $("capacity-form").addEventListener("submit", depositCapacity);
  await loadCatalogue();
  connect();
  if (state.key) await useKey(state.key);
}

start();
