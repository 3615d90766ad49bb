// deepcovid-node console: live parts of pages, and confirmation of actions.
// Elements with data-poll="/live/..." are refreshed from that URL every data-interval ms;
// a 401 means the session ended, so the page goes to the login form.
"use strict";

function poll(el) {
  const url = el.dataset.poll;
  const every = parseInt(el.dataset.interval || "5000", 10);
  async function tick() {
    if (!document.hidden) {
      try {
        const r = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
        if (r.status === 401) {
          window.location.href = "/login?next=" + encodeURIComponent(window.location.pathname);
          return;
        }
        if (r.ok) {
          el.innerHTML = await r.text();
          el.dataset.updated = String(Date.now());
        }
      } catch (e) {
        // the node is restarting or the network blinked: try again next time
      }
    }
    window.setTimeout(tick, every);
  }
  window.setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-poll]").forEach(poll);
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
});
