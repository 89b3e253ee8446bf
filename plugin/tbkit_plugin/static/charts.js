// tbkit plugin frontend: charts of numeric record fields, drawn by uPlot (vendor/, see its
// README). One chart per field; one line per (run, tag) in the run's colour; NaN and ±Infinity
// as markers at the chart's top (NaN, +Infinity) or bottom (-Infinity) edge, counted in the
// legend. Every text from the server goes in with textContent (views.el), never as HTML.

import uPlot from './vendor/uPlot.esm.js';
import {runColour} from './model.js';
import {el} from './views.js';

const HEIGHT = 240;
const CLICK_RADIUS_PX = 12;

/**
 * TensorBoard's scalar smoothing: an exponential moving average, debiased (divided by
 * 1 - weight^n, so that the first points are not pulled towards 0). Non-finite and missing
 * values pass through and do not count; a constant series is left as it is.
 */
export function smooth(ys, weight) {
  const present = ys.filter((y) => y !== null);
  if (!weight || present.every((y) => y === present[0])) return ys.slice();
  let last = 0;
  let n = 0;
  return ys.map((y) => {
    if (y === null || !Number.isFinite(y)) return y;
    last = last * weight + (1 - weight) * y;
    n += 1;
    return last / (weight === 1 ? 1 : 1 - Math.pow(weight, n));
  });
}

/** The series of one /chart answer on one x axis (uPlot's aligned form): the sorted union of
 * their x values, and per series its y values and row ids at those x (null where it has none). */
