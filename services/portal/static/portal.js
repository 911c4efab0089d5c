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
    var kind = el.getAttribute("data-live-kind") || "queue";
    var source = new EventSource(el.getAttribute("data-live"));
    var fire = function () {
      document.body.dispatchEvent(new CustomEvent("guichet:" + kind, { bubbles: true }));
    };
    source.addEventListener("open", fire);
    source.addEventListener(kind, fire);
  }

  // The kiosk's ticket page goes back to the welcome page after a while.
  function returnAfter() {
    var el = document.querySelector("[data-return-after]");
    if (!el) { return; }
    var secs = parseInt(el.getAttribute("data-return-after"), 10) || 30;
    setTimeout(function () { window.location.assign(el.getAttribute("href")); }, secs * 1000);
  }

  // The waiting-room board: a chime when a new call (or a recall) comes,
  // once the sound is switched on (browsers play sound only after a touch).
  var chime = { on: false, key: null, ctx: null };
  function ring() {
    if (!chime.on || !window.AudioContext) { return; }
    chime.ctx = chime.ctx || new window.AudioContext();
    var ctx = chime.ctx;
    [660, 880].forEach(function (freq, i) {
      var osc = ctx.createOscillator();
      var gain = ctx.createGain();
      var start = ctx.currentTime + i * 0.35;
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, start);
      gain.gain.exponentialRampToValueAtTime(0.4, start + 0.03);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.6);
      osc.connect(gain).connect(ctx.destination);
      osc.start(start);
      osc.stop(start + 0.65);
    });
  }
  function checkChime() {
    var el = document.querySelector("[data-chime-key]");
    var key = el ? el.getAttribute("data-chime-key") : "";
    if (chime.key !== null && key && key !== chime.key) { ring(); }
    chime.key = key;
  }
  function chimeToggle() {
    var b = document.querySelector("[data-chime-toggle]");
    if (!b) { return; }
    checkChime();
    b.addEventListener("click", function () {
      chime.on = !chime.on;
      b.setAttribute("aria-pressed", chime.on ? "true" : "false");
      b.textContent = chime.on ? "Couper le son" : "Activer le son";
      if (chime.on) { ring(); }
    });
  }

  // Screen pop: a call ringing at (or answered by) this agent shows the
  // caller's fiche, or a new request for an unknown number, on whatever
  // page she has open.
  function calls() {
    var zone = document.querySelector("[data-calls]");
    if (!zone || !window.EventSource || !window.htmx) { return; }
    var source = new EventSource(zone.getAttribute("data-calls"));
    source.addEventListener("call", function (e) {
      window.htmx.ajax("GET", "/appel/" + encodeURIComponent(e.data), { target: zone, swap: "innerHTML" });
    });
    zone.addEventListener("click", function (e) {
      if (e.target && e.target.hasAttribute("data-call-close")) { zone.innerHTML = ""; }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    live();
    calls();
    returnAfter();
    chimeToggle();
    focusErrors();
    tick();
    setInterval(tick, 1000);
  });
  // After a live refresh, the countdowns of new offers start at once.
  document.addEventListener("htmx:afterSwap", function () { tick(); checkChime(); });
})();
