// A run's plots, drawn with uPlot from the data the page carries (a JSON block, not a script).
// Each plot's container says how many points it drew (data-points), for people and for tests.
(function () {
  "use strict";
  var block = document.getElementById("plot-data");
  if (!block || typeof uPlot === "undefined") return;
  var data = JSON.parse(block.textContent);
  var COLOURS = ["#1f5f8b", "#d9822b", "#1d7a46", "#b3261e", "#6f42c1", "#0f8c8c", "#8a5a00",
                 "#c2185b", "#4e5d6c", "#7cb342"];

  function width(el) { return Math.max(320, el.clientWidth || 480); }

  function draw(name, opts, columns) {
    var el = document.querySelector('[data-plot="' + name + '"]');
    if (!el) return;
    opts.width = width(el);
    opts.height = opts.height || 260;
    new uPlot(opts, columns, el);
    var points = 0;
    columns.slice(1).forEach(function (ys) {
      ys.forEach(function (y) { if (y !== null && y !== undefined) points += 1; });
    });
    el.dataset.points = String(points);
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
        {label: "predicted", stroke: COLOURS[0], paths: function () { return null; },
         points: {show: true, size: 5, fill: COLOURS[0]}},
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
})();
