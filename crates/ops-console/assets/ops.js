// The ops console refreshes the part of a page marked data-refresh every
// few seconds without a reload (and stops while the tab is hidden).
(function () {
  var el = document.querySelector("[data-refresh]");
  if (!el) return;
  var every = 5000;
  function tick() {
    if (document.hidden) return;
    fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) el.innerHTML = html; })
      .catch(function () {});
  }
  setInterval(tick, every);
})();
