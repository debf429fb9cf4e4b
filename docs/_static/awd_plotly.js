// Draw the plotly figures of a page with the site's own plotly.js (tools/docs.py writes each figure as a
// <div class="awd-plotly"> followed by its JSON in <script type="application/json" class="awd-plotly-data">).
(function () {
  function draw() {
    document.querySelectorAll("script.awd-plotly-data").forEach(function (s) {
      var div = document.getElementById(s.dataset.target);
      if (!div || div.classList.contains("js-plotly-plot")) return;
      var fig = JSON.parse(s.textContent);
      var config = Object.assign({ responsive: true, displaylogo: false }, fig.config || {});
      Plotly.newPlot(div, { data: fig.data || [], layout: fig.layout || {}, frames: fig.frames || [], config: config });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
