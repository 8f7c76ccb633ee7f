// 帮我选 (help me choose): start from the work, estimate card-hours per card class from stated
// assumptions (estimate.js), ask the planner (POST /v1/needs/plan) for every alternative and
// its cost, explain the choice, and place the need with one click (POST /v1/needs).
"use strict";

(() => {
  const { t, el, field, api, yuan, region } = CX;
  const HOUR = 3600e3;
  const DEFAULT_BUDGET = 100000000;   // fen: a need must name the most it may cost
  const form = {
    kind: "finetune", paramsBillions: 7, tokensBillions: 0.1, tokensMillionsPerDay: 50, days: 1,
    cls: "", cards: 1, hours: 1, regions: null, interruptible: false, budget: "", voucher: "",
    earliest: null, deadline: null, assumptions: { ...CxEstimate.ASSUMPTIONS },
  };
  let last = null;    // {body, plan}

  // datetime-local values are read and written as China Standard Time.
  const toLocal = (ms) => new Date(ms + 8 * HOUR).toISOString().slice(0, 16);
  const fromLocal = (text) => Date.parse(text + ":00Z") - 8 * HOUR;

  function number(key, testid, step = "any", target = form) {
    return el("input", { type: "number", step, min: "0", value: target[key], "data-testid": testid,
      oninput: (e) => { target[key] = Number(e.target.value); } });
  }

  function needBody(estimate, classes) {
    const body = {
      hours: form.hours, earliest_start: form.earliest, deadline: form.deadline,
      regions: form.regions.map((r) => ({ region: r })),
      max_total: CX.toFen(form.budget) || DEFAULT_BUDGET,
    };
    if (form.voucher) body.voucher = form.voucher;
    if (form.kind === "known") return { ...body, unit: "cards", quantity: form.cards, classes };
    return { ...body, unit: "standard_card_hours", quantity: Math.max(1, estimate.standardHours), classes };
  }

  const same = (a, b) => a.family === b.family && a.delivery_start === b.delivery_start;

  function explain(plan) {
    const chosen = plan.chosen;
    if (!chosen) return t("wizard.none", { reason: t("reason." + plan.reason, { defaultValue: plan.reason || "" }) });
    const feasible = plan.alternatives.filter((a) => a.feasible && a.ranked_total !== null);
    const others = feasible.filter((a) => !same(a, chosen)).sort((a, b) => a.ranked_total - b.ranked_total);
    const what = { product: chosen.family, start: CX.cstHour(chosen.delivery_start), cost: yuan(chosen.cost), net: yuan(afterVoucher(chosen)), cards: chosen.cards_per_hour };
    const why = others.length
      ? t("wizard.cheapest", { ...what, count: others.length + 1, other: others[0].family + " " + CX.cstHour(others[0].delivery_start), saving: yuan(others[0].ranked_total - chosen.ranked_total) })
      : t("wizard.only", what);
    // Without a voucher named the planner ranks by the price before vouchers; say so when the
    // key's vouchers would change the order.
    if (form.voucher) return why;
    const cheapestNet = [...feasible].sort((a, b) => afterVoucher(a) - afterVoucher(b))[0];
    if (afterVoucher(cheapestNet) < afterVoucher(chosen)) {
      return why + " " + t("wizard.voucher-note", { product: cheapestNet.family, cost: yuan(afterVoucher(cheapestNet)) });
    }
    return why;
  }

  function afterVoucher(alternative) {
    // With a voucher named, the planner's own figure; otherwise the key's vouchers as the
    // catalogue prices them for its best ask now (an estimate).
    if (form.voucher && alternative.net_cost !== null && alternative.net_cost !== undefined) return alternative.net_cost;
    const c = CX.state.contracts.find((x) => x.symbol === alternative.symbols[0]);
    if (!c || !c.best_ask || alternative.cost === null) return alternative.cost;
    return Math.round((alternative.cost * c.best_ask_net) / c.best_ask);
  }

  function renderEstimate(box, estimate) {
    if (!estimate) { box.replaceChildren(); return; }
    box.replaceChildren(
      el("p", { "data-testid": "estimate-summary" }, t("wizard.estimate-summary", {
        tflop: (estimate.flops / 1e15).toFixed(0), memory: estimate.memoryGB.toFixed(1), std: estimate.standardHours })),
      el("div", { class: "scroll" }, el("table", { "data-testid": "estimate-table" },
        el("caption", {}, t("wizard.per-class")),
        el("thead", {}, el("tr", {}, ...["wizard.class", "market.memory", "wizard.cards-for-memory", "wizard.card-hours", "wizard.cards-per-hour", "wizard.fits"].map((k) => el("th", { scope: "col" }, t(k))))),
        el("tbody", {}, ...estimate.classes.map((c) => el("tr", { "data-testid": "estimate-" + c.code },
          el("td", {}, c.code), el("td", {}, c.memoryGB ? t("market.gb", { n: c.memoryGB }) : "–"),
          el("td", {}, String(c.cardsForMemory ?? "–")), el("td", {}, c.cardHours.toFixed(1)),
          el("td", {}, String(c.cardsPerHour)), el("td", {}, c.fits ? t("wizard.yes") : t("wizard.too-little-memory"))))))));
  }

  function renderPlan(box, plan) {
    const row = (a) => el("tr", { "data-testid": "alternative", class: plan.chosen && same(a, plan.chosen) ? "chosen" : "" },
      el("td", {}, a.kind === "strip" ? a.symbols[0] : a.family), el("td", {}, CX.cstHour(a.delivery_start)), el("td", {}, String(a.cards_per_hour)),
      el("td", {}, a.standard_card_hours), el("td", {}, yuan(a.cost)), el("td", {}, yuan(afterVoucher(a))),
      el("td", {}, a.feasible ? t("wizard.feasible") : t("reason." + a.reason, { defaultValue: a.reason })));
    box.replaceChildren(
      el("h3", {}, t("wizard.alternatives")),
      el("p", { class: "explain", "data-testid": "plan-explanation" }, explain(plan)),
      el("div", { class: "scroll" }, el("table", { "data-testid": "plan-table" },
        el("thead", {}, el("tr", {}, ...["wizard.product", "wizard.start", "wizard.cards-per-hour", "wizard.std-hours", "wizard.cost", "wizard.cost-after-voucher", "wizard.status"].map((k) => el("th", { scope: "col" }, t(k))))),
        el("tbody", {}, ...plan.alternatives.map(row)))),
      plan.excluded.length ? el("ul", { class: "note" }, ...plan.excluded.map((x) => el("li", {}, x.family, ": ", t("reason." + x.reason, { defaultValue: x.reason })))) : null,
      plan.chosen ? el("button", { type: "button", class: "primary", "data-testid": "place-need", onclick: placeNeed }, t("wizard.place", { cost: yuan(plan.chosen.cost) })) : null,
      el("p", { id: "need-result", class: "result", role: "status", "data-testid": "need-result" }));
  }

  async function placeNeed() {
    const out = document.getElementById("need-result");
    try {
      const need = await api("POST", "/v1/needs", { ...last.body, client_need_id: "web-" + Date.now().toString(36) });
      const order = need.order || {};
      out.className = "result ok";
      out.textContent = t("wizard.placed", { status: t("need-status." + need.status), filled: order.filled ?? 0, paid: yuan(order.paid ?? 0) });
    } catch (error) {
      out.className = "result error";
      out.textContent = CX.problemText(error);
    }
  }

  async function render(root) {
    const [performance, contracts] = await Promise.all([api("GET", "/v1/performance"), CX.loadContracts()]);
    const cards = contracts.filter((c) => c.performance_factor !== null);
    const regions = [...new Set(cards.map((c) => c.region))].sort();
    const starts = cards.map((c) => Date.parse(c.delivery_start));
    if (form.earliest === null) form.earliest = Math.max(Math.min(...starts), Date.now() - Date.now() % HOUR);
    if (form.deadline === null) form.deadline = Math.max(...starts) + HOUR;
    if (form.regions === null) form.regions = [...regions];
    if (!form.cls) form.cls = performance.base;

    const taskFields = el("div", { class: "fields" });
    const showTask = () => {
      const parts = {
        finetune: [field("wizard.params", number("paramsBillions", "params")), field("wizard.tokens-b", number("tokensBillions", "tokens"))],
        serve: [field("wizard.params", number("paramsBillions", "serve-params")), field("wizard.tokens-per-day", number("tokensMillionsPerDay", "tokens-per-day")), field("wizard.days", number("days", "days", "1"))],
        known: [field("wizard.class", el("select", { "data-testid": "known-class", onchange: (e) => { form.cls = e.target.value; } },
          ...performance.cards.map((c) => el("option", { value: c.code, selected: form.cls === c.code }, c.code + " · " + c.name)))),
        field("wizard.cards", number("cards", "known-cards", "1"))],
      };
      taskFields.replaceChildren(...parts[form.kind]);
    };
    const kinds = el("fieldset", { class: "kinds" }, el("legend", {}, t("wizard.task")),
      ...["finetune", "serve", "known"].map((kind) => el("label", { class: "check" },
        el("input", { type: "radio", name: "kind", value: kind, checked: form.kind === kind, "data-testid": "task-" + kind,
          onchange: () => { form.kind = kind; showTask(); } }), t("wizard.task-" + kind))));
    showTask();

    const assumptions = el("fieldset", { class: "assumptions", "data-testid": "assumptions" }, el("legend", {}, t("wizard.assumptions")),
      ...Object.keys(CxEstimate.ASSUMPTIONS).map((key) => field("assume." + key, number(key, "assume-" + key, "any", form.assumptions))),
      el("p", { class: "note" }, t("wizard.sources"), " ", el("a", { href: "/v1/performance" }, "/v1/performance")));

    const estimateBox = el("div", { "data-testid": "estimate" });
    const planBox = el("div", { "data-testid": "plan" });
    const run = async (event) => {
      event.preventDefault();
      planBox.replaceChildren(el("p", { role: "status" }, t("wizard.planning")));
      let estimate = null;
      let classes = [form.cls];
      if (form.kind !== "known") {
        estimate = CxEstimate.estimate(form, form.assumptions, performance, form.hours);
        classes = estimate.classes.filter((c) => c.fits).map((c) => c.code);
        if (form.interruptible) classes = classes.flatMap((c) => [c, c + "-INT"]);
      }
      renderEstimate(estimateBox, estimate);
      if (!classes.length) { planBox.replaceChildren(el("p", { class: "result error" }, t("wizard.nothing-fits"))); return; }
      const body = needBody(estimate, classes);
      try {
        last = { body, plan: await api("POST", "/v1/needs/plan", body) };
        renderPlan(planBox, last.plan);
      } catch (error) {
        planBox.replaceChildren(el("p", { class: "result error", role: "alert" }, CX.problemText(error)));
      }
    };

    root.append(el("section", { "aria-labelledby": "wizard-title" },
      el("h2", { id: "wizard-title" }, t("wizard.title")),
      el("p", { class: "note" }, t("wizard.explain")),
      CX.state.me && CX.state.me.role === "buyer" ? null : el("p", { class: "result error" }, t("wizard.buyers-only")),
      el("form", { class: "wizard", "data-testid": "wizard", onsubmit: run },
        kinds, taskFields,
        el("fieldset", {}, el("legend", {}, t("wizard.when-where")),
          field("wizard.earliest", el("input", { type: "datetime-local", value: toLocal(form.earliest), "data-testid": "earliest", onchange: (e) => { form.earliest = fromLocal(e.target.value); } })),
          field("wizard.deadline", el("input", { type: "datetime-local", value: toLocal(form.deadline), "data-testid": "deadline", onchange: (e) => { form.deadline = fromLocal(e.target.value); } })),
          field("wizard.hours", number("hours", "hours", "1")),
          field("wizard.budget", el("input", { inputMode: "decimal", value: form.budget, "data-testid": "budget", oninput: (e) => { form.budget = e.target.value; } })),
          field("wizard.voucher", el("input", { value: form.voucher, size: 14, placeholder: t("orders.voucher-placeholder"), "data-testid": "wizard-voucher", oninput: (e) => { form.voucher = e.target.value.trim(); } })),
          el("div", { class: "regions" }, el("span", {}, t("wizard.regions")), ...regions.map((r) => el("label", { class: "check" },
            el("input", { type: "checkbox", checked: form.regions.includes(r), "data-testid": "region-" + r,
              onchange: (e) => { form.regions = e.target.checked ? [...form.regions, r] : form.regions.filter((x) => x !== r); } }), region(r)))),
          el("label", { class: "check" }, el("input", { type: "checkbox", checked: form.interruptible, onchange: (e) => { form.interruptible = e.target.checked; } }), t("wizard.accept-interruptible"))),
        assumptions,
        el("button", { type: "submit", class: "primary", "data-testid": "run-wizard" }, t("wizard.run"))),
      estimateBox, planBox));
  }

  CX.register("wizard", { render });
})();
