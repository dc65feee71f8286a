// fsincident web UI, new silence page: refresh the preview of the alerts a silence would mute while the user
// types its matchers (debounced). Without this file the form's "Preview" button does the same server-side.
(function () {
  "use strict";
  var DELAY = 300;
  var timer = null;
  var seq = 0;

  function update(text) {
    var mine = ++seq;
    var url = "/ui/silences/preview?matchers=" + encodeURIComponent(text);
    fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html || mine !== seq) return;  // a newer request is under way
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("silence-preview");
        var old = document.getElementById("silence-preview");
        if (fresh && old) old.replaceWith(document.importNode(fresh, true));
      })
      .catch(function () {});
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.querySelector("#silence-form textarea[name=matchers]");
    if (!box) return;
    var last = box.value;
    box.addEventListener("input", function () {
      if (timer) window.clearTimeout(timer);
      timer = window.setTimeout(function () {
        if (box.value === last) return;
        last = box.value;
        update(box.value);
      }, DELAY);
    });
  });
})();
