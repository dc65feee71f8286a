// fsincident web UI: progressive enhancement only. Every page works without this file.
// Live refresh: a page whose <body data-refresh="N"> is N > 0 reloads its <main> every N seconds
// (paused while the tab is hidden or while the user is typing in a form).
(function () {
  "use strict";
  var dirty = false; // a form field was changed: never replace the page under the user's unsent input
  document.addEventListener("input", function () { dirty = true; });
  function busy() {
    var el = document.activeElement;
    return dirty || (el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT"));
  }
  function refresh() {
    if (document.hidden || busy()) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        if (fresh && main) {
          main.innerHTML = fresh.innerHTML;
          document.dispatchEvent(new CustomEvent("fsi:refreshed"));
        }
        var live = document.querySelector("[data-live]");
        if (live) live.setAttribute("data-last", new Date().toISOString());
      })
      .catch(function () {});
  }
  document.addEventListener("DOMContentLoaded", function () {
    var n = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
    if (n > 0) window.setInterval(refresh, n * 1000);
    // Buttons that ask first: <button data-confirm="Resolve incident 42?">
    document.addEventListener("submit", function (ev) {
      var btn = ev.submitter;
      var msg = btn && btn.getAttribute("data-confirm");
      if (msg && !window.confirm(msg)) ev.preventDefault();
    });
  });
})();
