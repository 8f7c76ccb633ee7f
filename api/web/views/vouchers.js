// 算力券 for an enterprise: register the enterprise behind the account (name, unified social
// credit code, kind, city), apply to a programme for a grant, follow each application and
// answer an administrator's question.
"use strict";

(() => {
  const { t, el, field, api, yuan } = CX;

  function say(text, ok) {
    const out = document.getElementById("vouchers-result");
    out.textContent = text;
    out.className = "result " + (ok ? "ok" : "error");
  }

  function form(testid, fields, submitKey, send) {
    const node = el("form", { class: "order-form", "data-testid": testid }, ...fields,
      el("button", { type: "submit", class: "primary", "data-testid": testid + "-submit" }, t(submitKey)));
    node.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        say(await send(new FormData(node)), true);
      } catch (error) {
        say(CX.problemText(error), false);
      }
      await refresh();
    });
    return node;
  }

  async function refresh() {
    const me = CX.state.me;
    const [registered, applications] = await Promise.all([
      api("GET", `/v1/accounts/${encodeURIComponent(me.account_id)}/enterprise`).catch(() => null),
      api("GET", "/v1/applications"),
    ]);
    document.getElementById("registered").textContent = registered
      ? t("vouchers.registered", { name: registered.name, uscc: registered.uscc, kind: t("kind." + registered.kind), city: registered.city })
      : t("vouchers.not-registered");
    document.getElementById("my-applications").replaceChildren(el("div", { class: "scroll" }, el("table", { "data-testid": "my-applications" },
      el("caption", {}, t("vouchers.applications")),
      el("thead", {}, el("tr", {}, ...["admin.programme-id", "vouchers.application", "vouchers.amount", "vouchers.status", "vouchers.granted", ""].map((k) => el("th", { scope: "col" }, k ? t(k) : "")))),
      el("tbody", {}, ...applications.map((a) => {
        const answer = el("input", { size: 20, "aria-label": t("vouchers.answer"), "data-testid": "answer-" + a.application_id });
        return el("tr", { "data-testid": "application-" + a.application_id },
          el("td", {}, a.programme_id), el("td", {}, a.application_id), el("td", {}, yuan(a.amount)),
          el("td", {}, t("application." + a.status, { defaultValue: a.status }), a.question ? el("div", { class: "note" }, t("vouchers.question", { question: a.question })) : null,
            a.reason ? el("div", { class: "note" }, t("vouchers.reason", { reason: a.reason })) : null),
          el("td", {}, a.granted ? yuan(a.granted) : "–"),
          el("td", {}, a.status === "info_requested" ? [answer, el("button", { type: "button", onclick: async () => {
            try {
              await api("POST", `/v1/programmes/${encodeURIComponent(a.programme_id)}/applications/${encodeURIComponent(a.application_id)}/supplements`, { answer: answer.value });
              say(t("vouchers.answered"), true);
            } catch (error) { say(CX.problemText(error), false); }
            await refresh();
          } }, t("vouchers.send-answer"))] : ""));
      })))));
  }

  async function render(root) {
    const me = CX.state.me;
    root.append(
      el("section", { "aria-labelledby": "vouchers-title" },
        el("h2", { id: "vouchers-title" }, t("vouchers.title")),
        el("p", { class: "note" }, t("vouchers.explain")),
        el("h3", {}, t("vouchers.enterprise")),
        el("p", { id: "registered", "data-testid": "registered" }),
        form("register-form", [
          field("vouchers.name", el("input", { name: "name", required: true, size: 24, "data-testid": "enterprise-name" })),
          field("vouchers.uscc", el("input", { name: "uscc", required: true, size: 20, "data-testid": "enterprise-uscc" })),
          field("admin.kind", el("select", { name: "kind" }, ...["sme", "opc", "large"].map((k) => el("option", { value: k }, t("kind." + k))))),
          field("admin.city", el("input", { name: "city", required: true, size: 12, "data-testid": "enterprise-city" })),
        ], "vouchers.register", async (data) => {
          await api("POST", `/v1/accounts/${encodeURIComponent(me.account_id)}/enterprise`, Object.fromEntries(data));
          return t("vouchers.registered-now");
        }),
        el("h3", {}, t("vouchers.apply-title")),
        form("apply-form", [
          field("admin.programme-id", el("input", { name: "programme", required: true, size: 16, "data-testid": "apply-programme" })),
          field("vouchers.amount", el("input", { name: "amount", inputMode: "decimal", required: true, size: 10, "data-testid": "apply-amount" })),
          field("vouchers.use", el("input", { name: "use", required: true, size: 30, "data-testid": "apply-use" })),
        ], "vouchers.apply", async (data) => {
          const answer = await api("POST", `/v1/programmes/${encodeURIComponent(data.get("programme"))}/applications`,
            { application_id: "web-" + Date.now().toString(36), amount: CX.toFen(data.get("amount")), intended_use: data.get("use") });
          return t("vouchers.applied", { id: answer.id || "" });
        }),
        el("p", { id: "vouchers-result", class: "result", role: "status", "data-testid": "vouchers-result" })),
      el("section", { id: "my-applications" }));
    await refresh();
    CX.every(3000, refresh);
  }

  CX.register("vouchers", { roles: ["buyer", "provider"], render });
})();
