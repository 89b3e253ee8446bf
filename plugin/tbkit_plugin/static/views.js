// tbkit plugin frontend: the DOM. Record content (and anything else from the server) reaches
// the page only as text nodes or textContent, never as HTML: a field holding
// "<img src=x onerror=…>" shows those characters. No innerHTML anywhere in this file.

import {LEVELS, PAGE_SIZES, VIEWS, numberText, runColour} from './model.js';

/** createElement with properties and children; a string child becomes a text node. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'className' || key === 'value' || key === 'title' || key === 'type' ||
        key === 'placeholder' || key === 'href' || key === 'disabled') {
      node[key] = value;
    } else {
      node.setAttribute(key, value);
    }
  }
  for (const child of children) {
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** Builds the static page; returns the nodes the other views fill in and index.js wires. */
export function buildLayout(root) {
  const ui = {
    runFilter: el('input', {type: 'text', className: 'run-filter', spellcheck: 'false',
                            placeholder: 'filter runs (regex)', 'aria-label': 'runs regex'}),
    runFilterError: el('div', {className: 'run-filter-error', role: 'alert', hidden: ''}),
    allRuns: el('input', {type: 'checkbox', 'aria-label': 'all runs'}),
    runList: el('ul', {className: 'run-list', 'aria-label': 'runs'}),
    chips: LEVELS.map((level) =>
      el('button', {type: 'button', className: `chip level-${level}`, 'data-level': level,
                    'aria-pressed': 'false'}, level)),
    stepMin: el('input', {type: 'number', placeholder: 'step ≥', 'aria-label': 'step min'}),
    stepMax: el('input', {type: 'number', placeholder: 'step ≤', 'aria-label': 'step max'}),
    search: el('input', {type: 'search', placeholder: 'search text…', 'aria-label': 'search'}),
    where: el('input', {type: 'text', className: 'where', spellcheck: 'false',
                        placeholder: 'filter: loss > 2 and opt.lr < 1e-3, msg contains "nan"',
                        'aria-label': 'filter'}),
    whereError: el('div', {className: 'where-error', role: 'alert', hidden: ''}),
    fields: el('div', {className: 'fields'}),
    prev: el('button', {type: 'button'}, '‹ prev'),
    next: el('button', {type: 'button'}, 'next ›'),
    count: el('span', {className: 'count'}),
    limit: el('select', {'aria-label': 'page size'},
              ...PAGE_SIZES.map((n) => el('option', {value: String(n)}, `${n} / page`))),
    jsonl: el('a', {className: 'button', download: 'records.jsonl'}, 'JSONL'),
    csv: el('a', {className: 'button', download: 'records.csv'}, 'CSV'),
    copy: el('button', {type: 'button', title: 'a link that opens TensorBoard on this view'},
             'copy link'),
    utc: el('button', {type: 'button', className: 'toggle', 'aria-pressed': 'false',
                       title: 'show times in UTC instead of the local time zone'}, 'UTC'),
    follow: el('button', {type: 'button', className: 'toggle', 'aria-pressed': 'false',
                          title: 'keep the newest rows in view as they arrive (like tail -f)'},
               'follow'),
    fresh: el('button', {type: 'button', className: 'fresh', hidden: '',
                         title: 'records that arrived since this view was set up; ' +
                                'click to follow the newest'}),
    link: el('input', {type: 'text', className: 'link', readonly: '', hidden: '',
                       'aria-label': 'link to this view'}),
    status: el('div', {className: 'status', role: 'status'}),
    views: VIEWS.map((view) => el('button', {type: 'button', className: 'toggle view-tab',
                                             'data-view': view, 'aria-pressed': 'false'}, view)),
    fieldPicker: el('div', {className: 'field-picker', 'aria-label': 'fields to chart'}),
    xAxis: el('select', {'aria-label': 'x axis'}, el('option', {value: 'step'}, 'against step'),
              el('option', {value: 'wall_time'}, 'against wall time')),
    log: el('button', {type: 'button', className: 'toggle', 'aria-pressed': 'false',
                       title: 'logarithmic y axis'}, 'log scale'),
    smoothing: el('input', {type: 'range', min: '0', max: '0.99', step: '0.01', value: '0',
                            'aria-label': 'smoothing'}),
    smoothingValue: el('span', {className: 'smoothing-value'}, '0'),
    by: el('select', {'aria-label': 'group by'}),
    tag: el('select', {'aria-label': 'tag'}),
    columnsButton: el('button', {type: 'button', 'aria-expanded': 'false',
                                 title: 'hide, show and reorder the columns of this tag'},
                      'columns'),
    columnPanel: el('div', {className: 'column-panel', hidden: '', 'aria-label': 'columns'}),
    charts: el('div', {className: 'charts-box', hidden: ''}),
    groups: el('div', {className: 'groups-box', hidden: ''}),
    table: el('table'),
    detail: el('aside', {className: 'detail', hidden: ''}),
  };
  ui.tableBox = el('div', {className: 'table-box'}, ui.table);
  ui.chartControls = el('div', {className: 'toolbar chart-controls', hidden: ''},
                        el('span', {}, 'chart '), ui.fieldPicker, ui.xAxis, ui.log,
                        el('label', {}, 'smoothing ', ui.smoothing, ui.smoothingValue));
  ui.groupControls = el('div', {className: 'toolbar group-controls', hidden: ''},
                        el('label', {}, 'group by ', ui.by));
  root.append(
    el('div', {className: 'toolbar view-tabs'}, ...ui.views),
    ui.chartControls, ui.groupControls,
    el('div', {className: 'toolbar'},
       el('span', {className: 'chips'}, ...ui.chips), ui.tag, ui.stepMin, ui.stepMax,
       ui.search, ui.columnsButton),
    ui.columnPanel,
    el('div', {className: 'filter'}, ui.where, ui.whereError, ui.fields),
    el('div', {className: 'toolbar'},
       ui.prev, ui.count, ui.next, ui.limit, ui.fresh, ui.follow, ui.utc,
       el('span', {className: 'spacer'}),
       el('span', {}, 'download '), ui.jsonl, ui.csv, ui.copy, ui.link),
    ui.status,
    el('div', {className: 'main'},
       el('nav', {className: 'runs'}, ui.runFilter, ui.runFilterError,
          el('label', {className: 'all-runs'}, ui.allRuns, 'all runs'), ui.runList),
       ui.tableBox, ui.charts, ui.groups, ui.detail),
  );
  return ui;
}

