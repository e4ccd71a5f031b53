/* moopt organisation finder: a combobox in the page header (WAI-ARIA 1.2 combobox pattern).
 *
 * The list of organisations is window.MOOPT_FINDER_INDEX, set by assets/finder-index.js (a
 * script, not JSON fetched at run time, so the finder also works from file://). Each entry:
 * {code, name, level, level_label, url} with url relative to the site root; the finder's
 * data-root attribute holds the path from this page to that root.
 * Without JavaScript the finder stays hidden and the Organisations page lists everyone.
 */
(function () {
  "use strict";
  var MAX_RESULTS = 10;

  function normalise(text) {
    return String(text).toLowerCase().normalize("NFKD").replace(/[\u0300-\u036f]/g, "")
      .replace(/\s+/g, " ").trim();
  }

  /* Every typed word must appear in the name, code or level; exact codes, then names that
   * start with the text, come first. */
  function search(entries, query) {
    var words = normalise(query).split(" ").filter(Boolean);
    if (!words.length) { return []; }
    var wanted = normalise(query);
    var scored = [];
    entries.forEach(function (entry) {
      var code = normalise(entry.code);
      var haystack = normalise(entry.name) + " " + code + " " + normalise(entry.level_label);
      for (var i = 0; i < words.length; i++) {
        if (haystack.indexOf(words[i]) === -1) { return; }
      }
      var name = normalise(entry.name);
      var score = code === wanted ? 0 : (code.indexOf(wanted) === 0 ? 1 :
        (name.indexOf(wanted) === 0 ? 2 : (name.indexOf(wanted) !== -1 ? 3 : 4)));
      scored.push({score: score, entry: entry});
    });
    scored.sort(function (a, b) {
      return a.score - b.score || a.entry.name.localeCompare(b.entry.name) ||
        a.entry.code.localeCompare(b.entry.code);
    });
    return scored.map(function (s) { return s.entry; });
  }

  function start(finder) {
    var index = window.MOOPT_FINDER_INDEX;
    if (!index || !index.organisations) { return; }
    var entries = index.organisations;
    var root = finder.getAttribute("data-root") || "";
    var input = finder.querySelector("input");
    var list = finder.querySelector("[role=listbox]");
    var status = finder.querySelector("[aria-live]");
    var active = -1;
    var shown = [];

    function optionId(i) { return list.id + "-" + i; }

    function setActive(i) {
      var options = list.querySelectorAll("[role=option]");
      active = i;
      for (var k = 0; k < options.length; k++) {
        options[k].setAttribute("aria-selected", k === i ? "true" : "false");
      }
      if (i >= 0 && options[i]) {
        input.setAttribute("aria-activedescendant", optionId(i));
        options[i].scrollIntoView({block: "nearest"});
      } else {
        input.removeAttribute("aria-activedescendant");
      }
    }

    function close() {
      list.hidden = true;
      input.setAttribute("aria-expanded", "false");
      setActive(-1);
    }

    function go(entry) { window.location.href = root + entry.url; }

    function update() {
      var query = input.value;
      var found = search(entries, query);
      shown = found.slice(0, MAX_RESULTS);
      list.textContent = "";
      shown.forEach(function (entry, i) {
        var option = document.createElement("li");
        option.id = optionId(i);
        option.setAttribute("role", "option");
        option.setAttribute("aria-selected", "false");
        var name = document.createElement("span");
        name.className = "moopt-finder__name";
        name.textContent = entry.name;
        var detail = document.createElement("span");
        detail.className = "moopt-finder__detail";
        detail.textContent = entry.level_label + " " + entry.code;
        option.appendChild(name);
        option.appendChild(detail);
        option.addEventListener("mousedown", function (event) { event.preventDefault(); });
        option.addEventListener("click", function () { go(entry); });
        list.appendChild(option);
      });
      var open = shown.length > 0;
      list.hidden = !open;
      input.setAttribute("aria-expanded", open ? "true" : "false");
      setActive(-1);
      if (!normalise(query)) {
        status.textContent = "";
      } else if (!found.length) {
        status.textContent = "No organisation matches.";
      } else {
        status.textContent = found.length + (found.length === 1 ? " organisation matches" :
          " organisations match") + (found.length > shown.length ? "; the first " + shown.length +
          " are listed." : ".") + " Use the arrow keys to choose, then Enter.";
      }
    }

    input.addEventListener("input", update);
    input.addEventListener("keydown", function (event) {
      if (event.key === "ArrowDown") {
        if (list.hidden) { update(); }
        if (shown.length) { setActive((active + 1) % shown.length); }
        event.preventDefault();
      } else if (event.key === "ArrowUp") {
        if (shown.length) { setActive(active <= 0 ? shown.length - 1 : active - 1); }
        event.preventDefault();
      } else if (event.key === "Enter") {
        if (!list.hidden && shown.length) {
          go(shown[active >= 0 ? active : 0]);
          event.preventDefault();
        }
      } else if (event.key === "Escape") {
        if (!list.hidden) { close(); } else { input.value = ""; update(); }
        event.preventDefault();
      }
    });
    input.addEventListener("blur", close);
    input.addEventListener("focus", function () { if (input.value) { update(); } });
    finder.hidden = false;
  }

  function startAll() {
    var finders = document.querySelectorAll(".moopt-finder");
    for (var i = 0; i < finders.length; i++) { start(finders[i]); }
  }

  window.mooptFinderSearch = search;  // for tests and the console
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startAll);
  } else {
    startAll();
  }
})();
