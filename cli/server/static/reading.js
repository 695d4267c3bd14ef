// How a query not in English was read (the search answer's `reading`), one line under the status:
// reading "海边的狗" as "dog beach"; or a note that the query's language is not understood yet.
"use strict";
(function () {
  window.xmodalReading = function (reading) {
    let line = document.getElementById("reading");
    if (!line) {
      line = document.createElement("p");
      line.id = "reading";
      line.className = "reading";
      document.getElementById("status").after(line);
    }
    line.textContent = reading || "";
    line.hidden = !reading;
  };
})();
