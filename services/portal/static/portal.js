// guichet portal: small progressive enhancements. Every page works without
// this file; it adds offer countdowns and focus on form errors.
(function () {
  "use strict";

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      var end = Date.parse(el.getAttribute("data-countdown"));
      if (isNaN(end)) { return; }
      var left = Math.max(0, Math.round((end - now) / 1000));
      el.textContent = left > 0 ? left + " s" : "expirée";
    });
  }

  function focusErrors() {
    var el = document.getElementById("erreur-formulaire") || document.getElementById("erreurs");
    if (el) { el.focus(); }
  }

  // Live views: the server's events (no personal data) become a
  // `guichet:<kind>` event on <body>, which the page's fragments listen to
  // (hx-trigger="guichet:queue from:body"). Opening (and every reopening
  // after a network cut) refreshes once, so a change made between the
  // page's rendering and the connection is not missed. Run after htmx has
  // set up its listeners (scripts are deferred, in order).
  function live() {
    var el = document.querySelector("[data-live]");
    if (!el || !window.EventSource) { return; }
    var source = new EventSource(el.getAttribute("data-live"));
    var fire = function () {
      document.body.dispatchEvent(new CustomEvent("guichet:queue", { bubbles: true }));
    };
    source.addEventListener("open", fire);
    source.addEventListener("queue", fire);
  }

  document.addEventListener("DOMContentLoaded", function () {
    live();
    focusErrors();
    tick();
    setInterval(tick, 1000);
  });
  // After a live refresh, the countdowns of new offers start at once.
  document.addEventListener("htmx:afterSwap", tick);
})();
