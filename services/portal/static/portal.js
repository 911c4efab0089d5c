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

  document.addEventListener("DOMContentLoaded", function () {
    focusErrors();
    tick();
    setInterval(tick, 1000);
  });
  // After a live refresh, the countdowns of new offers start at once.
  document.addEventListener("htmx:afterSwap", tick);
})();