/** Copies the state into the controls (after a hash was read, or a run dropped). */
export function showControls(ui, state) {
  ui.runFilter.value = state.runRegex;
  for (const chip of ui.chips) {
    chip.setAttribute('aria-pressed', String(state.levels.includes(chip.dataset.level)));
  }
  ui.stepMin.value = state.stepMin;
  ui.stepMax.value = state.stepMax;
  ui.search.value = state.search;
  ui.where.value = state.where;
  ui.limit.value = String(state.limit);
  ui.utc.setAttribute('aria-pressed', String(state.utc));
  ui.follow.setAttribute('aria-pressed', String(state.follow));
}

/** "+N new" beside the pager: records that arrived since the view was set up (0 hides it). */
export function showFresh(ui, count) {
  ui.fresh.textContent = `+${count} new`;
  ui.fresh.hidden = !(count > 0);
}

/** A run's colour swatch (the palette is ours, never text from the server). */
function swatch(name) {
  return el('span', {className: 'swatch', style: `background-color: ${runColour(name)}`,
                     'aria-hidden': 'true'});
}

/**
 * The run list: a checkbox, colour and record count per run that the run filter matches
 * (and how many records newer writes superseded, a run restarted in its folder, when some
 * were); `shown` is the set of runs the view shows. `pattern` is the filter's RegExp, null,
 * or an Error (its message goes under the box and every run is listed).
 */
