/* The batch results page: per month and version, rows, mean and std of predictions, RMSE/MAE,
   the predicted and actual duration distributions, and the rejects by reason. */
"use strict";

(() => {
  const { el, fmt } = RC;
  const page = document.getElementById("page");

  const keyOf = (run) => [run.taxi_type, run.month, run.model, run.version, run.kind].join(":");

  function render(data) {
    if (data.empty) {
      for (const id of Object.keys(RC.charts)) RC.forget(id);
      RC.empty(page, "No batch results yet", "Each month `ridecast batch score` or `ridecast batch backfill` scores shows up here, from the database alone.");
      return;
    }
    if (page.querySelector(".empty")) page.replaceChildren();
    const runs = data.runs;
    const wanted = RC.params().get("run");
    const selected = runs.find((r) => keyOf(r) === wanted) || runs[0];

    const list = RC.slot(page, "batch-runs", () => el("section", { class: "panel" }));
    RC.fill(list,
      el("h2", {}, "Runs (newest month first; pick one)"),
      RC.table(
        [
          ["month", (r) => r.month],
          ["taxi", (r) => r.taxi_type],
          ["model", (r) => r.model],
          ["version", (r) => `v${r.version}`],
          ["kind", (r) => r.kind],
          ["rows read", (r) => r.rows_read, { num: true }],
          ["scored", (r) => r.rows_scored, { num: true }],
          ["rejected", (r) => r.rows_rejected, { num: true }],
          ["mean (min)", (r) => r.mean_prediction, { num: true }],
          ["std (min)", (r) => r.std_prediction, { num: true }],
          ["RMSE", (r) => r.rmse, { num: true, digits: 3 }],
          ["MAE", (r) => r.mae, { num: true, digits: 3 }],
        ],
        runs,
        { class: "runs", key: keyOf, onRow: (r) => RC.setParam("run", keyOf(r)), selected: (r) => r === selected },
      ),
    );

    const grid = RC.slot(page, "batch-grid", () => el("div", { class: "grid" }));
    const title = `${selected.taxi_type} ${selected.month}, ${selected.model} v${selected.version}`;
    const h = selected.histograms;
    const dist = RC.panel(grid, "panel-durations", `Predicted and actual durations: ${title}`);
    if (h) {
      const share = (hist) => {
        const total = hist.counts.reduce((a, b) => a + b, 0) + hist.below + hist.above;
        return hist.counts.map((c) => (total ? c / total : 0));
      };
      RC.histogramChart(
        "batch-durations",
        dist,
        h.predicted.edges,
        [
          { label: "predicted", values: share(h.predicted), color: "#2458c6" },
          { label: "actual", values: share(h.actual), color: "#d1495b" },
        ],
        { xLabel: "minutes" },
      );
    } else {
      RC.forget("batch-durations");
      RC.fill(dist, el("p", { class: "note" }, "this run recorded no distributions (an engine that does not tally them)"));
    }

    const reasons = Object.entries(selected.rejected).sort((a, b) => b[1] - a[1]);
    const rejects = RC.panel(grid, "panel-rejects", `Rejects by reason: ${fmt(selected.rows_rejected)} of ${fmt(selected.rows_read)} rows`);
    if (reasons.length) {
      RC.barChart(
        "batch-rejects",
        rejects,
        reasons.map(([r]) => r.replaceAll("_", " ")),
        [{ label: "rows", values: reasons.map(([, n]) => n), color: "#e08e0b" }],
        { xLabel: "reason" },
      );
    } else {
      RC.forget("batch-rejects");
      RC.fill(rejects, el("p", { class: "note" }, "no row was rejected"));
    }

    const c = selected.comparison;
    const compare = RC.slot(grid, "panel-comparison", () => el("section", { class: "panel" }));
    RC.fill(compare,
      el("h2", {}, "Against the actual durations"),
      RC.cards([
        ["rows scored", fmt(selected.rows_scored)],
        ["mean ± std", `${fmt(selected.mean_prediction)} ± ${fmt(selected.std_prediction)} min`],
        ["RMSE", `${fmt(selected.rmse, 3)} min`],
        ["MAE", `${fmt(selected.mae, 3)} min`],
        ["took", `${fmt(selected.seconds)} s`],
      ]),
      c
        ? RC.table(
            [
              ["version", (v) => `v${v.version}`],
              ["MAE", (v) => v.mae, { num: true, digits: 3 }],
              ["RMSE", (v) => v.rmse, { num: true, digits: 3 }],
            ],
            [c.stable, c.candidate],
          )
        : null,
      el("p", { class: "note" }, `run ${selected.run_id}, published ${RC.when(selected.published_at)}`),
    );

    const months = [...new Set(runs.map((r) => r.month))].sort();
    const trend = RC.panel(grid, "panel-trend", "MAE by month and version");
    if (months.length >= 2) {
      const versions = [...new Set(runs.filter((r) => r.kind === "score").map((r) => `${r.model} v${r.version}`))];
      RC.barChart(
        "batch-trend",
        trend,
        months,
        versions.map((v, i) => ({
          label: v,
          values: months.map((m) => {
            const run = runs.find((r) => r.month === m && `${r.model} v${r.version}` === v && r.kind === "score");
            return run ? run.mae : null;
          }),
          color: RC.color(i),
        })),
        { xLabel: "month" },
      );
    } else {
      RC.forget("batch-trend");
      RC.fill(trend, el("p", { class: "note" }, "one month so far: the trend appears with the second"));
    }
  }

  RC.poll("api/batch", render, 30);
})();
