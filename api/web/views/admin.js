// The programme administrator's view: create a compute-voucher programme, review its
// applications (approve, ask a question, reject), and read the programme report: the budget
// burning down (chart), grants by enterprise, clawbacks, the report as JSON and PDF.
"use strict";

(() => {
  const { t, el, field, api, yuan, unitName } = CX;
  // Units bought, each in its own unit: card-hours, core-hours and tokens do not add.
  const unitsText = (units) => Object.entries(units).map(([unit, count]) => `${count} ${unitName(unit)}`).join(" · ") || "0";
  let programme = sessionStorage.getItem("cx-programme") || "";
  let chart = null;

  function say(text, ok) {
    const out = document.getElementById("admin-result");
    out.textContent = text;
    out.className = "result " + (ok ? "ok" : "error");
  }

  function programmeForm() {
    const today = Date.now();
    const form = el("form", { class: "order-form", "data-testid": "programme-form" },
      field("admin.programme-id", el("input", { name: "programme_id", required: true, size: 16, "data-testid": "programme-id" })),
      field("admin.issuer", el("input", { name: "issuer", required: true, size: 16, "data-testid": "programme-issuer" })),
      field("admin.budget", el("input", { name: "budget", inputMode: "decimal", required: true, size: 10, "data-testid": "programme-budget" })),
      field("admin.rate", el("input", { name: "rate", type: "number", min: "1", max: "100", value: "30" })),
      field("admin.cap-contract", el("input", { name: "cap_per_contract", inputMode: "decimal", value: "10000" })),
      field("admin.cap-enterprise", el("input", { name: "cap_per_enterprise", inputMode: "decimal", value: "200000" })),
      el("button", { type: "submit", "data-testid": "create-programme" }, t("admin.create")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const body = { programme_id: data.get("programme_id"), issuer: data.get("issuer"), budget: CX.toFen(data.get("budget")),
        rate_bps: Number(data.get("rate")) * 100, cap_per_contract: CX.toFen(data.get("cap_per_contract")),
        cap_per_enterprise: CX.toFen(data.get("cap_per_enterprise")), kinds: ["sme", "opc"],
        valid_from: today - 86400e3, valid_until: today + 3 * 365 * 86400e3 };
      try {
        await api("POST", "/v1/programmes", body);
        programme = body.programme_id;
        sessionStorage.setItem("cx-programme", programme);
        say(t("admin.created", { programme }), true);
        document.getElementById("programme-pick").value = programme;
        await settled(report);
        await applications();
      } catch (error) {
        say(CX.problemText(error), false);
      }
    });
    return form;
  }

  // The programme's applications: a pending one is approved (for its amount or less), asked a
  // question, or rejected with a reason; the rest show where they stand.
  async function applications() {
    const box = document.getElementById("applications");
    if (!programme) { box.replaceChildren(); return; }
    const rows = await api("GET", `/v1/programmes/${encodeURIComponent(programme)}/applications`);
    const base = `/v1/programmes/${encodeURIComponent(programme)}`;
    const act = async (path, body, done) => {
      try { await api("POST", path, body); say(done, true); } catch (error) { say(CX.problemText(error), false); }
      await settled(report);
      await applications();
    };
    box.replaceChildren(el("div", { class: "scroll" }, el("table", { "data-testid": "applications" },
      el("caption", {}, t("admin.applications")),
      el("thead", {}, el("tr", {}, ...["admin.enterprise", "vouchers.uscc", "admin.kind", "admin.city", "vouchers.amount", "vouchers.use", "vouchers.status", ""].map((k) => el("th", { scope: "col" }, k ? t(k) : "")))),
      el("tbody", {}, ...rows.map((a) => {
        const id = a.application_id;
        const limit = el("input", { value: CX.amount(a.amount), size: 9, "aria-label": t("admin.limit"), "data-testid": "limit-" + id });
        const text = el("input", { size: 16, "aria-label": t("admin.note"), "data-testid": "note-" + id });
        const path = `${base}/applications/${encodeURIComponent(id)}`;
        const actions = a.status === "pending" ? [limit,
          el("button", { type: "button", class: "primary", "data-testid": "approve-" + id, onclick: () => act(`${base}/grants`, { application_id: id, limit: CX.toFen(limit.value), related_accounts: [] }, t("admin.approved", { account: a.name, limit: yuan(CX.toFen(limit.value)) })) }, t("admin.approve")),
          text,
          el("button", { type: "button", "data-testid": "ask-" + id, onclick: () => act(`${path}/info-requests`, { question: text.value || t("admin.default-question") }, t("admin.asked")) }, t("admin.ask")),
          el("button", { type: "button", "data-testid": "reject-" + id, onclick: () => act(`${path}/rejection`, { reason: text.value || t("admin.default-reason") }, t("admin.rejected")) }, t("admin.reject"))] : [];
        return el("tr", { "data-testid": "application-" + id },
          el("td", {}, a.name, el("div", { class: "note" }, a.account_id)), el("td", {}, a.uscc), el("td", {}, t("kind." + a.kind, { defaultValue: a.kind })),
          el("td", {}, a.city), el("td", {}, yuan(a.amount)), el("td", {}, a.intended_use,
            a.question ? el("div", { class: "note" }, t("vouchers.question", { question: a.question })) : null,
            a.answer ? el("div", { class: "note" }, t("vouchers.answer-was", { answer: a.answer })) : null),
          el("td", { "data-testid": "status-" + id }, t("application." + a.status, { defaultValue: a.status }), a.granted ? " · " + yuan(a.granted) : ""),
          el("td", {}, ...actions));
      })))));
  }

  // A programme just created reaches the report once settled: try again for a few seconds.
  async function settled(read) {
    for (let attempt = 0; ; attempt++) {
      try { return await read(); } catch (error) {
        if (error.status !== 404 || attempt >= 20) throw error;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }

  async function report() {
    const box = document.getElementById("programme-report");
    if (!programme) { box.replaceChildren(el("p", { class: "note" }, t("admin.pick"))); return; }
    const r = await api("GET", `/v1/programmes/${encodeURIComponent(programme)}/report`);
    const figure = (label, fen, testid) => [el("dt", {}, t(label)), el("dd", { "data-testid": testid }, yuan(fen))];
    const canvas = el("canvas", { role: "img", "aria-label": t("admin.burn-down-label", { remaining: yuan(r.remaining) }) });
    box.replaceChildren(
      el("h3", {}, t("admin.report", { programme: r.programme_id, issuer: r.issuer || "" })),
      el("dl", { class: "figures" }, figure("admin.budget", r.budget, "report-budget"), figure("admin.granted", r.granted, "report-granted"),
        figure("admin.committed", r.committed), figure("admin.reserved", r.reserved), figure("admin.clawed-back", r.clawed_back),
        figure("admin.remaining", r.remaining, "report-remaining")),
      el("div", { class: "chart" }, canvas),
      el("div", { class: "scroll" }, el("table", { "data-testid": "by-enterprise" }, el("caption", {}, t("admin.by-enterprise")),
        el("thead", {}, el("tr", {}, ...["admin.enterprise", "admin.purchases", "admin.units", "admin.gross", "admin.voucher"].map((k) => el("th", { scope: "col" }, t(k))))),
        el("tbody", {}, ...r.by_enterprise.map((e) => el("tr", {}, el("td", {}, e.name), el("td", {}, String(e.purchases)), el("td", {}, unitsText(e.units)), el("td", {}, yuan(e.gross)), el("td", {}, yuan(e.voucher))))))),
      el("p", {}, el("button", { type: "button", onclick: () => CX.download(`programme-${r.programme_id}.json`, JSON.stringify(r, null, 2), "application/json") }, t("admin.download")),
        " ", el("button", { type: "button", "data-testid": "report-pdf", onclick: () => CX.downloadFrom(`/v1/programmes/${encodeURIComponent(r.programme_id)}/report?format=pdf`, `programme-${r.programme_id}.pdf`).catch((error) => say(CX.problemText(error), false)) }, t("admin.download-pdf"))));
    if (chart) chart.destroy();
    chart = new Chart(canvas, {
      type: "line",
      data: { labels: [t("admin.start"), ...r.burn_down.map((d) => d.day)], datasets: [{ label: t("admin.remaining"), data: [r.budget, ...r.burn_down.map((d) => d.remaining)].map((f) => f / 100), borderColor: "#0b5cad", stepped: true }] },
      options: { animation: false, maintainAspectRatio: false, scales: { y: { beginAtZero: true, title: { display: true, text: t("money.unit-yuan") } } } },
    });
  }

  async function render(root) {
    const pick = el("input", { id: "programme-pick", value: programme, size: 16, "data-testid": "programme-pick" });
    root.append(
      el("section", { "aria-labelledby": "admin-title" },
        el("h2", { id: "admin-title" }, t("admin.title")),
        el("details", {}, el("summary", {}, t("admin.new-programme")), programmeForm()),
        el("form", { class: "order-form", onsubmit: async (e) => { e.preventDefault(); programme = pick.value.trim(); sessionStorage.setItem("cx-programme", programme); await report().catch((error) => say(CX.problemText(error), false)); await applications().catch(() => {}); } },
          field("admin.programme-id", pick), el("button", { type: "submit" }, t("admin.show"))),
        el("p", { id: "admin-result", class: "result", role: "status", "data-testid": "admin-result" })),
      el("section", { id: "applications" }),
      el("section", { id: "programme-report" }));
    await report().catch((error) => say(CX.problemText(error), false));
    await applications().catch(() => {});
    // The report is read from the settled history, a moment behind what was just approved;
    // applications arrive while the view is open (focus in the table holds the refresh).
    CX.every(2000, async () => {
      await report();
      if (!document.getElementById("applications").contains(document.activeElement)) await applications();
    });
  }

  CX.register("admin", { roles: ["programme_admin"], render });
})();
