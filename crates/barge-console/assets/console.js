// Barge console: follows a job's log live. Polls log.json (the next lines of the latest
// attempt and the job's status) and appends lines as text, never as HTML.
(function () {
  "use strict";
  var pre = document.getElementById("log");
  if (!pre) return;
  var state = document.getElementById("log-state");
  var src = pre.getAttribute("data-src");
  var pollMs = parseInt(pre.getAttribute("data-poll-ms"), 10) || 1000;
  var keep = parseInt(pre.getAttribute("data-keep"), 10) || 5000;
  var stream = "", token = "", lines = 0;

  function append(text) {
    pre.appendChild(document.createTextNode(text + "\n"));
    lines += 1;
    while (lines > keep && pre.firstChild) {
      pre.removeChild(pre.firstChild);
      lines -= 1;
    }
  }

  function poll() {
    var url = src + "?stream=" + encodeURIComponent(stream) + "&token=" + encodeURIComponent(token);
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (d) {
        if (d.stream && d.stream !== stream) {
          if (stream) append("--- new attempt: " + d.stream + " ---");
          stream = d.stream;
        }
        if (d.token) token = d.token;
        (d.events || []).forEach(function (e) { append(e.m); });
        if (d.events && d.events.length) pre.scrollTop = pre.scrollHeight;
        var badge = document.querySelector("h1 .status");
        if (d.status && badge && badge.textContent !== d.status) {
          badge.textContent = d.status;
          badge.className = "status s-" + d.status.toLowerCase();
        }
        var reason = document.getElementById("status-reason");
        if (d.done && d.reason && reason) reason.textContent = d.reason;
        if (d.done) {
          state.textContent = "The job is " + d.status + "; its log is complete (" + lines + " lines).";
          return;
        }
        state.textContent = stream ? "Following the log (" + (d.status || "") + ")…" : "No log yet: the job is " + d.status + ".";
        setTimeout(poll, d.more ? 0 : pollMs);
      })
      .catch(function (err) {
        state.textContent = "The log could not be read (" + err.message + "); retrying.";
        setTimeout(poll, pollMs * 3);
      });
  }
  poll();
})();
