// guichet citizens' pages: the ticket page follows its live state. The
// page works without this file (it reloads itself every 20 seconds in a
// <noscript>); here the server's events swap the state in place, inside
// a live region that screen readers announce.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var el = document.querySelector("[data-live-ticket]");
    if (!el || !window.EventSource) { return; }
    var source = new EventSource(el.getAttribute("data-live-ticket"));
    source.addEventListener("ticket", function (e) {
      el.innerHTML = e.data;
      if (el.querySelector(".ticket-call") && navigator.vibrate) { navigator.vibrate([300, 100, 300]); }
    });
  });
})();
