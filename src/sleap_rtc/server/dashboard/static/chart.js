// The loss chart of a training job: one uPlot chart per model, x = epoch,
// series "loss" and "val loss". uPlot is the classic script vendor/uplot
// loads as the global `uPlot`.

import { h, num4 } from "./dom.js";

const HEIGHT = 260;
const LOSS_COLOR = "#1565c0";
const VAL_COLOR = "#c62828";

export class LossChart {
  /** `container` is the #loss-chart element; its data-points attribute counts the points. */
  constructor(container) {
    this.container = container;
    this.charts = new Map(); // model -> {wrap, title, plot, log}
    this.marked = false;
    this.empty = h("p", { class: "muted" }, "No epochs yet");
    container.replaceChildren(this.empty);
    container.dataset.points = "0";
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(container);
  }

  /** Show `points` (deduplicated by model and epoch); `nModels` from the job's progress. */
  set(points, nModels = 1) {
    const byModel = new Map();
    for (const p of points) {
      if (!byModel.has(p.model)) byModel.set(p.model, []);
      byModel.get(p.model).push(p);
    }
    this.container.dataset.points = String(points.length);
    if (points.length === 0 || typeof uPlot === "undefined") {
      const text = points.length === 0 ? "No epochs yet" : "The chart could not be loaded.";
      this.empty.textContent = text;
      this.destroyCharts();
      this.container.replaceChildren(this.empty);
      return;
    }
    this.empty.remove();
    const labelled = nModels > 1 || byModel.size > 1;
    for (const [model, mine] of [...byModel].sort((a, b) => a[0] - b[0])) {
      mine.sort((a, b) => a.epoch - b.epoch);
      const data = [
        mine.map((p) => p.epoch),
        mine.map((p) => p.loss ?? null),
        mine.map((p) => p.val_loss ?? null),
      ];
      this.draw(model, data, labelled);
    }
    for (const [model, chart] of this.charts) {
      if (!byModel.has(model)) {
        chart.plot.destroy();
        chart.wrap.remove();
        this.charts.delete(model);
      }
    }
    if (!this.marked) {
      this.marked = true;
      performance.mark("sleap-rtc:chart-ready");
    }
  }

  draw(model, data, labelled) {
    // A log y axis reads best for losses, but only works while all are > 0.
    const log = data[1].concat(data[2]).every((v) => v == null || v > 0);
    let chart = this.charts.get(model);
    if (chart && chart.log !== log) {
      // Rare (a loss ≤ 0 arrived): the scale type can't change in place.
      chart.plot.destroy();
      chart.wrap.remove();
      this.charts.delete(model);
      chart = null;
    }
    if (!chart) {
      chart = this.create(model, data, log);
    } else {
      chart.plot.setData(data);
    }
    chart.title.hidden = !labelled;
  }

  create(model, data, log) {
    const title = h("h3", { class: "chart-title" }, `Model ${model}`);
    const wrap = h("figure", { class: "chart", "data-model": model }, title);
    const after = [...this.charts.entries()].find(([m]) => m > model);
    this.container.insertBefore(wrap, after ? after[1].wrap : null);
    const opts = {
      width: this.width(),
      height: HEIGHT,
      scales: { x: { time: false }, y: { distr: log ? 3 : 1 } },
      series: [
        { label: "epoch" },
        { label: "loss", stroke: LOSS_COLOR, width: 2, spanGaps: true },
        { label: "val loss", stroke: VAL_COLOR, width: 2, dash: [6, 4], spanGaps: true },
      ],
      axes: [
        { label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] },
        {
          label: log ? "loss (log)" : "loss",
          size: 70,
          // Enough digits that neighbouring ticks of a log axis never read the same.
          values: (u, splits) => splits.map((v) => (v == null ? "" : num4(v))),
        },
      ],
    };
    const chart = { wrap, title, log, plot: new uPlot(opts, data, wrap) };
    this.charts.set(model, chart);
    return chart;
  }

  width() {
    return Math.max(240, this.container.clientWidth || 600);
  }

  resize() {
    const width = this.width();
    for (const { plot } of this.charts.values()) {
      if (plot.width !== width) plot.setSize({ width, height: HEIGHT });
    }
  }

  destroyCharts() {
    for (const { plot, wrap } of this.charts.values()) {
      plot.destroy();
      wrap.remove();
    }
    this.charts.clear();
  }

  destroy() {
    this.resizer.disconnect();
    this.destroyCharts();
  }
}
