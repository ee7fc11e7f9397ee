/* The drift page: each input feature and the prediction of a month (or the last N requests)
   against the model's training month, with a score and a flag per column. */
"use strict";

(() => {
  const { el, fmt, pct } = RC;
  const page = document.getElementById("page");
  const controls = document.getElementById("controls");

  const flag = (drifted) => (drifted === null || drifted === undefined ? RC.badge("computing") : drifted ? RC.badge("drift", "drift") : RC.badge("no drift", "ok"));

  function column(grid, c, i) {
    const box = RC.slot(grid, `drift-col-${c.column}`, () => el("section", { class: "panel" }, el("h2", {}), el("div", { class: "figures" }), el("div", { class: "plot" })));
    box.dataset.drifted = String(c.drifted);
    RC.fill(box.querySelector("h2"), `${c.column} `, flag(c.drifted));
    RC.fill(box.querySelector(".figures"),
      el(
        "p",
        { class: "note" },
        `${c.method_label}: ${fmt(c.score, 4)} (drift at ${c.rule}) · reference ${fmt(c.reference_rows)} rows, current ${fmt(c.current_rows)} rows` +
          (c.reference_mean !== null && c.reference_mean !== undefined ? ` · mean ${fmt(c.reference_mean, 2)} → ${fmt(c.current_mean, 2)}` : ""),
      ),
    );
    const plot = box.querySelector(".plot");
    if (c.histogram) {
      RC.histogramChart(
        `drift-${c.column}`,
        plot,
        c.histogram.edges,
        [
          { label: "reference", values: c.histogram.reference, color: "#5c6b73" },
          { label: "current", values: c.histogram.current, color: c.drifted ? "#d1495b" : "#2458c6" },
        ],
        { xLabel: c.column, height: 190 },
      );
    } else if (c.categories && c.categories.length) {
      RC.barChart(
        `drift-${c.column}`,
        plot,
        c.categories.map((k) => k.category),
        [
          { label: "reference", values: c.categories.map((k) => k.reference), color: "#5c6b73" },
          { label: "current", values: c.categories.map((k) => k.current), color: c.drifted ? "#d1495b" : "#2458c6" },
        ],
        { percent: true, xLabel: "zone", height: 190 },
      );
    } else {
      RC.forget(`drift-${c.column}`);
      plot.replaceChildren();
    }
  }

  const reference = (data) =>
    (data.current.report && data.current.report.reference_label) || (data.months.find((m) => m.reference_label) || {}).reference_label;

  function render(data) {
    RC.fill(controls, RC.selectBox("subject", "compare", data.subjects.map((s) => [s.subject, s.label]), data.selected));

    const months = RC.slot(page, "drift-months", () => el("section", { class: "panel" }));
    RC.fill(months,
      el("h2", {}, `Months in the data folder against ${reference(data) || "the model's reference month"}`),
      data.months.length
        ? RC.table(
            [
              ["month", (m) => m.label],
              ["dataset", (m) => (m.status === "ready" ? flag(m.dataset_drifted) : RC.badge(m.status === "error" ? "error" : "computing", m.status === "error" ? "fail" : "computing"))],
              ["columns drifted", (m) => pct(m.share_drifted, 0), { num: true }],
              ["which", (m) => (m.status === "error" ? m.message : (m.drifted_columns || []).join(", ") || (m.status === "ready" ? "none" : ""))],
            ],
            data.months,
            { class: "months", key: (m) => m.subject, onRow: (m) => RC.setParam("subject", m.subject), selected: (m) => m.subject === data.selected },
          )
        : el("p", { class: "note" }, `no TLC month files in ${data.data_dir}`),
    );

    const current = data.current;
    const detail = RC.slot(page, "drift-detail", () => el("section", {}));
    if (current.status !== "ready") {
      for (const id of Object.keys(RC.charts)) RC.forget(id);
      RC.fill(detail,
        current.status === "computing"
          ? el("div", { class: "empty" }, el("strong", {}, `Computing ${current.label}…`), "the month is read and predicted once, then kept")
          : el("div", { class: "empty" }, el("strong", {}, `No report for ${current.label}`), current.message || ""),
      );
      return 2;
    }
    const report = current.report;
    if (detail.dataset.subject !== current.subject || !detail.querySelector(".grid")) {
      for (const id of Object.keys(RC.charts)) RC.forget(id);
      RC.fill(detail, el("div", { class: "report-head" }), el("div", { class: "grid" }));
      detail.dataset.subject = current.subject;
    }
    RC.fill(detail.querySelector(".report-head"),
      el("h2", {}, `${report.current_label} against ${report.reference_label} `, flag(report.dataset_drifted)),
      RC.cards([
        ["columns drifted", `${report.drifted_columns.length} of ${report.columns.length} (${pct(report.share_drifted, 0)})`],
        ["dataset drifts at", `${pct(report.drift_share, 0)} of columns`],
        ["predictions by", report.model || "–"],
      ]),
      el("ul", { class: "note" }, report.notes.map((n) => el("li", {}, n))),
    );
    const grid = detail.querySelector(".grid");
    report.columns.forEach((c, i) => column(grid, c, i));
    return data.months.some((m) => m.status === "computing") ? 2 : undefined;
  }

  RC.poll("api/drift", render, 60);
})();