export function align(series) {
  const xs = [...new Set(series.flatMap((s) => s.x))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const ys = series.map((s) => {
    const column = new Array(xs.length).fill(null);
    s.x.forEach((x, i) => { column[at.get(x)] = s.y[i]; });
    return column;
  });
  const ids = series.map((s) => {
    const column = new Array(xs.length).fill(null);
    s.x.forEach((x, i) => { column[at.get(x)] = s.ids[i]; });
    return column;
  });
  return {xs, ys, ids};
}

const cssVar = (name) => getComputedStyle(document.body).getPropertyValue(name).trim();

function numberText(value) {
  if (value === null || value === undefined) return '–';
  if (typeof value === 'string') return value;
  return Math.abs(value) >= 1e5 || (value !== 0 && Math.abs(value) < 1e-3) ?
      value.toPrecision(6) : String(Number(value.toPrecision(6)));
}

/**
 * Draws the chart of one /chart answer into a new element and returns
 * {node, plot, series, markers} (also what the test hook window.__tbkitCharts lists).
 * `options`: {x: 'step'|'wall_time', log, smoothing, utc, width, onPoint({run, tag, step,
 * x, id})}.
 */
export function drawChart(answer, options) {
  const {x, log, smoothing, utc, width, onPoint} = options;
  const several = new Set(answer.series.map((s) => s.tag)).size > 1;
  const name = (s) => (several ? `${s.run} · ${s.tag}` : s.run);
  const {xs, ys, ids} = align(answer.series);
  const hidden = ys.map((column) => (log ? column.filter((y) => y !== null && y <= 0).length : 0));
  const raw = ys.map((column) => (log ? column.map((y) => (y !== null && y <= 0 ? null : y)) :
                                        column));
  const data = [xs];
  const uSeries = [{}];
  const entries = answer.series.map((s, k) => {
    const colour = runColour(s.run);
    const entry = {run: s.run, tag: s.tag, index: data.length, smoothIndex: null, colour};
    data.push(raw[k]);
    uSeries.push({label: name(s), stroke: smoothing ? colour + '55' : colour, width: 1.5,
                  spanGaps: true, points: {size: 5, fill: colour}});
    if (smoothing) {
      entry.smoothIndex = data.length;
      data.push(smooth(raw[k], smoothing));
      uSeries.push({label: `${name(s)} (smoothed)`, stroke: colour, width: 2, spanGaps: true,
                    points: {show: false}});
    }
    return entry;
  });
  const markers = [];
  const legendValues = [];
  const xText = (value) => {
    if (value === null || value === undefined) return '–';
    if (x !== 'wall_time') return `step ${value}`;
    const date = new Date(value * 1000);
    return utc ? date.toISOString().replace('T', ' ').slice(0, 23) + ' UTC' :
        date.toLocaleString();
  };
  const hoverX = el('span', {className: 'chart-x'}, '');
  const legend = el('table', {className: 'chart-legend'}, el('tbody', {}, ...answer.series.map((s, k) => {
    const value = el('td', {className: 'number'}, '');
    legendValues.push(value);
    const notes = [];
    if (s.nonfinite_total) notes.push(`${s.nonfinite_total} NaN/±Inf (marked at the edge)`);
    if (hidden[k]) notes.push(`${hidden[k]} ≤ 0 not on the log scale`);
    if (s.downsampled) notes.push(`down-sampled: ${s.x.length} of ${s.total} points (min/max kept)`);
    return el('tr', {},
              el('td', {}, el('span', {className: 'swatch', 'aria-hidden': 'true',
                                       style: `background-color: ${entries[k].colour}`}),
                 el('span', {className: 'series-name'}, name(s))),
              value, el('td', {className: 'notes'}, notes.join('; ')));
  })));
  const fg = cssVar('--fg') || '#212121';
  const rule = cssVar('--rule') || '#f0f0f0';
  const axis = {stroke: fg, grid: {stroke: rule, width: 1}, ticks: {stroke: rule, width: 1}};
  const opts = {
    width, height: HEIGHT,
    legend: {show: false},
    scales: {x: {time: x === 'wall_time'}, y: {distr: log ? 3 : 1}},
    axes: [{...axis}, {...axis, size: 64}],
    series: uSeries,
    hooks: {
      setCursor: [(u) => {
        const i = u.cursor.idx;
        hoverX.textContent = i === null || i === undefined ? '' : xText(u.data[0][i]);
        entries.forEach((entry, k) => {
          const y = i === null || i === undefined ? null : u.data[entry.index][i];
          const smoothed = entry.smoothIndex !== null && y !== null ?
              ` (smoothed ${numberText(u.data[entry.smoothIndex][i])})` : '';
          legendValues[k].textContent = i === null || i === undefined ? '' :
              numberText(y) + smoothed;
        });
      }],
      draw: [(u) => {
        markers.length = 0;
        const ctx = u.ctx;
        const {left, top, width: w, height: h} = u.bbox;
        const size = 5 * devicePixelRatio;
        answer.series.forEach((s, k) => {
          for (const m of s.nonfinite) {
            const cx = u.valToPos(m.x, 'x', true);
            if (!(cx >= left && cx <= left + w)) continue;
            const down = m.value === '-Infinity';
            const cy = down ? top + h - size : top + size;
            ctx.save();
            ctx.fillStyle = entries[k].colour;
            ctx.strokeStyle = entries[k].colour;
            ctx.beginPath();
            if (m.value === 'NaN') {  // a cross: no direction
              ctx.lineWidth = 2 * devicePixelRatio;
              ctx.moveTo(cx - size, cy - size); ctx.lineTo(cx + size, cy + size);
              ctx.moveTo(cx + size, cy - size); ctx.lineTo(cx - size, cy + size);
              ctx.stroke();
            } else {  // a triangle pointing off the chart
              const tip = down ? cy + size : cy - size;
              const base = down ? cy - size : cy + size;
              ctx.moveTo(cx, tip); ctx.lineTo(cx - size, base); ctx.lineTo(cx + size, base);
              ctx.fill();
            }
            ctx.restore();
            markers.push({run: s.run, tag: s.tag, x: m.x, value: m.value, id: m.id,
                          left: cx / devicePixelRatio - u.bbox.left / devicePixelRatio,
                          top: cy / devicePixelRatio - u.bbox.top / devicePixelRatio});
          }
        });
      }],
    },
  };
  if (utc && x === 'wall_time') opts.tzDate = (ts) => uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC');
  const plotBox = el('div', {className: 'chart-plot'});
  const title = el('div', {className: 'chart-title'}, el('strong', {}, answer.field),
                   ` against ${x === 'wall_time' ? 'wall time' : 'step'}`, log ? ' (log scale)' : '',
                   smoothing ? ` · smoothed ${smoothing}` : '', ' ', hoverX);
  const node = el('figure', {className: 'chart', 'data-field': answer.field}, title, plotBox,
                  legend);
  if (!answer.series.length) {
    plotBox.append(el('div', {className: 'status'}, 'no numeric value in the selection'));
  }
  const plot = new uPlot(opts, data, plotBox);

  // A click opens the record of the nearest point (or NaN/Inf marker) within a few pixels.
  plot.over.addEventListener('click', (event) => {
    const px = event.offsetX;
    const py = event.offsetY;
    let best = null;
    const consider = (distance, hit) => {
      if (distance <= CLICK_RADIUS_PX && (!best || distance < best.distance)) {
        best = {distance, hit};
      }
    };
    for (const m of markers) consider(Math.hypot(m.left - px, m.top - py), m);
    entries.forEach((entry, k) => {
      const column = plot.data[entry.index];
      for (let i = 0; i < column.length; i++) {
        if (column[i] === null) continue;
        const dx = plot.valToPos(plot.data[0][i], 'x') - px;
        if (Math.abs(dx) > CLICK_RADIUS_PX) continue;
        consider(Math.hypot(dx, plot.valToPos(column[i], 'y') - py),
                 {run: entry.run, tag: entry.tag, x: plot.data[0][i], id: ids[k][i]});
      }
    });
    if (best) onPoint(best.hit);
  });
  return {node, plot, field: answer.field, x, series: entries, markers, answer};
}
