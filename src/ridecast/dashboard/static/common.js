/* ridecast dashboard: what every page shares — polling its JSON, formatting, tables and uPlot
   charts. Plain JS, no build step. Each chart is kept in window.ridecastCharts by id, so a test
   (or a curious person in the console) can read the data it draws. */
"use strict";

const RC = (() => {
  const charts = {};
  window.ridecastCharts = charts;
  const COLORS = ["#2458c6", "#d1495b", "#2a9d8f", "#8d6cab", "#e08e0b", "#5c6b73", "#c05299"];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** The child of `parent` with this id, made (once) by `make` when it is not there yet. */
  function slot(parent, id, make) {
    let node = document.getElementById(id);
    if (!node) {
      node = make();
      node.id = id;
      parent.append(node);
    }
    return node;
  }

  function fmt(value, digits = 2) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value) && Math.abs(value) >= 1000) return value.toLocaleString("en-US");
    return value.toLocaleString("en-US", { maximumFractionDigits: digits });
  }
  const pct = (value, digits = 1) =>
    value === null || value === undefined ? "–" : `${fmt(100 * value, digits)}%`;
  const when = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "–");
  const clock = (ts) => (ts ? new Date(ts * 1000).toLocaleTimeString() : "–");

  function params() {
    return new URLSearchParams(window.location.search);
  }

  let refresh = () => {};

  /** Change one query parameter of the page (and of its JSON request), then ask again. */
  function setParam(name, value) {
    const query = params();
    if (value === null || value === undefined || value === "") query.delete(name);
    else query.set(name, value);
    const search = query.toString();
    window.history.replaceState(null, "", search ? `?${search}` : window.location.pathname);
    refresh();
  }

  function setStatus(text, error) {
    const node = document.getElementById("status");
    node.textContent = text;
    node.classList.toggle("error", Boolean(error));
  }

  /** GET `url` (with the page's query) now and every `seconds`, handing the JSON to `render`.
      `render` may return a number of seconds to ask again sooner (e.g. while computing). */
  function poll(url, render, seconds) {
    let timer = null;
    async function tick() {
      clearTimeout(timer);
      let next = seconds;
      try {
        const response = await fetch(url + window.location.search, { cache: "no-store" });
        const body = await response.json();
        if (!response.ok) {
          setStatus(body.error || `the server answered ${response.status}`, true);
        } else {
          const sooner = render(body);
          if (typeof sooner === "number") next = Math.min(next, sooner);
          setStatus(`updated ${new Date().toLocaleTimeString()} · every ${next}s`);
        }
      } catch (error) {
        setStatus(`cannot read ${url}: ${error.message}`, true);
      }
      document.body.dataset.loaded = "true";
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
      timer = setTimeout(tick, (document.hidden ? 4 : 1) * next * 1000);
    }
    refresh = tick;
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) tick();
    });
    tick();
  }

  /** Replace `node`'s children with `children` (arrays flattened, null and false left out). */
  function fill(node, ...children) {
    node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  function empty(container, title, text) {
    container.replaceChildren(el("div", { class: "empty" }, el("strong", {}, title), text));
  }

  /** A table: `columns` are [label, (row) => value, {num: true}]; `onRow(row)` selects. */
  function table(columns, rows, opts = {}) {
    const head = el("tr", {}, columns.map(([label, , o]) => el("th", { class: o && o.num ? "num" : null }, label)));
    const body = rows.map((row) =>
      el(
        "tr",
        {
          class: [opts.onRow ? "selectable" : "", opts.selected && opts.selected(row) ? "selected" : ""].join(" ").trim() || null,
          onclick: opts.onRow ? () => opts.onRow(row) : null,
          "data-key": opts.key ? opts.key(row) : null,
        },
        columns.map(([, value, o]) => {
          const v = value(row);
          return el("td", { class: o && o.num ? "num" : null }, v instanceof Node ? v : fmt(v, o && o.digits !== undefined ? o.digits : 2));
        }),
      ),
    );
    return el("div", { class: "table-wrap" }, el("table", { class: opts.class || null }, el("thead", {}, head), el("tbody", {}, body)));
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind || text}` }, text);
  }

  function cards(items) {
    return el("div", { class: "cards" }, items.map(([k, v]) => el("div", { class: "card" }, el("div", { class: "k" }, k), el("div", { class: "v" }, v))));
  }

  /** A panel with a title and a plot area, made once under `parent`. */
  function panel(parent, id, title) {
    const node = slot(parent, id, () => el("section", { class: "panel" }, el("h2", {}, title), el("div", { class: "plot" })));
    node.querySelector("h2").textContent = title;
    return node.querySelector(".plot");
  }

  const color = (i) => COLORS[i % COLORS.length];

  function plotWidth(box) {
    return Math.max(280, Math.floor(box.getBoundingClientRect().width) - 2);
  }

  /** Draw (or update in place) chart `id` in `box`. A chart whose series changed is redrawn. */
  function plot(id, box, opts, data) {
    let chart = charts[id];
    const signature = JSON.stringify(opts.series.map((s) => s.label || "")) + (opts.signature || "");
    if (chart && chart.ridecastSignature === signature && box.contains(chart.root)) {
      chart.setData(data);
      return chart;
    }
    if (chart) chart.destroy();
    box.replaceChildren();
    const { signature: _ignored, ...options } = opts;
    chart = new uPlot({ ...options, width: plotWidth(box), height: opts.height || 220 }, data, box);
    chart.ridecastSignature = signature;
    charts[id] = chart;
    return chart;
  }

  function forget(id) {
    if (charts[id]) {
      charts[id].destroy();
      delete charts[id];
    }
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const chart of Object.values(charts)) {
        const box = chart.root.parentNode;
        if (box) chart.setSize({ width: plotWidth(box), height: chart.height });
      }
    }, 150);
  });

  const axisValues = (digits) => (u, values) => values.map((v) => fmt(v, digits));

  /** Lines over time: `series` are {label, values, color, dash, width}. */
  function timeChart(id, box, t, series, opts = {}) {
    return plot(
      id,
      box,
      {
        series: [
          { value: (u, v) => (v === null ? "–" : new Date(v * 1000).toLocaleTimeString()) },
          ...series.map((s) => ({
            label: s.label,
            stroke: s.color,
            width: s.width || 1.6,
            dash: s.dash,
            fill: s.fill,
            points: { show: false },
            spanGaps: Boolean(s.spanGaps),
            paths: s.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
            value: (u, v) => (v === null || v === undefined ? "–" : fmt(v, opts.digits === undefined ? 2 : opts.digits)),
          })),
        ],
        axes: [{}, { label: opts.yLabel, size: 64, values: axisValues(opts.digits) }],
        scales: { x: { time: true }, y: opts.yRange ? { range: opts.yRange } : {} },
        bands: opts.bands,
        height: opts.height,
        signature: opts.signature,
      },
      [t, ...series.map((s) => s.values)],
    );
  }

  /** Shares in bins: `edges` are n+1 bin edges; each series has n shares, drawn as steps. */
  function histogramChart(id, box, edges, series, opts = {}) {
    const data = [edges, ...series.map((s) => [...s.values, s.values.length ? s.values[s.values.length - 1] : null])];
    return plot(
      id,
      box,
      {
        series: [
          { label: opts.xLabel || "value", value: (u, v) => fmt(v, 2) },
          ...series.map((s) => ({
            label: s.label,
            stroke: s.color,
            fill: `${s.color}22`,
            width: 1.6,
            paths: uPlot.paths.stepped({ align: 1 }),
            points: { show: false },
            value: (u, v) => pct(v),
          })),
        ],
        axes: [{ label: opts.xLabel, values: axisValues(1) }, { label: "share", size: 56, values: (u, vs) => vs.map((v) => pct(v, 0)) }],
        scales: { x: { time: false }, y: { range: (u, lo, hi) => [0, Math.max(hi, 0.01) * 1.05] } },
        height: opts.height,
        signature: JSON.stringify(edges.length),
      },
      data,
    );
  }

  /** Side-by-side bars for categories: `labels` name the x positions 0..k-1. */
  function barChart(id, box, labels, series, opts = {}) {
    const x = labels.map((_, i) => i);
    const aligns = series.length === 2 ? [-1, 1] : series.map(() => 0);
    return plot(
      id,
      box,
      {
        series: [
          { label: opts.xLabel || "category", value: (u, v) => (v === null ? "–" : labels[v]) },
          ...series.map((s, i) => ({
            label: s.label,
            stroke: s.color,
            fill: `${s.color}bb`,
            width: 0,
            paths: uPlot.paths.bars({ size: [series.length === 2 ? 0.4 : 0.7, 60], align: aligns[i] }),
            points: { show: false },
            value: (u, v) => (opts.percent ? pct(v) : fmt(v)),
          })),
        ],
        axes: [
          { values: (u, vals) => vals.map((v) => (Number.isInteger(v) && labels[v] !== undefined ? labels[v] : "")), rotate: 0, size: 40 },
          { size: 56, values: (u, vs) => vs.map((v) => (opts.percent ? pct(v, 0) : fmt(v))) },
        ],
        scales: { x: { time: false, range: [-0.6, labels.length - 0.4] }, y: { range: (u, lo, hi) => [0, Math.max(hi, 0.01) * 1.08] } },
        height: opts.height,
        signature: JSON.stringify(labels),
      },
      [x, ...series.map((s) => s.values)],
    );
  }

  /** Points (x sorted) with reference lines: `lines` are {label, values, color, dash}. */
  function scatterChart(id, box, x, points, lines, opts = {}) {
    return plot(
      id,
      box,
      {
        series: [
          { label: opts.xLabel || "x", value: (u, v) => fmt(v, 2) },
          { label: points.label, stroke: points.color, fill: points.color, paths: () => null, points: { show: true, size: 4, width: 0, fill: `${points.color}99` }, value: (u, v) => fmt(v, 2) },
          ...lines.map((l) => ({ label: l.label, stroke: l.color, dash: l.dash, width: 1.2, points: { show: false }, value: (u, v) => fmt(v, 2) })),
        ],
        axes: [{ label: opts.xLabel, values: axisValues(0) }, { label: opts.yLabel, size: 56, values: axisValues(0) }],
        scales: { x: { time: false }, y: {} },
        height: opts.height,
      },
      [x, points.values, ...lines.map((l) => l.values)],
    );
  }

  /** Buttons that set query parameter `name`; `choices` are [value, label]. */
  function choiceButtons(name, choices, current) {
    return el(
      "span",
      {},
      choices.map(([value, label]) => el("button", { type: "button", "aria-pressed": String(value === current), onclick: () => setParam(name, value) }, label)),
    );
  }

  function selectBox(name, label, choices, current) {
    const select = el(
      "select",
      { name, onchange: (event) => setParam(name, event.target.value) },
      choices.map(([value, text]) => el("option", { value, selected: value === current }, text)),
    );
    return el("label", {}, `${label} `, select);
  }

  return {
    charts, el, slot, fill, fmt, pct, when, clock, params, setParam, poll, empty, table, badge, cards, panel, color,
    plot, forget, timeChart, histogramChart, barChart, scatterChart, choiceButtons, selectBox,
  };
})();
