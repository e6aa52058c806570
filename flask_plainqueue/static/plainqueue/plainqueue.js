// The dashboard's only script (its Content-Security-Policy forbids inline ones).

// Ask before destructive or bulk actions (forms marked with data-confirm).
document.addEventListener("submit", function (event) {
  var message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});

// Auto-refresh: reload the page every data-seconds while the box is ticked;
// the choice is remembered in this browser (localStorage) across pages.
(function () {
  var KEY = "plainqueue-autorefresh";
  var box = document.getElementById("pq-autorefresh");
  if (!box) return;
  var seconds = parseFloat(box.getAttribute("data-seconds")) || 5;
  var timer = null;

  function stored() {
    try { return window.localStorage.getItem(KEY) === "on"; } catch (e) { return false; }
  }
  function store(on) {
    try { window.localStorage.setItem(KEY, on ? "on" : "off"); } catch (e) { /* private mode */ }
  }
  function schedule() {
    window.clearTimeout(timer);
    timer = null;
    if (!box.checked) return;
    timer = window.setTimeout(function () {
      // A hidden tab waits until it is shown again.
      if (document.hidden) schedule(); else window.location.reload();
    }, seconds * 1000);
  }

  box.parentElement.hidden = false;
  box.checked = stored();
  box.addEventListener("change", function () {
    store(box.checked);
    schedule();
  });
  schedule();
})();
