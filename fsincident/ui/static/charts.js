// fsincident web UI: hover crosshair and value readout on server-rendered line charts (progressive enhancement;
// the charts work without it through their <title> tooltips). Re-binds after live refresh (fsi:refreshed).
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var PAIR = /[ML](-?[\d.]+) (-?[\d.]+)/g;

  function parsePath(d) {
    var pts = [], m;
    PAIR.lastIndex = 0;
    while ((m = PAIR.exec(d)) !== null) pts.push([parseFloat(m[1]), parseFloat(m[2])]);
    return pts;
  }

  function fmtValue(v, unit) {
    var a = Math.abs(v), s;
    if (a >= 1e9) s = (v / 1e9).toPrecision(3) + "G";
    else if (a >= 1e6) s = (v / 1e6).toPrecision(3) + "M";
    else if (a >= 1e4) s = (v / 1e3).toPrecision(3) + "k";
    else s = String(parseFloat(v.toPrecision(4)));
    return unit ? s + (unit === "%" ? "" : " ") + unit : s;
  }

  function bind(svg) {
    if (svg.dataset.bound || svg.dataset.points === "0") return;
    svg.dataset.bound = "1";
    var plot = svg.querySelector("rect.plot");
    if (!plot) return;
    var px = +plot.getAttribute("x"), py = +plot.getAttribute("y");
    var pw = +plot.getAttribute("width"), ph = +plot.getAttribute("height");
    var t0 = +svg.dataset.start, t1 = +svg.dataset.end, y0 = +svg.dataset.y0, y1 = +svg.dataset.y1;
    var unit = svg.dataset.unit || "";
    var fmt;
    try {
      fmt = new Intl.DateTimeFormat(undefined, {timeZone: svg.dataset.tz || "UTC", month: "short", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
    } catch (e) {
      fmt = new Intl.DateTimeFormat(undefined, {hour12: false});
    }
    var series = Array.prototype.map.call(svg.querySelectorAll("path.series"), function (p) {
      return {label: p.dataset.label || "", cls: (p.getAttribute("class") || "").split(" ")[1] || "s0",
        pts: parsePath(p.getAttribute("d") || "")};
    });
    var line = document.createElementNS(NS, "line");
    line.setAttribute("class", "crosshair");
    line.setAttribute("y1", py);
    line.setAttribute("y2", py + ph);
    line.style.display = "none";
    svg.appendChild(line);
    var box = document.createElement("div");
    box.className = "chart-readout";
    box.hidden = true;
    var host = svg.parentNode;
    if (getComputedStyle(host).position === "static") host.style.position = "relative";
    host.appendChild(box);

    function hide() { line.style.display = "none"; box.hidden = true; }

    svg.addEventListener("mouseleave", hide);
    svg.addEventListener("mousemove", function (ev) {
      var ctm = svg.getScreenCTM();
      if (!ctm) return;
      var pt = svg.createSVGPoint();
      pt.x = ev.clientX; pt.y = ev.clientY;
      var p = pt.matrixTransform(ctm.inverse());
      if (p.x < px || p.x > px + pw) { hide(); return; }
      line.setAttribute("x1", p.x);
      line.setAttribute("x2", p.x);
      line.style.display = "";
      var t = t0 + (p.x - px) / pw * (t1 - t0);
      box.textContent = "";
      var head = document.createElement("div");
      head.textContent = fmt.format(new Date(t * 1000));
      box.appendChild(head);
      series.slice(0, 8).forEach(function (s) {
        var best = null, dist = Infinity;
        for (var i = 0; i < s.pts.length; i++) {
          var dx = Math.abs(s.pts[i][0] - p.x);
          if (dx < dist) { dist = dx; best = s.pts[i]; }
        }
        if (!best || dist > pw / 20) return;
        var v = y0 + (py + ph - best[1]) / ph * (y1 - y0);
        var row = document.createElement("div");
        row.className = "chart-legend-row " + s.cls;
        row.textContent = s.label + ": " + fmtValue(v, unit);
        box.appendChild(row);
      });
      var hostRect = host.getBoundingClientRect();
      box.hidden = false;
      var left = ev.clientX - hostRect.left + 12;
      if (left + box.offsetWidth > hostRect.width) left = ev.clientX - hostRect.left - box.offsetWidth - 12;
      box.style.left = Math.max(0, left) + "px";
      box.style.top = (ev.clientY - hostRect.top + 12) + "px";
    });
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("svg.line-chart"), bind);
  }
  document.addEventListener("DOMContentLoaded", init);
  document.addEventListener("fsi:refreshed", init);
})();