export function showRuns(ui, runs, superseded, {shown, pattern, allChecked}) {
  const total = (tags) => Object.values(tags).reduce((a, b) => a + b, 0);
  const bad = pattern instanceof Error;
  ui.runFilterError.textContent = bad ? `not a regular expression: ${pattern.message}` : '';
  ui.runFilterError.hidden = !bad;
  ui.runFilter.classList.toggle('invalid', bad);
  const listed = Object.keys(runs).filter((name) => bad || !pattern || pattern.test(name));
  ui.allRuns.checked = allChecked;
  ui.runList.replaceChildren(...listed.map((name) => {
    const count = superseded[name] ? `${total(runs[name])}; ${superseded[name]} superseded` :
        String(total(runs[name]));
    const box = el('input', {type: 'checkbox', 'data-run': name});
    box.checked = shown.has(name);
    return el('li', {title: superseded[name] ?
        `${superseded[name]} records of ${name} were superseded by newer writes at the same ` +
        'or lower steps (the run was restarted in its folder)' : name},
      el('label', {}, box, swatch(name), el('span', {className: 'run-name'}, name),
         el('span', {className: 'run-count'}, count)));
  }));
  if (!listed.length) ui.runList.append(el('li', {className: 'none'}, 'no run matches'));
}

export function showDownloads(ui, jsonlUrl, csvUrl) {
  ui.jsonl.href = jsonlUrl;
  ui.csv.href = csvUrl;
}

/** A value as the text of a cell: strings as they are, the rest as JSON; given the column's
 * dtype, numbers (and a vector's numbers) as model.numberText shows them. */
function cellText(value, dtype = null) {
  if (value === undefined) return '';
  if (typeof value === 'string') return value;
  if (dtype !== null) {
    if (typeof value === 'number') return numberText(value, dtype);
    if (Array.isArray(value) && value.every((v) => typeof v !== 'object' || v === null)) {
      return '[' + value.map((v) => (typeof v === 'number' ? numberText(v, dtype) :
                                                               JSON.stringify(v))).join(',') + ']';
    }
  }
  return JSON.stringify(value);
}

/** Whether a value is tbkit's over-cap marker (a string or vector too big to write whole). */
function isOverCap(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value) &&
      Object.keys(value).length === 1 && typeof value.tbkit_over_cap === 'object';
}

/** A marker in words: "over MAX_ARRAY_LENGTH: 5000 elements, the first 32 kept". */
function overCapText(value) {
  const {cap, length, bytes, head} = value.tbkit_over_cap;
  const size = length !== undefined ? `${length} elements` : `${bytes} bytes`;
  const kept = Array.isArray(head) ? `the first ${head.length} kept` : 'its head kept';
  return `over ${cap}: ${size}, ${kept}`;
}

const pad = (n, width = 2) => String(n).padStart(width, '0');

/** A date's offset from UTC as "+01:00". */
function offsetText(date) {
  const minutes = -date.getTimezoneOffset();
  const a = Math.abs(minutes);
  return `${minutes < 0 ? '-' : '+'}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

/** A date as ISO 8601 in the local time zone with its offset, or in UTC ("…Z"). */
function isoText(date, utc) {
  if (utc) return date.toISOString();
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.` +
      `${pad(date.getMilliseconds(), 3)}${offsetText(date)}`;
}

/** The time zone the wall_time column shows, for its header: "UTC" or "UTC+01:00". */
export function zoneLabel(utc) {
  return utc ? 'UTC' : `UTC${offsetText(new Date())}`;
}

