// The dashboard's common script: the compare selection, confirmations, live run status.
// Loaded from a file (the edge's Content-Security-Policy runs no inline script).
(function () {
  "use strict";
  var body = document.body;
  var base = body.dataset.base;

  function number(value) {
    if (typeof value !== "number") return "";
    return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
  }

  // Compare: the button counts the selected runs and takes 2 to 5 of them.
  var compare = document.getElementById("compare-form");
  if (compare) {
    var low = Number(compare.dataset.min), high = Number(compare.dataset.max);
    var button = document.getElementById("compare");
    var said = document.getElementById("selected");
    var count = function () {
      var n = compare.querySelectorAll("input[name=run]:checked").length;
      said.textContent = n + " selected";
      button.disabled = n < low || n > high;
    };
    compare.addEventListener("change", count);
    count();
  }

  // Forms that change what serves or runs ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  // A table row or panel shown only when it differs.
  document.querySelectorAll("[data-toggle]").forEach(function (box) {
    var target = document.getElementById(box.dataset.target);
    box.addEventListener("change", function () {
      target.classList.toggle(box.dataset.toggle, box.checked);
    });
  });

  // Live status: one event stream for every queued or running run on the page.
  var live = Array.prototype.slice.call(document.querySelectorAll("[data-live]"));
  if (!live.length) return;
  var ids = [];
  live.forEach(function (el) { if (ids.indexOf(el.dataset.live) < 0) ids.push(el.dataset.live); });
  var query = ids.map(function (id) { return "run=" + encodeURIComponent(id); }).join("&");
  var source = new EventSource(base + "/events?" + query);
  var ended = {};

  function show(data, end) {
    document.querySelectorAll('[data-live="' + data.run_id + '"]').forEach(function (el) {
      el.querySelectorAll("[data-field=status]").forEach(function (badge) {
        badge.textContent = data.status;
        badge.className = "status status-" + data.status.toLowerCase();
      });
      el.querySelectorAll("[data-field=stage]").forEach(function (stage) {
        stage.textContent = end ? "" : (data.stage || "");
      });
      el.querySelectorAll("[data-field=progress]").forEach(function (bar) {
        bar.value = data.progress || 0;
      });
      if (end && data.metrics) {
        el.querySelectorAll("[data-metric]").forEach(function (cell) {
          cell.textContent = number(data.metrics[cell.dataset.metric]);
        });
      }
      if (end) el.dataset.ended = data.status;
    });
  }

  source.addEventListener("progress", function (event) { show(JSON.parse(event.data), false); });
  source.addEventListener("end", function (event) {
    var data = JSON.parse(event.data);
    show(data, true);
    ended[data.run_id] = true;
    if (ids.every(function (id) { return ended[id]; })) {
      source.close();  // the stream ends here; EventSource would open it again
      if (body.dataset.reloadOnEnd) window.location.reload();
    }
  });
})();
