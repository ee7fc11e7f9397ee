/* The live service page: requests/s, p50/p99 latency, error rate and the distribution of
   predictions, per model version, over the chosen window. */
"use strict";

(() => {
  const { el } = RC;
  const page = document.getElementById("page");
  const controls = document.getElementById("controls");

  function render(data) {
    RC.fill(controls,
      data.models.length ? RC.selectBox("model", "model", data.models.map((m) => [m, m]), data.model) : "",
      el("span", {}, el("label", {}, "window "), RC.choiceButtons("window", data.windows.map((w) => [w, w]), data.window)),
    );
    if (data.empty) {
      for (const id of Object.keys(RC.charts)) RC.forget(id);
      RC.empty(
        page,
        "No data yet",
        `Nothing was served in the last ${data.window}${data.model ? ` by ${data.model}` : ""}. ` +
          "Answers appear here as the web service (POST /predict) and the stream consumers log them.",
      );
      return;
    }
    if (page.querySelector(".empty")) page.replaceChildren();
    const versions = data.versions.map((v) => v.version);
    const colorOf = (v) => RC.color(versions.indexOf(v));

    const summary = RC.slot(page, "live-summary", () => el("section", { class: "panel" }));
    RC.fill(summary,
      el("h2", {}, `${data.model}: answers in the last ${data.window}, by version`),
      RC.table(
        [
          ["version", (v) => el("span", { style: `color:${colorOf(v.version)};font-weight:600` }, `v${v.version}`)],
          ["requests", (v) => v.requests, { num: true }],
          ["mean req/s", (v) => v.rate, { num: true }],
          ["p50 ms", (v) => v.p50_ms, { num: true }],
          ["p99 ms", (v) => v.p99_ms, { num: true }],
          ["errors", (v) => v.errors, { num: true }],
          ["error rate", (v) => RC.pct(v.error_rate, 2), { num: true }],
          [`mean prediction (${data.distribution ? data.distribution.unit : ""})`, (v) => v.mean_prediction, { num: true }],
        ],
        data.versions,
        { class: "versions", key: (v) => v.version },
      ),
      el(
        "p",
        { class: "note" },
        "Callers' answers (web and stream). Shadow copies and batch jobs are left out. Percentiles are read from latency bins.",
        ...data.versions
          .filter((v) => v.sampled_one_in > 1)
          .map((v) => ` v${v.version}: a busy window, read 1 row in ${v.sampled_one_in}; its figures are estimates.`),
      ),
    );

    const grid = RC.slot(page, "live-grid", () => el("div", { class: "grid" }));
    const s = data.series;
    const lines = (values, dash) =>
      versions.map((v) => ({ label: `v${v}${dash ? " p99" : ""}`, values: values[v], color: colorOf(v), dash: dash ? [6, 4] : undefined }));
    RC.timeChart("live-rps", RC.panel(grid, "panel-rps", "Requests per second"), s.t, lines(s.rps), { yLabel: "req/s", digits: 1 });
    RC.timeChart(
      "live-latency",
      RC.panel(grid, "panel-latency", "Latency: p50 (solid) and p99 (dashed)"),
      s.t,
      [...versions.map((v) => ({ label: `v${v} p50`, values: s.p50_ms[v], color: colorOf(v) })), ...lines(s.p99_ms, true)],
      { yLabel: "ms", digits: 2 },
    );
    RC.timeChart(
      "live-errors",
      RC.panel(grid, "panel-errors", "Error rate"),
      s.t,
      versions.map((v) => ({ label: `v${v}`, values: s.error_rate[v], color: colorOf(v) })),
      { yLabel: "share failed", digits: 4, yRange: (u, lo, hi) => [0, Math.max(hi || 0, 0.01)] },
    );
    const d = data.distribution;
    if (d) {
      RC.histogramChart(
        "live-predictions",
        RC.panel(grid, "panel-predictions", `Distribution of predictions (${d.unit})`),
        d.edges,
        Object.keys(d.shares).map((v) => ({ label: `v${v}`, values: d.shares[v], color: colorOf(v) })),
        { xLabel: d.unit },
      );
    }
  }

  RC.poll("api/live", render, 5);
})();
