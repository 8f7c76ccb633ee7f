// The compute supermarket: the shell every view shares. It loads the message catalogue
// (i18next; Chinese by default, English on the switch), holds the key and the account, talks
// to the API and routes #/view to the view that registered it (views/*.js). Strings shown to a
// person come from i18n/*.json, never from code; see docs/API.md, "The supermarket page".
"use strict";

const CX = (() => {
  const views = new Map();          // name -> {roles, render(root)}
  const state = { key: sessionStorage.getItem("cx-key") || "", me: null, contracts: [], timer: null };
  const languages = ["zh-CN", "en"];

  const t = (key, vars) => i18next.t(key, vars);
  const $ = (id) => document.getElementById(id);

  // el("tag", {attrs}, ...children): data-*, aria-* and for become attributes, the rest properties.
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "for" || k === "role") node.setAttribute(k, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node[k] = v;
    }
    for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  // A labelled form control: every input has a visible label tied to it.
  let fieldCount = 0;
  function field(labelKey, control) {
    const id = control.id || "f" + ++fieldCount;
    control.id = id;
    return el("label", { class: "field", for: id }, el("span", {}, t(labelKey)), control);
  }

  // ---- money, units and time --------------------------------------------------------------
  const amount = (fen) => (fen === null || fen === undefined ? "–" : (fen / 100).toFixed(2));
  const yuan = (fen) => (fen === null || fen === undefined ? "–" : t("money.yuan", { amount: amount(fen) }));
  const unitName = (unit) => t("unit." + unit);
  const perUnit = (fen, unit) => (fen === null || fen === undefined ? "–" : t("money.per", { amount: amount(fen), unit: unitName(unit) }));
  const perStd = (fen) => perUnit(fen, "standard-card-hour");
  function toFen(text) {
    const match = /^\s*(\d+)(?:\.(\d{1,2}))?\s*$/.exec(String(text));
    if (!match) return null;
    return Number(match[1]) * 100 + Number((match[2] || "0").padEnd(2, "0"));
  }
  // Times are China Standard Time, the delivery hours' zone, whatever the browser's zone.
  const cstFormat = (options) => new Intl.DateTimeFormat(i18next.language, { timeZone: "Asia/Shanghai", hour12: false, ...options });
  const cst = (ms) => (ms ? cstFormat({ month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" }).format(new Date(ms)) : "");
  const cstDay = (ms) => cstFormat({ month: "2-digit", day: "2-digit" }).format(new Date(ms));
  const cstHour = (iso) => cst(Date.parse(iso));
  const isBundle = CxDeliveries.isBundle;
  const cstDate = (ms) => new Date(ms + 8 * 3600e3).toISOString().slice(0, 10);
  const region = (code) => t("region." + code, { defaultValue: code });
  const stateBadge = (s) => el("span", { class: "badge state-" + (s || "unknown"), "data-testid": "market-state" }, t("state." + (s || "unknown")));
  const problemText = (error) => {
    const code = error.problem && error.problem.type ? error.problem.type.replace("/problems/", "") : "";
    const known = code && i18next.exists("problem." + code) ? t("problem." + code) : "";
    return [known, error.message].filter(Boolean).join(": ");
  };

  // ---- the API ----------------------------------------------------------------------------
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

  async function loadContracts() {
    state.contracts = await api("GET", "/v1/contracts");
    return state.contracts;
  }

  function download(name, text, type) {
    const link = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
    document.body.append(link);
    link.click();
    link.remove();
  }

  // A file the API answers (a PDF, a CSV), fetched with the key and saved under `name`.
  async function downloadFrom(path, name) {
    const response = await fetch(path, { headers: state.key ? { authorization: "Bearer " + state.key } : {} });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      const error = new Error(data.detail || response.statusText);
      error.problem = data;
      error.status = response.status;
      throw error;
    }
    const link = el("a", { href: URL.createObjectURL(await response.blob()), download: name });
    document.body.append(link);
    link.click();
    link.remove();
  }

  // ---- views and routing ------------------------------------------------------------------
  function register(name, view) { views.set(name, view); }

  function allowed(view) { return !view.roles || (state.me && view.roles.includes(state.me.role)); }

  function renderNav() {
    const current = currentView();
    $("nav").replaceChildren(...[...views].filter(([, v]) => allowed(v)).map(([name]) =>
      el("a", { href: "#/" + name, "data-testid": "nav-" + name, "aria-current": name === current ? "page" : undefined }, t("nav." + name))));
  }

  function currentView() {
    const name = location.hash.replace(/^#\//, "").split("?")[0];
    return views.has(name) && allowed(views.get(name)) ? name : "market";
  }

  // One view renders at a time: a show asked for while another renders (a key used while the
  // page is still loading its first view) starts once that one is done, so two renders never
  // fill the view together nor leave a refresh timer running behind the shown view.
  let showing = Promise.resolve();
  function show() {
    showing = showing.then(showNow, showNow);
    return showing;
  }

  async function showNow() {
    clearInterval(state.timer);
    const name = currentView();
    renderNav();
    const root = $("view");
    root.replaceChildren();
    root.dataset.view = name;
    try {
      await views.get(name).render(root);
    } catch (error) {
      root.append(el("p", { class: "result error", role: "alert" }, problemText(error)));
    }
  }

  // Refresh the shown view every `ms` while it stays shown.
  function every(ms, refresh) { state.timer = setInterval(() => refresh().catch(() => {}), ms); }

  // ---- key and language -------------------------------------------------------------------
  async function useKey(key) {
    state.key = key;
    try {
      state.me = key ? await api("GET", "/v1/me") : null;
    } catch (error) {
      state.me = null;
      state.key = "";
      sessionStorage.removeItem("cx-key");
      $("who").textContent = t("key.refused", { reason: problemText(error) });
      return;
    }
    if (key) sessionStorage.setItem("cx-key", key);
    $("who").textContent = state.me ? t("key.who", { account: state.me.account_id, role: t("role." + state.me.role) }) : t("key.anonymous");
    $("forget-key").hidden = !state.me;
    await show();
  }

  function translatePage() {
    document.documentElement.lang = i18next.language;
    document.title = t("app.title");
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
    for (const node of document.querySelectorAll("[data-i18n-label]")) node.setAttribute("aria-label", t(node.dataset.i18nLabel));
    $("language").textContent = t("app.other-language");
    $("language").lang = i18next.language === "zh-CN" ? "en" : "zh-CN";
    if (!state.me) $("who").textContent = t("key.anonymous");
    else $("who").textContent = t("key.who", { account: state.me.account_id, role: t("role." + state.me.role) });
  }

  async function start() {
    const resources = {};
    for (const lng of languages) resources[lng] = { translation: await (await fetch(`/web/i18n/${lng}.json`)).json() };
    const lng = localStorage.getItem("cx-language") || "zh-CN";
    await i18next.init({ lng, fallbackLng: "zh-CN", resources, interpolation: { escapeValue: false } });
    translatePage();
    $("language").addEventListener("click", async () => {
      const next = i18next.language === "zh-CN" ? "en" : "zh-CN";
      localStorage.setItem("cx-language", next);
      await i18next.changeLanguage(next);
      translatePage();
      await show();
    });
    $("key-form").addEventListener("submit", (e) => { e.preventDefault(); useKey($("api-key").value.trim()); });
    $("forget-key").addEventListener("click", () => { sessionStorage.removeItem("cx-key"); useKey(""); });
    window.addEventListener("hashchange", show);
    await useKey(state.key);
  }

  return {
    t, el, field, api, amount, yuan, perUnit, perStd, unitName, toFen, cst, cstDay, cstHour, cstDate, isBundle,
    region, stateBadge, problemText, state, register, every, loadContracts, download, downloadFrom, start, show,
  };
})();

document.addEventListener("DOMContentLoaded", () => CX.start());