function zoneName(utc) {
  return utc ? 'UTC' : (Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time');
}

/** A wall time (seconds) as a cell: "2026-12-06 06:35:08.123" in the chosen zone, and the
 * full ISO date with its offset and the epoch value as the cell's title. */
function wallTimeCell(value, utc) {
  const date = new Date(Number(value) * 1000);
  if (value === null || value === undefined || isNaN(date)) return {text: cellText(value), title: cellText(value)};
  const iso = isoText(date, utc);
  return {text: iso.replace('T', ' ').slice(0, 23), title: `${iso} (${cellText(value)})`};
}

/**
 * The table: a header per schema column (click to sort) and a row per record (click for the
 * detail). onSort(name) and onRow(row) are the callbacks.
 */
export function showTable(ui, columns, rows, state, {onSort, onRow, ids = [], selected = null}) {
  const head = el('tr', {}, ...columns.map(({name, type, dtype}) => {
    const sorted = state.sort === name;
    const arrow = sorted ? (state.order === 'desc' ? ' ▼' : ' ▲') : '';
    const time = name === 'wall_time';
    const title = time ? `${name}: date and time in ${zoneName(state.utc)}; click to sort` :
        `${name} (${type}${dtype ? `, ${dtype}` : ''}); click to sort`;
    const th = el('th', {title, 'data-column': name,
                         'aria-sort': sorted ? (state.order === 'desc' ? 'descending' : 'ascending') : 'none'},
                  name, ...(time ? [el('span', {className: 'zone'}, ` (${zoneLabel(state.utc)})`)] : []),
                  arrow);
    if (type === 'number') th.classList.add('number');
    th.addEventListener('click', () => onSort(name));
    return th;
  }));
  const body = el('tbody', {}, ...rows.map((row, i) => {
    let overCap = false;
    const tr = el('tr', {}, ...columns.map(({name, dtype = null}) => {
      const value = row[name];
      if (isOverCap(value)) {
        overCap = true;
        return el('td', {className: 'over-cap', title: cellText(value)}, `⚠ ${overCapText(value)}`);
      }
      // The cell shows a number as its dtype reads it; its title, the value as written.
      const {text, title} = name === 'wall_time' ? wallTimeCell(value, state.utc) :
          {text: cellText(value, dtype), title: cellText(value)};
      const td = el('td', {title}, ...(name === 'run' && typeof value === 'string' ?
                                       [swatch(value)] : []), text);
      if (name === 'level' && LEVELS.includes(value)) td.className = `level-${value}`;
      if (value === null) td.className = 'null';
      if (typeof value === 'number') td.className = 'number';
      return td;
    }));
    if (overCap) tr.classList.add('has-over-cap');
    const id = ids[i];
    if (id !== undefined) tr.dataset.id = String(id);
    if (id !== undefined && id === selected) tr.classList.add('selected');
    tr.addEventListener('click', () => {
      for (const other of body.children) other.classList.remove('selected');
      tr.classList.add('selected');
      onRow(row, id);
    });
    return tr;
  }));
  ui.table.replaceChildren(el('thead', {}, head), body);
}

/** "first–last of total" and the prev/next buttons; records null (an error) shows "–". */
export function showPager(ui, records) {
  if (!records) {
    ui.count.textContent = '–';
    ui.prev.disabled = ui.next.disabled = true;
    return;
  }
  const {total, offset, rows} = records;
  const first = rows.length ? offset + 1 : 0;
  ui.count.textContent = `${first}–${offset + rows.length} of ${total}`;
  ui.prev.disabled = offset === 0;
  ui.next.disabled = offset + rows.length >= total;
}

/** The names a filter may use, under the filter box. */
export function showFields(ui, columns) {
  ui.fields.textContent = columns.length ? 'fields: ' + columns.map((c) => c.name).join(', ') : '';
}

/** The parser's message under the filter box, with a caret under the position it names. */
export function showWhereError(ui, error, where) {
  if (!error) {
    ui.whereError.hidden = true;
    ui.whereError.replaceChildren();
    ui.where.classList.remove('invalid');
    return;
  }
  const position = Number.isInteger(error.position) ? error.position : null;
  const parts = [el('div', {className: 'message'},
                    position === null ? error.message : `${error.message} (at position ${position})`)];
  if (position !== null) {
    parts.push(el('pre', {className: 'caret'}, where + '\n' + ' '.repeat(position) + '^'));
  }
  ui.whereError.replaceChildren(...parts);
  ui.whereError.hidden = false;
  ui.where.classList.add('invalid');
}

export function showStatus(ui, text) {
  ui.status.textContent = text;
  ui.status.hidden = !text;
}

/** A value of the record as nodes: objects and arrays nested, strings with their line
 * breaks (pre-wrap), the rest as JSON text; the top-level wall_time as an ISO date with its
 * epoch value beside it. */
function valueNode(value, {utc, key, depth}) {
  if (isOverCap(value)) {
    return el('span', {className: 'value over-cap', title: JSON.stringify(value)},
              `⚠ ${overCapText(value)}`);
  }
  if (depth === 0 && key === 'wall_time' && typeof value === 'number') {
    return el('span', {className: 'value time'}, isoText(new Date(value * 1000), utc),
              el('span', {className: 'epoch'}, ` ${value}`));
  }
  if (typeof value === 'string') return el('span', {className: 'value string'}, value);
  const nested = value !== null && typeof value === 'object' &&
      (Array.isArray(value) ? value.some((v) => v !== null && typeof v === 'object') :
                              Object.keys(value).length > 0);
  if (!nested) {
    return el('span', {className: `value ${typeof value === 'number' ? 'number' : 'json'}`},
              JSON.stringify(value));
  }
  return fieldList(Array.isArray(value) ? value.map((v, i) => [String(i), v]) :
                   Object.entries(value), {utc, depth: depth + 1});
}

function fieldList(entries, {utc, depth}) {
  return el('dl', {className: depth ? 'fields-tree nested' : 'fields-tree'},
            ...entries.flatMap(([key, value]) => [
              el('dt', {}, key),
              el('dd', {}, valueNode(value, {utc, key, depth}))]));
}

/**
 * The detail beside the table. `detail` is null (closed), or {row, record, utc, error}: the
 * flat row gives the title at once; `record` (the record as written, from /record) fills the
 * body when it has arrived. Also a `details` with the record as pretty-printed JSON.
 */
export function showDetail(ui, detail, {onClose} = {}) {
  if (!detail) {
    ui.detail.hidden = true;
    ui.detail.replaceChildren();
    return;
  }
  const {row, record, utc, error} = detail;
  const close = el('button', {type: 'button', className: 'close', title: 'close'}, '×');
  close.addEventListener('click', () => {
    for (const tr of ui.table.querySelectorAll('tr.selected')) tr.classList.remove('selected');
    showDetail(ui, null);
    if (onClose) onClose();
  });
  const head = record || row;  // a chart point knows no step against wall time: the record does
  const title = `${cellText(head.run)} · ${cellText(head.tag)} · step ${cellText(head.step)}`;
  const body = error ? [el('div', {className: 'error'}, error)] : record ? [
    fieldList(Object.entries(record), {utc, depth: 0}),
    el('details', {className: 'as-json'}, el('summary', {}, 'as JSON'),
       el('pre', {className: 'json'}, JSON.stringify(record, null, 2))),
  ] : [el('div', {className: 'status'}, 'loading…')];
  ui.detail.replaceChildren(
    el('div', {className: 'detail-head'}, el('strong', {}, title), close), ...body);
  ui.detail.hidden = false;
}

/** Shows one of the table, charts and groups views (and its controls). */
export function showView(ui, state) {
  for (const tab of ui.views) {
    tab.setAttribute('aria-pressed', String(tab.dataset.view === state.view));
  }
  ui.tableBox.hidden = state.view !== 'table';
  ui.charts.hidden = ui.chartControls.hidden = state.view !== 'charts';
  ui.groups.hidden = ui.groupControls.hidden = state.view !== 'groups';
  ui.xAxis.value = state.x;
  ui.log.setAttribute('aria-pressed', String(state.log));
  ui.smoothing.value = String(state.smoothing);
  ui.smoothingValue.textContent = String(state.smoothing);
}

/** The field picker: a checkbox per numeric field of the selection, checked when charted. */
export function showFieldPicker(ui, fields, chosen) {
  ui.fieldPicker.replaceChildren(...fields.map((name) => {
    const box = el('input', {type: 'checkbox', 'data-field': name});
    box.checked = chosen.includes(name);
    return el('label', {className: 'field-choice'}, box, name);
  }));
  if (!fields.length) ui.fieldPicker.append(el('span', {className: 'none'}, 'no numeric field'));
}

/** The choices of "group by": run, tag and the string fields of the selection. */
export function showGroupChoices(ui, fields, by) {
  ui.by.replaceChildren(...['run', 'tag', ...fields].map((name) => el('option', {value: name}, name)));
  ui.by.value = by;
}

/** A figure of the grouped view: numbers to 6 significant digits (the title has them all). */
function figure(value) {
  if (value === null || value === undefined) return {text: '–', title: ''};
  if (typeof value !== 'number') return {text: String(value), title: String(value)};
  return {text: String(Number(value.toPrecision(6))), title: String(value)};
}

const FIGURES = ['mean', 'min', 'max', 'last', 'nonfinite'];

/** The grouped view: a row per group (its key, count) and per numeric field its mean, min,
 * max, last and NaN/±Inf count (/groups). */
export function showGroups(ui, answer) {
  if (!answer) {
    ui.groups.replaceChildren();
    return;
  }
  const fields = answer.fields.filter((name) => answer.groups.some((g) => name in g.fields));
  const top = el('tr', {}, el('th', {rowspan: '2'}, answer.by), el('th', {rowspan: '2', className: 'number'}, 'count'),
                 ...fields.map((name) => el('th', {colspan: String(FIGURES.length), className: 'field-head'}, name)));
  const sub = el('tr', {}, ...fields.flatMap(() => FIGURES.map((f) =>
    el('th', {className: 'number', title: f === 'nonfinite' ?
        'NaN and ±Infinity values, left out of mean, min and max' :
        f === 'last' ? 'the value at the highest step' : f}, f === 'nonfinite' ? 'NaN/Inf' : f))));
  const rows = answer.groups.map((group) => {
    const key = group.key === null ? el('td', {className: 'null'}, `(no ${answer.by})`) :
        el('td', {className: 'group-key'}, ...(answer.by === 'run' ? [swatch(group.key)] : []),
           String(group.key));
    return el('tr', {}, key, el('td', {className: 'number'}, String(group.count)),
              ...fields.flatMap((name) => FIGURES.map((f) => {
                const figures = group.fields[name];
                const {text, title} = figure(figures ? figures[f] : null);
                const td = el('td', {className: 'number', title}, text);
                if (f === 'nonfinite' && figures && figures.nonfinite) td.classList.add('has-nonfinite');
                return td;
              })));
  });
  ui.groups.replaceChildren(
    el('div', {className: 'groups-note'},
       `${answer.total} matching records in ${answer.groups.length} groups, over every ` +
       'matching record (not the page)'),
    el('table', {className: 'groups'}, el('thead', {}, top, sub), el('tbody', {}, ...rows)));
}

/** The tag chooser: "all tags", then each tag of the runs shown. */
export function showTags(ui, tags, tag) {
  const names = tag && !tags.includes(tag) ? [...tags, tag] : tags;
  ui.tag.replaceChildren(el('option', {value: ''}, 'all tags'),
                         ...names.map((name) => el('option', {value: name}, name)));
  ui.tag.value = tag;
}

/**
 * The column chooser of the current tag: a checkbox (shown) and ← → buttons (move) per column,
 * in the table's order, and "reset". `columns`: model.arrangeColumns' list.
 */
export function showColumnPanel(ui, columns, tag, {onShow, onMove, onReset}) {
  const items = columns.map(({name, hidden}, i) => {
    const box = el('input', {type: 'checkbox', 'aria-label': `show ${name}`});
    box.checked = !hidden;
    box.addEventListener('change', () => onShow(name, box.checked));
    const left = el('button', {type: 'button', className: 'move', title: `move ${name} left`,
                               'aria-label': `move ${name} left`}, '←');
    const right = el('button', {type: 'button', className: 'move', title: `move ${name} right`,
                                'aria-label': `move ${name} right`}, '→');
    left.disabled = i === 0;
    right.disabled = i === columns.length - 1;
    left.addEventListener('click', () => onMove(name, -1));
    right.addEventListener('click', () => onMove(name, 1));
    return el('li', {'data-column': name}, el('label', {}, box, el('span', {className: 'column-name'}, name)),
              left, right);
  });
  const reset = el('button', {type: 'button'}, 'reset');
  reset.addEventListener('click', onReset);
  ui.columnPanel.replaceChildren(
    el('div', {className: 'column-panel-head'},
       `columns of ${tag ? `tag ${tag}` : 'all tags'} (kept in this browser) `, reset),
    el('ol', {className: 'column-list'}, ...items));
}
