// A run's plots (and a sweep's), drawn with uPlot from the data the page carries (a JSON block, not a script).
// Each plot's container says how many points it drew (data-points), for people and for tests.
(function () {
  "use strict";
  var block = document.getElementById("plot-data");
  if (!block || typeof uPlot === "undefined") return;
  var data = JSON.parse(block.textContent);
  var COLOURS = ["#1f5f8b", "#d9822b", "#1d7a46", "#b3261e", "#6f42c1", "#0f8c8c", "#8a5a00",
                 "#c2185b", "#4e5d6c", "#7cb342"];

  function width(el) { return Math.max(320, el.clientWidth || 480); }

  function count(el, columns) {
    var points = 0;
    columns.slice(1).forEach(function (ys) {
      ys.forEach(function (y) { if (y !== null && y !== undefined) points += 1; });
    });
    el.dataset.points = String(points);
  }

  function draw(name, opts, columns) {
    var el = document.querySelector('[data-plot="' + name + '"]');
    if (!el) return null;
    opts.width = width(el);
    opts.height = opts.height || 260;
    var plot = new uPlot(opts, columns, el);
    count(el, columns);
    return {plot: plot, el: el};
  }

  function dots(size, fill) {
    return {paths: function () { return null; }, points: {show: true, size: size, fill: fill}};
  }

  function lines(series, extra) {
    return series.map(function (s, i) {
      var line = {label: s.label, stroke: COLOURS[i % COLOURS.length], width: 2};
      Object.keys(extra || {}).forEach(function (key) { line[key] = extra[key]; });
      return line;
    });
  }

  (data.steps || []).forEach(function (plot, n) {
    draw("steps-" + n, {
      title: plot.title,
      scales: {x: {time: false}},
      axes: [{label: "fold", incrs: [1, 2, 5, 10]}, {}],
      series: [{label: "fold"}].concat(lines(plot.series, {points: {show: true, size: 6}})),
    }, [plot.x].concat(plot.series.map(function (s) { return s.values; })));
  });

  if (data.roc) {
    var roc = data.roc;
    draw("roc", {
      scales: {x: {time: false, range: [0, 1]}, y: {range: [0, 1]}},
      axes: [{label: "false positive rate"}, {label: "true positive rate"}],
      series: [{label: "FPR"}].concat(lines(roc.series),
        [{label: "chance", stroke: "#9aa6b8", dash: [4, 4], width: 1}]),
    }, [roc.x].concat(roc.series.map(function (s) { return s.values; }), [roc.x]));
  }

  if (data.residuals) {
    var scatter = data.residuals.scatter, histogram = data.residuals.histogram;
    draw("scatter", {
      scales: {x: {time: false}},
      axes: [{label: "actual"}, {label: "predicted"}],
      series: [
        {label: "actual"},
        Object.assign({label: "predicted", stroke: COLOURS[0]}, dots(5, COLOURS[0])),
        {label: "perfect", stroke: "#9aa6b8", dash: [4, 4], width: 1},
      ],
    }, [scatter.x, scatter.predicted, scatter.x]);
    draw("histogram", {
      scales: {x: {time: false}},
      axes: [{label: "residual"}, {label: "rows"}],
      series: [{label: "residual"},
        {label: "rows", stroke: COLOURS[1], fill: "rgba(217, 130, 43, 0.35)",
         paths: uPlot.paths.bars({size: [0.9, 80]})}],
    }, [histogram.x, histogram.counts]);
  }

  // A sweep: its metric per run, the best ringed; a run that ends while the page is open
  // gets its point at once (the page reloads, best and all, when the runs it follows end).
  if (data.sweep) {
    var sweep = data.sweep;
    var columns = [sweep.x, sweep.values, sweep.best];
    var drawn = draw("sweep", {
      scales: {x: {time: false}},
      axes: [{label: "run", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]},
             {label: sweep.metric}],
      series: [{label: "run"},
        Object.assign({label: sweep.metric, stroke: COLOURS[0]}, dots(7, COLOURS[0])),
        Object.assign({label: "best", stroke: COLOURS[1], width: 3}, dots(15, "transparent"))],
    }, columns);
    document.addEventListener("run-end", function (event) {
      var at = sweep.runs.indexOf(event.detail.run_id);
      var value = (event.detail.metrics || {})[sweep.metric];
      if (!drawn || at < 0 || typeof value !== "number") return;
      columns[1][at] = value;
      drawn.plot.setData(columns);
      count(drawn.el, columns);
    });
  }
})();
