/* moopt: draw every chart on the page from its Vega-Lite specification.
 *
 * Each chart is a <div class="moopt-vega"> holding its specification as JSON. Rows that
 * every organisation's page shares arrive in script files that fill window.MOOPT_DATA
 * (script files, not fetch(), so that pages also work when opened from file://); the
 * holder's data-moopt-shared attribute maps each dataset name to its key there.
 * vega-embed (window.vegaEmbed, shipped with the site) draws the chart as SVG.
 */
(function () {
  "use strict";
  var CONFIG = __MOOPT_VEGA_CONFIG__;

  function fail(holder, message) {
    holder.classList.add("moopt-vega-failed");
    var note = document.createElement("p");
    note.className = "moopt-vega-error";
    note.textContent = message + " The figures are in the data download below the chart.";
    holder.appendChild(note);
  }

  // Datasets travel as {columns, constants, rows} (moopt.charts.base.compact_rows).
  function expand(compact) {
    if (Object.prototype.toString.call(compact) === "[object Array]") { return compact; }
    var records = [];
    for (var r = 0; r < compact.rows.length; r += 1) {
      var record = {};
      for (var name in compact.constants) { record[name] = compact.constants[name]; }
      for (var c = 0; c < compact.columns.length; c += 1) { record[compact.columns[c]] = compact.rows[r][c]; }
      records.push(record);
    }
    return records;
  }

  function draw(holder) {
    if (holder.getAttribute("data-moopt-drawn")) { return; }
    holder.setAttribute("data-moopt-drawn", "1");
    if (typeof window.vegaEmbed !== "function") {
      fail(holder, "The chart library did not load, so this chart cannot be drawn.");
      return;
    }
    var spec;
    try {
      spec = JSON.parse(holder.querySelector("script.moopt-vega-spec").textContent);
    } catch (error) {
      fail(holder, "This chart's specification could not be read.");
      return;
    }
    var templateKey = holder.getAttribute("data-moopt-template");
    if (templateKey) {
      var templates = window.MOOPT_SPECS || {};
      if (!Object.prototype.hasOwnProperty.call(templates, templateKey)) {
        fail(holder, "This chart's specification file did not load.");
        return;
      }
      var own = spec;
      spec = {};
      for (var key in templates[templateKey]) { spec[key] = templates[templateKey][key]; }
      for (key in own) { spec[key] = own[key]; }
    }
    var shared = JSON.parse(holder.getAttribute("data-moopt-shared") || "{}");
    var store = window.MOOPT_DATA || {};
    var datasets = {};
    for (var own_name in spec.datasets || {}) { datasets[own_name] = expand(spec.datasets[own_name]); }
    for (var name in shared) {
      if (!Object.prototype.hasOwnProperty.call(store, shared[name])) {
        fail(holder, "This chart's data file did not load.");
        return;
      }
      datasets[name] = expand(store[shared[name]]);
    }
    spec.datasets = datasets;
    var view = holder.querySelector(".moopt-vega-view");
    window.vegaEmbed(view, spec, { actions: false, renderer: "svg", config: CONFIG })
      .then(function () { holder.classList.add("moopt-vega-ready"); })
      .catch(function (error) {
        fail(holder, "This chart could not be drawn (" + String(error && error.message || error) + ").");
      });
  }

  function drawAll() {
    var holders = document.querySelectorAll(".moopt-vega");
    for (var i = 0; i < holders.length; i += 1) { draw(holders[i]); }
  }

  window.MooptCharts = { drawAll: drawAll, config: CONFIG };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
}());
