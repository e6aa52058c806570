// The report page's progress bar: server-sent events from queue.stream.
// A file of its own (no inline script), so a strict Content-Security-Policy
// ("script-src 'self'") allows it.
"use strict";
(function () {
  const report = document.getElementById("report");
  const bar = document.getElementById("report-progress");
  const state = document.getElementById("report-state");
  const result = document.getElementById("report-result");
  const events = new EventSource(report.dataset.events);

  events.addEventListener("state", (event) => {
    state.textContent = JSON.parse(event.data).state;
  });
  events.addEventListener("progress", (event) => {
    const progress = JSON.parse(event.data);
    bar.max = progress.total;
    bar.value = progress.done;
    state.textContent = `day ${progress.done} of ${progress.total}`;
  });
  events.addEventListener("done", (event) => {
    const done = JSON.parse(event.data);
    events.close();
    state.textContent = done.state;
    if (done.state === "succeeded") {
      bar.value = bar.max;
      result.textContent = `${done.result.signups} sign-ups in ${done.result.month}`;
    } else if (done.state === "dead") {
      result.textContent = `The report failed: ${done.error}`;
    }
  });
})();
