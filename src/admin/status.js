// vipgate status page: poll api/v1/services every 2 s and redraw the tables the server
// rendered. Text only ever goes in through textContent, so names and probe reasons cannot
// inject markup. Rates come from the byte counters between two polls.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;
  var COLUMNS = ["server", "address", "state", "health", "tier", "weight", "active", "connections",
    "bytes in", "bytes out", "in/s", "out/s", "last probe"];
  var STATE_CLASS = { "up": "up", "down": "down", "going up": "going-up", "going down": "going-down",
    "drain": "drain", "maint": "maint" };
  var previous = {};
  var polls = 0;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = String(text); }
    return e;
  }

  function bytes(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    var u = 0;
    var v = n;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
    return u === 0 ? n + " B" : v.toFixed(1) + " " + units[u];
  }

  function probeText(p, nowSecs) {
    if (!p) { return "not probed"; }
    var age = Math.max(0, Math.floor(nowSecs - p.at));
    return (p.ok ? "ok" : "failed") + ", " + p.duration_ms + " ms, " + age + " s ago: " + p.reason;
  }

  function num(text) { return el("td", "num", text); }

  function serverRow(svc, s, now) {
    var key = svc.name + "\u0000" + s.name;
    var before = previous[key];
    var rateIn = "\u2013";
    var rateOut = "\u2013";
    if (before && now > before.t) {
      var secs = (now - before.t) / 1000;
      rateIn = bytes(Math.max(0, Math.round((s.bytes_in - before.bin) / secs))) + "/s";
      rateOut = bytes(Math.max(0, Math.round((s.bytes_out - before.bout) / secs))) + "/s";
    }
    previous[key] = { t: now, bin: s.bytes_in, bout: s.bytes_out };

    var tr = el("tr");
    tr.setAttribute("data-server", s.name);
    tr.setAttribute("data-state", s.state);
    tr.setAttribute("data-admin", s.admin);
    tr.appendChild(el("td", "", s.name));
    tr.appendChild(el("td", "", s.address));
    var state = el("td", "state");
    state.appendChild(el("span", "st st-" + (STATE_CLASS[s.state] || "unknown"), s.state));
    tr.appendChild(state);
    tr.appendChild(el("td", "", s.health));
    tr.appendChild(num(s.tier));
    tr.appendChild(num(s.weight));
    tr.appendChild(num(s.active));
    tr.appendChild(num(s.connections_total));
    tr.appendChild(num(bytes(s.bytes_in)));
    tr.appendChild(num(bytes(s.bytes_out)));
    tr.appendChild(num(rateIn));
    tr.appendChild(num(rateOut));
    tr.appendChild(el("td", "probe", probeText(s.last_probe, now / 1000)));
    return tr;
  }

  function serviceSection(svc, now) {
    var usable = svc.servers.filter(function (s) { return s.usable; }).length;
    var section = el("section", "service");
    section.setAttribute("data-service", svc.name);
    var h2 = el("h2", "", svc.name + " ");
    h2.appendChild(el("span", "mode", svc.mode));
    h2.appendChild(document.createTextNode(" "));
    var unready = svc.servers.length > 0 && usable === 0;
    h2.appendChild(el("span", unready ? "summary unready" : "summary",
      usable + " of " + svc.servers.length + " usable"));
    section.appendChild(h2);
    var table = el("table");
    var head = el("tr");
    COLUMNS.forEach(function (c) { head.appendChild(el("th", "", c)); });
    table.appendChild(el("thead")).appendChild(head);
    var body = el("tbody");
    svc.servers.forEach(function (s) { body.appendChild(serverRow(svc, s, now)); });
    table.appendChild(body);
    section.appendChild(table);
    return section;
  }

  function render(data) {
    var now = Date.now();
    var main = document.getElementById("services");
    while (main.firstChild) { main.removeChild(main.firstChild); }
    data.services.forEach(function (svc) { main.appendChild(serviceSection(svc, now)); });
    polls += 1;
    document.body.setAttribute("data-polls", String(polls));
    document.body.setAttribute("data-generation", String(data.process.generation));
    document.body.removeAttribute("data-error");
    var meta = document.getElementById("meta");
    meta.className = "";
    meta.textContent = "vipgate " + data.version + " \u00b7 config generation " + data.process.generation +
      " \u00b7 updated " + new Date(now).toLocaleTimeString();
  }

  function failed(why) {
    document.body.setAttribute("data-error", why);
    var meta = document.getElementById("meta");
    meta.className = "error";
    meta.textContent = "refresh failed: " + why + " (showing the last data; retrying)";
  }

  function poll() {
    fetch("api/v1/services", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { throw new Error("401: this endpoint needs the bearer token"); }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(render)
      .catch(function (e) { failed(e && e.message ? e.message : String(e)); })
      .then(function () { setTimeout(poll, INTERVAL_MS); });
  }

  poll();
}());
