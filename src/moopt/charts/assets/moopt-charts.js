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
    var shared = JSON.parse(holder.getAttribute("data-moopt-shared") || "{}");
    var store = window.MOOPT_DATA || {};
    spec.datasets = spec.datasets || {};
    for (var name in shared) {
      if (!Object.prototype.hasOwnProperty.call(store, shared[name])) {
        fail(holder, "This chart's data file did not load.");
        return;
      }
      spec.datasets[name] = store[shared[name]];
    }
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
