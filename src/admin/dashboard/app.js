// Ficus dashboard: swaps in the live part of the page once a second. Everything it shows is also in the page
// as served, so without this script the page is a snapshot that a reload refreshes.
"use strict";
(function () {
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  var busy = false;
  var failures = 0;

  function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    fetch("/dashboard/main" + location.search, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        main.innerHTML = html;
        failures = 0;
        // Not announced every second: only a failure is (below), and its end.
        live.removeAttribute("role");
        live.textContent = "updated " + new Date().toLocaleTimeString();
        document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
      })
      .catch(function (e) {
        failures += 1;
        live.setAttribute("role", "alert");
        live.textContent = "cannot reach the gateway (" + e.message + "); retrying";
      })
      .finally(function () {
        busy = false;
      });
  }

  // Page links inside the live part change the query string in place, so paging needs no reload either.
  main.addEventListener("click", function (ev) {
    var a = ev.target.closest && ev.target.closest("a[data-nav]");
    if (!a) return;
    ev.preventDefault();
    history.replaceState(null, "", a.getAttribute("href"));
    refresh();
  });

  live.textContent = "live";
  setInterval(refresh, 1000);
})();
