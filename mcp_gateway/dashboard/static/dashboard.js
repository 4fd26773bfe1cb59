// Live parts: every two seconds each [data-part] is replaced by the server's rendering of it
// (the same template the page was built with), with the page's audit filters. A part that
// holds the focus or the pointer is left alone for that turn, so a click is not lost.
(function () {
  "use strict";
  var PERIOD = 2000;
  var parts = Array.prototype.slice.call(document.querySelectorAll("[data-part]"));
  var leaving = false; // the session ended: one navigation to the login form, then no more turns
  function refresh(el) {
    if (el.contains(document.activeElement) || el.matches(":hover")) return Promise.resolve();
    var url = "/admin/part/" + encodeURIComponent(el.dataset.part) + window.location.search;
    return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (r.status === 401) {
        // Every part learns it at once; a second navigation would abort the first.
        if (!leaving) { leaving = true; window.location.assign("/admin/login"); }
        return;
      }
      if (!r.ok) return;
      return r.text().then(function (html) { el.innerHTML = html; el.dataset.refreshed = String(Date.now()); });
    }).catch(function () { /* the gateway is restarting: the next turn tries again */ });
  }
  function tick() {
    Promise.all(parts.map(refresh)).then(function () { if (!leaving) setTimeout(tick, PERIOD); });
  }
  setTimeout(tick, PERIOD);
})();
