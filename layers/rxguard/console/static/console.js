// rxguard console: keyboard navigation of the queue, bulk selection, and the charts
// (ECharts, shipped in static/vendor). Everything works without this file too: forms post.
(function () {
  "use strict";
  var lang = document.body.dataset.lang || "zh";
  var PALETTE = ["#0b5cad", "#c2410c", "#1b6b35", "#7b2cbf", "#8a4b00", "#0e7490", "#a4161a", "#4a5560", "#b5179e", "#3f6212"];

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function data(id) { var el = document.getElementById(id); return el ? JSON.parse(el.textContent) : null; }
  function chartAt(id) {
    var el = document.getElementById(id);
    if (!el || typeof echarts === "undefined") return null;
    var chart = echarts.init(el, null, { locale: lang === "zh" ? "ZH" : "EN" });
    window.addEventListener("resize", function () { chart.resize(); });
    el.dataset.ready = "1";
    return chart;
  }
  function day(ms) { return echarts.time.format(ms, "{yyyy}-{MM}-{dd}", false); }

  // ---------------------------------------------------------------- review queue
  function rows() { return $$("#queue tbody tr.qrow"); }
  var current = -1;
  function focusRow(i) {
    var list = rows();
    if (!list.length) return;
    current = Math.max(0, Math.min(list.length - 1, i));
    list.forEach(function (r) { r.classList.remove("current"); });
    var row = list[current];
    row.classList.add("current");
    row.setAttribute("tabindex", "-1");
    row.focus();
  }
  function updateSelected() {
    var n = $$("#queue input[name=finding_id]:checked").length;
    var out = $("#selected-count");
    if (out) out.textContent = n ? (lang === "zh" ? "（已选 " + n + " 条）" : "(" + n + " selected)") : "";
  }
  document.addEventListener("change", function (e) {
    if (e.target.id === "select-all") {
      $$("#queue input[name=finding_id]:not(:disabled)").forEach(function (c) { c.checked = e.target.checked; });
    }
    updateSelected();
  });
  document.addEventListener("keydown", function (e) {
    var tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" && e.target.classList.contains("reason") && e.key === "Enter") {
      // Enter submits only the decision chosen with c / d: never a confirm by accident
      var row = e.target.closest("tr");
      var intent = row && row.dataset.intent;
      e.preventDefault();
      if (intent) e.target.form.requestSubmit($("button[value=" + intent + "]", e.target.form));
      return;
    }
    if (tag === "input" || tag === "select" || tag === "textarea" || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "/") { var f = $(".filters input"); if (f) { e.preventDefault(); f.focus(); } return; }
    if (!$("#queue")) return;
    var list = rows(), row = list[current];
    if (e.key === "j") { e.preventDefault(); focusRow(current + 1); }
    else if (e.key === "k") { e.preventDefault(); focusRow(current - 1); }
    else if (row && e.key === "x") { var c = $("input[name=finding_id]", row); if (c && !c.disabled) { c.checked = !c.checked; updateSelected(); } }
    else if (row && (e.key === "c" || e.key === "d")) {
      var input = $("input.reason", row);
      if (input) { e.preventDefault(); row.dataset.intent = e.key === "c" ? "confirmed" : "dismissed"; input.focus(); }
    }
    else if (row && (e.key === "o" || e.key === "Enter")) { var a = $("a.frule", row); if (a) { e.preventDefault(); a.click(); } }
  });
  document.addEventListener("htmx:afterSwap", function () { updateSelected(); });

  // ---------------------------------------------------------------- patient timeline (Rx graph)
  function drawTimeline() {
    var d = data("timeline-data"), chart = d && chartAt("timeline-chart");
    if (!chart) return;
    function renderFill(params, api) {
      var row = api.value(0), a = api.coord([api.value(1), row]), b = api.coord([api.value(2), row]);
      var band = api.size([0, 1])[1] * 0.8, lanes = d.lanes[row] || 1, lane = api.value(7);
      var h = Math.max(Math.min(band / lanes - 2, 22), 3), pitch = h + 2;
      var top = a[1] - (lanes * pitch) / 2 + lane * pitch, cs = params.coordSys;
      a = [a[0], top + h / 2];
      var shape = echarts.graphic.clipRectByRect(
        { x: a[0], y: top, width: Math.max(b[0] - a[0], 3), height: h },
        { x: cs.x, y: cs.y, width: cs.width, height: cs.height });
      if (!shape) return;
      var overlap = api.value(3) > 0, early = api.value(4) === 1, reversal = api.value(5) === 1;
      var children = [{ type: "rect", shape: shape, style: api.style({
        stroke: overlap ? "#a4161a" : (reversal ? "#1a1f24" : null), lineWidth: overlap ? 3 : (reversal ? 1.5 : 0),
        lineDash: reversal ? [4, 3] : null, opacity: reversal ? 0.45 : 0.9 }) }];
      if (early) children.push({ type: "text", style: { text: "◆", x: a[0], y: a[1] - h / 2 - 1, fill: "#a4161a",
        align: "center", verticalAlign: "bottom", fontSize: 14 } });
      if (api.value(6) === 1) children.push({ type: "text", style: { text: "!", x: a[0] + 4, y: a[1], fill: "#fff",
        verticalAlign: "middle", fontSize: 12, fontWeight: "bold" } });
      return { type: "group", children: children };
    }
    var series = d.institutions.map(function (code, i) {
      return {
        type: "custom", name: code, renderItem: renderFill, encode: { x: [1, 2], y: 0 },
        itemStyle: { color: PALETTE[i % PALETTE.length] },
        data: d.fills.filter(function (f) { return f.institution === code; }).map(function (f) {
          return { value: [f.row, Date.parse(f.start), Date.parse(f.end), f.overlap, f.early ? 1 : 0, f.reversal ? 1 : 0,
                           f.override ? 1 : 0, f.lane], fill: f };
        })
      };
    });
    chart.setOption({
      aria: { enabled: true }, animation: false,
      legend: { top: 0, data: d.institutions },
      grid: { left: 10, right: 30, top: 40, bottom: 30, containLabel: true },
      tooltip: { formatter: function (p) {
        var f = p.data.fill, z = lang === "zh";
        var lines = [f.line_id + " · " + f.institution, day(Date.parse(f.start)) + " → " + day(Date.parse(f.end)) +
          " (" + f.days + (z ? " 天" : " d") + ")"];
        if (f.overlap > 0) lines.push((z ? "与此前供药重叠 " : "overlaps earlier supply by ") + f.overlap + (z ? " 天" : " d"));
        if (f.early) lines.push(z ? "◆ 提前购药" : "◆ early refill");
        if (f.reversal) lines.push(z ? "退费" : "reversal");
        if (f.override) lines.push((z ? "超量原因：" : "override: ") + f.override);
        if (f.flagged.length) lines.push(f.flagged.join(", "));
        return lines.map(function (s) { return echarts.format.encodeHTML(s); }).join("<br>");
      } },
      xAxis: { type: "time", axisLabel: { hideOverlap: true,
        formatter: { year: "{yyyy}", month: "{yyyy}-{MM}", day: "{MM}-{dd}", hour: "{MM}-{dd}" } } },
      yAxis: { type: "category", data: d.ingredients, inverse: true, axisTick: { show: false } },
      dataZoom: [{ type: "inside", filterMode: "weakFilter" }],
      series: series
    });
  }

  // ---------------------------------------------------------------- institution report card
  function drawInstitution() {
    var d = data("institution-data");
    if (!d) return;
    var monthly = chartAt("monthly-chart");
    if (monthly) monthly.setOption({
      aria: { enabled: true }, animation: false, tooltip: { trigger: "axis" },
      legend: { top: 0 }, grid: { left: 10, right: 10, top: 35, bottom: 10, containLabel: true },
      xAxis: { type: "category", data: d.monthly.map(function (m) { return m[0]; }) }, yAxis: { type: "value" },
      series: [
        { name: lang === "zh" ? "监测明细" : "monitored lines", type: "bar", data: d.monthly.map(function (m) { return m[1]; }), itemStyle: { color: "#0b5cad" } },
        { name: lang === "zh" ? "违规明细" : "flagged lines", type: "bar", data: d.monthly.map(function (m) { return m[2]; }), itemStyle: { color: "#a4161a" } }
      ]
    });
    var fn = d.funnel, funnel = fn && chartAt("funnel-chart");
    if (!funnel) return;
    function limit(key) { return fn.limits.map(function (l) { return [l.n, l[key]]; }); }
    var dashed = { type: "dashed", width: 1.5 };
    funnel.setOption({
      aria: { enabled: true }, animation: false,
      legend: { top: 0 }, grid: { left: 10, right: 20, top: 35, bottom: 10, containLabel: true },
      tooltip: { formatter: function (p) { return p.seriesType === "scatter" ?
        echarts.format.encodeHTML(p.data[2] + ": " + p.data[0] + " / " + (p.data[1] * 100).toFixed(1) + "%") : ""; } },
      xAxis: { type: "value", name: lang === "zh" ? "监测明细" : "lines", min: 0 },
      yAxis: { type: "value", axisLabel: { formatter: function (v) { return (v * 100).toFixed(0) + "%"; } }, min: 0 },
      series: [
        { name: lang === "zh" ? "同行机构" : "peers", type: "scatter", symbolSize: 8, itemStyle: { color: "#4a5560" },
          data: fn.points.filter(function (p) { return p[2] !== d.code; }) },
        { name: d.code, type: "scatter", symbolSize: 16, symbol: "diamond", itemStyle: { color: "#a4161a" },
          data: fn.points.filter(function (p) { return p[2] === d.code; }), z: 5 },
        { name: lang === "zh" ? "均值" : "mean", type: "line", showSymbol: false, lineStyle: { color: "#1a1f24", width: 1.5 },
          data: fn.limits.map(function (l) { return [l.n, fn.mean]; }) },
        { name: "95%", type: "line", showSymbol: false, smooth: true, lineStyle: Object.assign({ color: "#8a4b00" }, dashed), data: limit("hi95") },
        { name: "95%", type: "line", showSymbol: false, smooth: true, lineStyle: Object.assign({ color: "#8a4b00" }, dashed), data: limit("lo95") },
        { name: "99.8%", type: "line", showSymbol: false, smooth: true, lineStyle: Object.assign({ color: "#a4161a" }, dashed), data: limit("hi99") },
        { name: "99.8%", type: "line", showSymbol: false, smooth: true, lineStyle: Object.assign({ color: "#a4161a" }, dashed), data: limit("lo99") }
      ]
    });
  }

  // ---------------------------------------------------------------- rules
  function drawRules() {
    var d = data("rules-data"), chart = d && chartAt("rules-chart");
    if (!chart) return;
    chart.setOption({
      aria: { enabled: true }, animation: false, tooltip: { trigger: "axis" }, color: PALETTE,
      legend: { top: 0, type: "scroll" }, grid: { left: 10, right: 20, top: 40, bottom: 10, containLabel: true },
      xAxis: { type: "category", data: d.months }, yAxis: { type: "value", minInterval: 1 },
      series: d.series.map(function (s) { return { name: s.name, type: "line", data: s.data }; })
    });
  }

  window.addEventListener("DOMContentLoaded", function () {
    updateSelected();
    drawTimeline();
    drawInstitution();
    drawRules();
  });
})();
