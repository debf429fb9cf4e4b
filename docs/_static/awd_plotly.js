// Draw the plotly figures of a page with the site's own plotly.js (tools/docs.py writes each figure as a
// <div class="awd-plotly"> followed by its JSON in <script type="application/json" class="awd-plotly-data">).
// Every figure follows the width of the page (a width fixed in the figure's layout is ignored); heights are kept.
(function () {
  function draw() {
    document.querySelectorAll("script.awd-plotly-data").forEach(function (s) {
      var div = document.getElementById(s.dataset.target);
      if (!div || div.classList.contains("js-plotly-plot")) return;
      var fig = JSON.parse(s.textContent);
      var layout = Object.assign({}, fig.layout || {}, { autosize: true });
      delete layout.width;
      var config = Object.assign({}, fig.config || {}, { responsive: true, displaylogo: false });
      Plotly.newPlot(div, { data: fig.data || [], layout: layout, frames: fig.frames || [], config: config });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
