// The operator's console: every contract's market state with halt and resume, price bands,
// the market-wide halt, every stage's lag and stalls (set aside what a stalled partition
// stopped at: the dead-letter topic), what is on the dead-letter topic, and the audit of the
// event history.
"use strict";

(() => {
  const { t, el, field, api } = CX;

  function say(text, ok) {
    const out = document.getElementById("operator-result");
    out.textContent = text;
    out.className = "result " + (ok ? "ok" : "error");
  }

  async function control(path, body, done) {
    try {
      await api("POST", path, body);
      say(done, true);
    } catch (error) {
      say(CX.problemText(error), false);
    }
    await refresh();
  }

  const reason = () => document.getElementById("operator-reason").value.trim() || t("operator.default-reason");

  function contractsTable(contracts) {
    return el("div", { class: "scroll" }, el("table", { "data-testid": "operator-contracts" },
      el("caption", {}, t("operator.contracts")),
      el("thead", {}, el("tr", {}, ...["orders.contract", "market.delivery", "market.state", "operator.band-now", ""].map((k) => el("th", { scope: "col" }, k ? t(k) : "")))),
      el("tbody", {}, ...contracts.map((c) => el("tr", { "data-testid": "contract-" + c.symbol },
        el("td", {}, c.symbol), el("td", {}, CX.cstHour(c.delivery_start)), el("td", { "data-testid": "state-" + c.symbol }, CX.stateBadge(c.state)),
        el("td", { "data-testid": "band-" + c.symbol }, c.band ? CX.yuan(c.band) : t("operator.no-band")),
        el("td", {},
          c.state === "halted"
            ? el("button", { type: "button", "data-testid": "resume-" + c.symbol, onclick: () => control(`/v1/admin/contracts/${c.symbol}/resume`, { reason: reason() }, t("operator.resumed", { symbol: c.symbol })) }, t("operator.resume"))
            : el("button", { type: "button", "data-testid": "halt-" + c.symbol, onclick: () => control(`/v1/admin/contracts/${c.symbol}/halt`, { reason: reason() }, t("operator.halted", { symbol: c.symbol })) }, t("operator.halt"))))))));
  }

  function healthTable(status) {
    return el("div", { class: "scroll" }, el("table", { "data-testid": "stages" },
      el("caption", {}, t(status.stalled ? "operator.health-stalled" : "operator.health-ok")),
      el("thead", {}, el("tr", {}, ...["operator.stage", "operator.partition", "operator.lag", "operator.progressing"].map((k) => el("th", { scope: "col" }, t(k))))),
      el("tbody", {}, ...status.stages.map((s) => el("tr", {}, el("td", {}, s.stage), el("td", {}, s.topic + ":" + s.partition),
        el("td", {}, String(s.lag)), el("td", {}, s.progressing ? t("wizard.yes") : t("operator.idle", { seconds: Math.round(s.idle_seconds) }))))),
    ));
  }

  function stallsList(status) {
    if (!status.stalls.length) return el("p", { "data-testid": "stalls" }, t("operator.no-stalls"));
    return el("ul", { "data-testid": "stalls" }, ...status.stalls.map((s) => el("li", {},
      t("operator.stall", { stage: s.stage, where: s.topic + ":" + s.partition, kind: s.kind, lag: s.lag }), " ",
      s.kind === "cannot_apply" ? el("button", { type: "button", onclick: () => control("/v1/admin/set-aside", { source: `${s.topic}:${s.partition}:${s.offset}`, reason: reason() }, t("operator.set-aside")) }, t("operator.set-aside-button")) : "")));
  }

  function deadLettersTable(letters) {
    if (!letters.length) return el("p", { "data-testid": "dead-letters" }, t("operator.no-dead-letters"));
    // Nothing in the table takes the focus, so the scrolling box does, for the keyboard.
    return el("div", { class: "scroll", tabIndex: 0, role: "region", "aria-label": t("operator.dead-letters") }, el("table", { "data-testid": "dead-letters", class: "dead-letters" },
      el("caption", {}, t("operator.dead-letters")),
      el("thead", {}, el("tr", {}, ...["operator.source", "operator.stage", "operator.event", "operator.logged-at", "operator.set-aside-by", "operator.why"].map((k) => el("th", { scope: "col" }, t(k))))),
      el("tbody", {}, ...letters.map((d) => el("tr", { "data-testid": "dead-letter", "data-source": d.source },
        el("td", {}, d.source), el("td", {}, d.stage), el("td", {}, d.event_type ? `${d.event_type} ${d.event_id}` : "–"),
        el("td", {}, CX.cstHour(d.logged_at)),
        el("td", {}, d.set_aside_by ? t("operator.set-aside-by-at", { who: d.set_aside_by, when: CX.cstHour(d.set_aside_at) }) : t("operator.set-aside-by-stage")),
        el("td", { class: "why", title: d.set_aside_reason || d.reason }, d.set_aside_reason || d.reason.split("\n")[0])))),
    ));
  }

  async function refresh() {
    const [contracts, status, letters] = await Promise.all([CX.loadContracts(), api("GET", "/v1/admin/status"), api("GET", "/v1/admin/dead-letters")]);
    document.getElementById("operator-contracts").replaceChildren(contractsTable(contracts));
    document.getElementById("operator-health").replaceChildren(healthTable(status), stallsList(status));
    document.getElementById("operator-dead-letters").replaceChildren(deadLettersTable(letters));
  }

  async function runAudit() {
    const out = document.getElementById("audit-result");
    out.textContent = t("operator.auditing");
    const report = await api("GET", "/v1/admin/audit");
    out.textContent = t(report.discrepancies.length ? "operator.audit-bad" : "operator.audit-ok",
      { events: report.events, trades: report.trades, count: report.discrepancies.length, hash: String(report.state_hash).slice(0, 12) });
  }

  async function render(root) {
    const families = [...new Set((await CX.loadContracts()).map((c) => c.resource_class + "." + c.region))].sort();
    const band = el("form", { class: "order-form", "data-testid": "band-form" },
      field("operator.family", el("select", { name: "family" }, ...families.map((f) => el("option", { value: f }, f)))),
      field("operator.band", el("input", { name: "band", inputMode: "decimal", size: 6 })),
      el("button", { type: "submit" }, t("operator.set-band")));
    band.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(band);
      control(`/v1/admin/contracts/${data.get("family")}/set_band`, { band: CX.toFen(data.get("band")) || 0, reason: reason() }, t("operator.band-set"));
    });
    root.append(
      el("section", { "aria-labelledby": "operator-title" },
        el("h2", { id: "operator-title" }, t("operator.title")),
        field("operator.reason", el("input", { id: "operator-reason", size: 30, "data-testid": "operator-reason" })),
        el("p", { class: "actions" },
          el("button", { type: "button", "data-testid": "market-halt", onclick: () => control("/v1/admin/market/halt", { reason: reason() }, t("operator.market-halted")) }, t("operator.market-halt")),
          el("button", { type: "button", "data-testid": "market-resume", onclick: () => control("/v1/admin/market/resume", { reason: reason() }, t("operator.market-resumed")) }, t("operator.market-resume")),
          el("button", { type: "button", "data-testid": "audit", onclick: () => runAudit().catch((e) => say(CX.problemText(e), false)) }, t("operator.audit"))),
        el("p", { id: "audit-result", role: "status", "data-testid": "audit-result" }),
        el("p", { id: "operator-result", class: "result", role: "status", "data-testid": "operator-result" }),
        band),
      el("section", { id: "operator-health", "aria-label": t("operator.health") }),
      el("section", { id: "operator-dead-letters", "aria-label": t("operator.dead-letters") }),
      el("section", { id: "operator-contracts" }));
    await refresh();
    CX.every(3000, refresh);
  }

  CX.register("operator", { roles: ["operator"], render });
})();
