/* moopt sortable and filterable tables (indicator pages).
 *
 * A table with class "moopt-sortable" gets a button in each column heading: select it (click,
 * Enter or Space) to sort by that column, again to reverse. The heading carries aria-sort and
 * the button says what it does. Cells sort by their data-sort attribute (numbers for
 * data-sort-type="number" columns; empty cells last) or their text.
 * A search box (class "moopt-table-filter", data-table = the table's id) shows only the rows
 * whose first two cells contain every typed word, and says how many are shown.
 * Without JavaScript the table is plain and complete, and the search box stays hidden.
 */
(function () {
  "use strict";

  function normalise(text) {
    return String(text).toLowerCase().normalize("NFKD").replace(/[\u0300-\u036f]/g, "")
      .replace(/\s+/g, " ").trim();
  }

  function cellKey(row, column, numeric) {
    var cell = row.cells[column];
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    if (numeric) {
      var number = parseFloat(raw);
      return isNaN(number) ? null : number;
    }
    return raw === "" ? null : normalise(raw);
  }

  function sortBy(table, column, descending) {
    var body = table.tBodies[0];
    var heading = table.tHead.rows[0].cells[column];
    var numeric = heading.getAttribute("data-sort-type") === "number";
    var rows = Array.prototype.slice.call(body.rows).map(function (row, index) {
      return { row: row, key: cellKey(row, column, numeric), index: index };
    });
    rows.sort(function (a, b) {
      if (a.key === null || b.key === null) {  // empty cells last, whichever the direction
        return a.key === b.key ? a.index - b.index : (a.key === null ? 1 : -1);
      }
      var order = a.key < b.key ? -1 : (a.key > b.key ? 1 : 0);
      return (descending ? -order : order) || a.index - b.index;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell, index) {
      var button = cell.querySelector("button");
      if (index === column) {
        cell.setAttribute("aria-sort", descending ? "descending" : "ascending");
      } else {
        cell.removeAttribute("aria-sort");
      }
      if (button) {
        var name = button.getAttribute("data-label");
        var next = index === column && !descending ? "descending" : "ascending";
        button.setAttribute("aria-label", name + ": sort " + next);
      }
    });
  }

  function makeSortable(table) {
    if (!table.tHead || !table.tBodies.length) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell, column) {
      var label = cell.textContent;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "moopt-sort";
      button.setAttribute("data-label", label);
      button.setAttribute("aria-label", label + ": sort ascending");
      button.textContent = label;
      cell.textContent = "";
      cell.appendChild(button);
      button.addEventListener("click", function () {
        sortBy(table, column, cell.getAttribute("aria-sort") === "ascending");
      });
    });
  }

  function makeFilter(input) {
    var table = document.getElementById(input.getAttribute("data-table"));
    if (!table) { return; }
    var tools = input.closest(".moopt-table-tools");
    var count = tools ? tools.querySelector(".moopt-table-count") : null;
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var texts = rows.map(function (row) {
      return normalise(row.cells[0].textContent + " " + row.cells[1].textContent);
    });
    function apply() {
      var words = normalise(input.value).split(" ").filter(Boolean);
      var shown = 0;
      rows.forEach(function (row, index) {
        var match = words.every(function (word) { return texts[index].indexOf(word) !== -1; });
        row.hidden = !match;
        if (match) { shown += 1; }
      });
      if (count) {
        count.textContent = words.length ? shown + " of " + rows.length + " shown" : "";
      }
    }
    input.addEventListener("input", apply);
    if (tools) { tools.hidden = false; }
    apply();
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("table.moopt-sortable"), makeSortable);
    Array.prototype.forEach.call(document.querySelectorAll("input.moopt-table-filter"), makeFilter);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
