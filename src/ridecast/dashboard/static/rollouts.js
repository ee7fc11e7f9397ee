/* The rollouts page: the current (or chosen) rollout's state, its analyses and transitions; for
   A/B the confidence sequence over time, for shadow the live-vs-shadow scatter. */
"use strict";

(() => {
  const { el, fmt, pct } = RC;
  const page = document.getElementById("page");
  const controls = document.getElementById("controls");

  const armColumns = [
    ["arm", (a) => a.arm],
    ["version", (a) => `v${a.version}`],
    ["requests", (a) => a.requests, { num: true }],
    ["errors", (a) => a.errors, { num: true }],
    ["error rate", (a) => pct(a.error_rate, 2), { num: true }],
    ["p99 ms", (a) => a.p99_latency_ms, { num: true }],
    ["mean prediction", (a) => a.mean_prediction, { num: true }],
    ["joined", (a) => a.joined, { num: true }],
    ["MAE", (a) => a.mae, { num: true, digits: 3 }],
  ];

  function arms(...list) {
    return RC.table(armColumns, list.filter(Boolean));
  }

  function checks(list) {
    return RC.table(
      [
        ["figure", (c) => c.figure],
        ["value", (c) => c.value, { num: true, digits: 4 }],
        ["threshold", (c) => c.threshold, { num: true, digits: 4 }],
        ["", (c) => RC.badge(c.ok === true ? "ok" : c.ok === false ? "fail" : "no data", c.ok === true ? "ok" : c.ok === false ? "fail" : "inconclusive")],
        ["needs", (c) => c.needs],
      ],
      list,
    );
  }

  function analysis(a, open) {
    const body = [
      el("p", { class: "reason" }, a.reason),
      a.checks.length ? checks(a.checks) : null,
      a.stable || a.candidate ? arms(a.stable, a.candidate) : null,
    ];
    return el(
      "details",
      { class: "analysis", open },
      el("summary", {}, RC.badge(a.verdict), ` ${RC.clock(a.ts)} · then ${a.phase} at step ${a.step}`),
      body,
    );
  }

  function renderAB(grid, r) {
    const ab = r.ab;
    const box = RC.slot(grid, "panel-ab", () => el("section", { class: "panel" }));
    const variants = ab.variants;
    RC.fill(box,
      el("h2", {}, "A/B: each variant's error"),
      variants
        ? RC.table(
            [
              ["variant", (v) => v.name],
              ["version", (v) => `v${v.version}`],
              ["n (feedback-joined)", (v) => v.n, { num: true }],
              ["MAE (minutes)", (v) => v.mae, { num: true, digits: 3 }],
            ],
            [
              { name: "a", ...variants.a },
              { name: "b", ...variants.b },
            ],
            { class: "variants" },
          )
        : el("p", { class: "note" }, "no feedback-joined rides yet"),
      variants && variants.interval
        ? el(
            "p",
            {},
            `MAE_b − MAE_a = ${fmt(variants.d_hat, 3)} min, ${100 * (1 - variants.alpha)}% always-valid interval [${fmt(variants.interval[0], 3)}, ${fmt(variants.interval[1], 3)}]` +
              (variants.paired ? " (paired rides)" : ""),
          )
        : null,
    );
    const seq = ab.sequence;
    const plot = RC.panel(grid, "panel-ab-sequence", `MAE_b − MAE_a with its confidence sequence (α = ${ab.alpha}) as feedback arrived`);
    if (seq && seq.t.length) {
      RC.timeChart(
        "ab-sequence",
        plot,
        seq.t,
        [
          { label: "d̂ = MAE_b − MAE_a", values: seq.d_hat, color: "#2458c6", width: 2 },
          { label: "low", values: seq.low, color: "#8aa6de" },
          { label: "high", values: seq.high, color: "#8aa6de" },
          { label: "no difference", values: seq.t.map(() => 0), color: "#5c6b73", dash: [4, 4] },
        ],
        { yLabel: "minutes", digits: 3, bands: [{ series: [3, 2], fill: "#2458c622" }] },
      );
    } else {
      RC.fill(plot, el("p", { class: "note" }, "no feedback-joined rides yet"));
    }
  }

  function renderShadow(grid, r) {
    const sh = r.shadow;
    const box = RC.slot(grid, "panel-shadow", () => el("section", { class: "panel" }, el("h2", {}, "Shadow: live against shadow answers"), el("div", { class: "plot" }), el("div", { class: "shadow-figures" })));
    const plot = box.querySelector(".plot");
    const figures = box.querySelector(".shadow-figures");
    RC.fill(figures,
      RC.cards([
        ["pairs", fmt(sh.n)],
        [`more than ${sh.far_apart_minutes} min apart`, pct(sh.share_far_apart, 1)],
        ["mean |shadow − live|", `${fmt(sh.mean_abs_diff, 3)} min`],
      ]),
    );
    figures.querySelector(".cards").id = "shadow-cards";
    if (!sh.points) {
      RC.fill(plot, el("p", { class: "note" }, "no paired answers yet"));
      return;
    }
    const x = sh.points.live;
    RC.scatterChart(
      "shadow-scatter",
      plot,
      x,
      { label: `shadow v${r.candidate_version}`, values: sh.points.shadow, color: "#d1495b" },
      [
        { label: "same answer", values: x, color: "#5c6b73" },
        { label: `+${sh.far_apart_minutes} min`, values: x.map((v) => v + sh.far_apart_minutes), color: "#e08e0b", dash: [4, 4] },
        { label: `−${sh.far_apart_minutes} min`, values: x.map((v) => v - sh.far_apart_minutes), color: "#e08e0b", dash: [4, 4] },
      ],
      { xLabel: `live v${r.stable_version} (minutes)`, yLabel: "shadow (minutes)", height: 300 },
    );
  }

  function render(data) {
    RC.fill(controls,
      data.rollouts.length
        ? RC.selectBox(
            "id",
            "rollout",
            data.rollouts.map((r) => [r.id, `${r.model} · ${r.strategy} v${r.stable_version}→v${r.candidate_version} · ${r.phase} · ${RC.when(r.created_at)}`]),
            data.rollout ? data.rollout.id : "",
          )
        : "",
    );
    if (data.empty || !data.rollout) {
      for (const id of Object.keys(RC.charts)) RC.forget(id);
      RC.empty(page, "No rollout yet", "Start one with `ridecast rollout start FILE` (see docs/rollout.md); its steps, analyses and decisions appear here.");
      return;
    }
    const r = data.rollout;
    if (page.dataset.rollout !== r.id) {
      for (const id of Object.keys(RC.charts)) RC.forget(id);
      page.replaceChildren();
      page.dataset.rollout = r.id;
    }
    const weights = Object.entries(r.weights).map(([v, w]) => `v${v} ${w}%`).join(" · ");
    const head = RC.slot(page, "rollout-head", () => el("section", {}));
    RC.fill(head,
      RC.cards([
        ["model", r.model],
        ["strategy", r.strategy],
        ["phase", RC.badge(r.phase)],
        ["step", `${r.step.index}${r.step.count ? ` of ${r.step.count}` : ""}${r.step.spec ? ` · ${JSON.stringify(r.step.spec)}` : ""}`],
        ["live traffic", weights],
        ["shadow copies", `${r.shadow_percent}%`],
        ["controller", r.lease ? (r.lease.live ? "leased" : "lease expired") : "none"],
      ]),
      el("p", { class: "reason" }, el("strong", {}, "Why: "), r.reason),
    );
    head.querySelector(".cards").id = "rollout-cards";

    const grid = RC.slot(page, "rollout-grid", () => el("div", { class: "grid" }));
    const w = r.weights_over_time;
    RC.timeChart(
      "rollout-weights",
      RC.panel(grid, "panel-weights", `v${r.candidate_version}'s share of live traffic and of shadow copies`),
      w.t,
      [
        { label: "live %", values: w.weight, color: "#2458c6", stepped: true, width: 2 },
        { label: "shadow %", values: w.shadow_percent, color: "#d1495b", stepped: true, dash: [5, 4] },
      ],
      { yLabel: "%", digits: 0, yRange: [0, 105] },
    );
    const current = RC.slot(grid, "panel-current", () => el("section", { class: "panel" }));
    current.hidden = !r.current;
    RC.fill(current,
      el("h2", {}, "The window being judged now"),
      ...(r.current
        ? [el("p", { class: "note" }, `since ${RC.clock(r.current.since)}`), arms(r.current.stable, r.current.candidate)]
        : [el("p", { class: "note" }, `nothing is being measured (${r.phase})`)]),
    );
    if (r.ab) renderAB(grid, r);
    if (r.shadow) renderShadow(grid, r);

    const analyses = RC.slot(page, "rollout-analyses", () => el("section", { class: "panel" }));
    RC.fill(analyses,
      el("h2", {}, `Analyses (${r.analyses.length})`),
      ...(r.analyses.length
        ? [...r.analyses].reverse().map((a, i) => analysis(a, i === 0))
        : [el("p", { class: "note" }, "no analysis has reached a verdict yet")]),
    );
    const history = RC.slot(page, "rollout-history", () => el("section", { class: "panel" }));
    RC.fill(history,
      el("h2", {}, "Transitions"),
      RC.table(
        [
          ["time", (h) => RC.clock(h.ts)],
          ["phase", (h) => RC.badge(h.phase)],
          ["step", (h) => h.step, { num: true }],
          ["live %", (h) => h.weight, { num: true }],
          ["shadow %", (h) => h.shadow_percent, { num: true }],
          ["verdict", (h) => (h.verdict ? RC.badge(h.verdict) : "")],
          ["reason", (h) => el("span", { class: "reason" }, h.reason)],
          ["by", (h) => h.actor],
        ],
        r.history,
        { class: "transitions" },
      ),
    );
  }

  RC.poll("api/rollouts", render, 3);
})();
