// Follows a job on its admin page: polls the jobs API (with the session) until the job ends.
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root) { return; }
  var ended = ["succeeded", "failed", "cancelled"];
  var delay = parseInt(root.dataset.pollMs, 10) || 1000;

  function setText(id, value) { document.getElementById(id).textContent = value; }

  function render(job) {
    var state = document.getElementById("job-state");
    state.textContent = job.state;
    state.className = "state " + job.state;
    setText("job-processed", job.processed);
    setText("job-total", job.total === null ? "not known yet" : job.total);
    setText("job-inserted", job.inserted);
    setText("job-duplicates", job.duplicates);
    setText("job-failed", job.failed);
    var bar = document.getElementById("job-progress");
    bar.max = job.total || Math.max(job.processed, 1);
    bar.value = job.state === "succeeded" ? bar.max : job.processed;
    var description = document.getElementById("job-description");
    description.hidden = !job.error_description;
    description.textContent = job.error_description || "";
    var list = document.getElementById("job-errors");
    list.textContent = "";
    job.errors.forEach(function (error) {
      var item = document.createElement("li");
      item.textContent = "line " + error.line + ": " + error.error;
      list.appendChild(item);
    });
  }

  function poll() {
    fetch(root.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (job) {
        render(job);
        if (ended.indexOf(job.state) === -1) { setTimeout(poll, delay); }
      })
      .catch(function () { setTimeout(poll, delay * 3); });
  }
  poll();
}());
