// tbkit plugin frontend: view state, its URL form, and requests to the plugin's routes.
// No DOM here. Every URL is relative: the page runs in an iframe whose <base> is
// /data/plugin/tbkit/, so './records' is the plugin's /records route (see http_api.md).

export const LEVELS = ['debug', 'info', 'warning', 'error'];
export const PAGE_SIZES = [25, 50, 100, 250, 500, 1000];
export const VIEWS = ['table', 'charts', 'groups'];
export const BUILTIN_COLUMNS = ['run', 'tag', 'step', 'wall_time', 'level'];

/** The view's state; every field has a query-parameter twin (see toParams, toHash). `runs`:
 * the checked runs, or null for every run (new runs included). `view`: table, charts or
 * groups; `fields`: the charted fields; `x`: step or wall_time; `smoothing`: TensorBoard's
 * smoothing weight (0 to 0.99); `by`: what the grouped view groups by. */
export function defaultState() {
  return {runs: null, runRegex: '', levels: [], stepMin: '', stepMax: '', search: '', where: '',
          sort: '', order: 'asc', limit: 100, offset: 0, utc: false, follow: false,
          view: 'table', fields: [], x: 'step', log: false, smoothing: 0, by: 'run', tag: ''};
}

/** The tags of the runs the view shows (`runs`: run → tag → count), in name order. */
export function tagsOf(runs, names) {
  return [...new Set(names.flatMap((name) => Object.keys(runs[name] || {})))].sort();
}

// Columns per tag: which are hidden and in which order they stand, remembered in the browser
// (localStorage, key "tbkit.columns.<tag>"; "*" for all tags). {order: [names], hidden: [names]}.
const COLUMNS_KEY = 'tbkit.columns.';

/** The column settings of a tag ('' for all tags): {order, hidden}, empty when none are kept
 * (or the browser keeps none: private mode, or storage refused). */
export function columnPrefs(tag) {
  try {
    const kept = JSON.parse(localStorage.getItem(COLUMNS_KEY + (tag || '*')) || 'null');
    if (kept && Array.isArray(kept.order) && Array.isArray(kept.hidden)) {
      return {order: kept.order.filter((n) => typeof n === 'string'),
              hidden: kept.hidden.filter((n) => typeof n === 'string')};
    }
  } catch (error) {
    // Unreadable or refused: the schema's own order.
  }
  return {order: [], hidden: []};
}

export function saveColumnPrefs(tag, prefs) {
  try {
    localStorage.setItem(COLUMNS_KEY + (tag || '*'), JSON.stringify(prefs));
  } catch (error) {
    // Storage refused (private mode, quota): the settings last for this page only.
  }
}

/** Every column of the schema, each with `hidden`: those the settings order first, in that
 * order (a move saves the whole order), then any they do not name yet (a field that appeared
 * later) in schema order. */
export function arrangeColumns(columns, prefs) {
  const byName = new Map(columns.map((c) => [c.name, c]));
  const named = prefs.order.filter((name) => byName.has(name));
  const rest = columns.filter((c) => !named.includes(c.name));
  return [...named.map((name) => byName.get(name)), ...rest]
      .map((c) => ({...c, hidden: prefs.hidden.includes(c.name)}));
}

/** The settings after moving column `name` one place left (-1) or right (+1). */
export function moveColumn(prefs, columns, name, delta) {
  const order = arrangeColumns(columns, prefs).map((c) => c.name);
  const i = order.indexOf(name);
  const j = i + delta;
  if (i < 0 || j < 0 || j >= order.length) return prefs;
  [order[i], order[j]] = [order[j], order[i]];
  return {order, hidden: prefs.hidden};
}

/** The numeric fields of a schema (what a chart can plot; built-ins left out). */
export function numericFields(columns) {
  return columns.filter((c) => c.type === 'number' && !BUILTIN_COLUMNS.includes(c.name))
      .map((c) => c.name);
}

// Numbers as their dtype reads them. JSON carries no dtype: the writer records each field's in
// the summary's metadata, and /schema gives it per column (`dtype`, null when unknown or not
// the same in every selected tag). A float32 is written with 9 significant digits
// (0.00100000005, the float32 nearest 0.001); a cell shows the shortest text that reads back
// as the same float32 (0.001). float16 and bfloat16 are written as the float32 they widen to,
// so they are shown as that float32.
const FLOAT32_DTYPES = ['float32', 'float16', 'bfloat16'];

/** Whether `text` (a decimal number) reads back as the float32 `f`. */
function readsBackAs(text, f) {
  return Math.fround(Number(text)) === f;
}

/** The p-digit decimal that reads back as the float32 `a` (> 0, finite) and is closest to it,
 * as text, or null when none does. Only the two p-digit decimals around `a` can: the one
 * toExponential rounds to and its neighbour on the other side of `a`. When `a` lies halfway
 * between them (toExponential rounds that up), the one with an even last digit, as Python's
 * repr and numpy do. */
function closestWithDigits(a, p) {
  const [mantissa, exponent] = a.toExponential(p - 1).split('e');
  const m = Number(mantissa.replace('.', ''));  // p digits: a ≈ m·10^q
  const q = Number(exponent) - (p - 1);
  const low = 10 ** (p - 1);
  const below = m > low ? [m - 1, q] : [10 * low - 1, q - 1];
  const longer = a.toExponential(p);  // p + 1 digits, exact when `a` is halfway
  const halfway = /5e/.test(longer) && Number(longer) === a;
  const candidates = halfway ? [[m, q], below].sort(([x], [y]) => (x % 2) - (y % 2)) :
      [[m, q], [m + 1, q], below];
  let best = null;
  for (const [digits, power] of candidates) {
    const text = `${digits}e${power}`;
    if (!readsBackAs(text, a)) continue;
    if (halfway) return text;  // both as close: the even one first
    const distance = Math.abs(Number(text) - a);
    if (best === null || distance < best.distance) best = {text, distance};
  }
  return best === null ? null : best.text;
}

/** The shortest decimal text that reads back as the float32 value `f` (a Number that holds a
 * float32 exactly), in JavaScript's number notation: 0.001 → "0.001", 15.45 → "15.45",
 * 1e-7 → "1e-7"; among texts of that length, the closest to `f`. */
export function float32Text(f) {
  if (!Number.isFinite(f) || f === 0) return String(f);
  const a = Math.abs(f);
  for (let p = 1; p <= 9; p++) {  // 9 significant digits always read back
    const text = closestWithDigits(a, p);
    if (text !== null) return (f < 0 ? '-' : '') + String(Number(text));
  }
  return String(f);
}

/** A number as a cell shows it: a float32 column's (dtype float32, float16, bfloat16) as the
 * float32Text of the float32 its text reads as (a float32 is written with 9 significant
 * digits, which read as a double near it, not at it), any other as JavaScript's shortest
 * text, which is float64's. What was written is in the record's detail and downloads. */
export function numberText(value, dtype) {
  if (FLOAT32_DTYPES.includes(dtype)) {
    const f = Math.fround(value);
    if (Number.isFinite(f)) return float32Text(f);  // else not a float32 (not from tbkit)
  }
  return String(value);
}

/** The string fields of a schema (what the grouped view can group by, besides run and tag). */
export function stringFields(columns) {
  return columns.filter((c) => c.type === 'string' && !BUILTIN_COLUMNS.includes(c.name))
      .map((c) => c.name);
}

/** The run-name filter as a case-insensitive RegExp (as TensorBoard's run selector): null
 * when empty; an Error's message when it is not a regular expression. */
export function runPattern(text) {
  if (!text) return null;
  try {
    return new RegExp(text, 'i');
  } catch (error) {
    return error;
  }
}

/**
 * The runs the view shows, of `names` (every run, in name order): the checked ones (every
 * run, new ones included, when `state.runs` is null) that the run filter matches.
 * Returns {runs, all}: `all` when that is every run, so requests may leave `run` out.
 */
export function selectedRuns(state, names) {
  const pattern = runPattern(state.runRegex);
  const usable = pattern instanceof RegExp ? pattern : null;
  const runs = names.filter((name) => (state.runs === null || state.runs.includes(name)) &&
                                      (!usable || usable.test(name)));
  return {runs, all: runs.length === names.length};
}

// A fixed colour per run, from a hash of its name: the same in every view, browser and
// session, and unchanged when runs come or go (a palette by position would shift). Charts
// (issue 12) use the same function.
const PALETTE = ['#e8710a', '#1a73e8', '#d93025', '#12b5cb', '#9334e6', '#188038', '#e52592',
                 '#f9ab00', '#7cb342', '#795548', '#5c6bc0', '#00897b'];

/** The colour of a run (a CSS colour). */
export function runColour(name) {
  let hash = 0x811c9dc5;  // FNV-1a over the UTF-16 code units
  for (let i = 0; i < name.length; i++) {
    hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193) >>> 0;
  }
  return PALETTE[hash % PALETTE.length];
}

/** The offset of the last page of `total` rows (0 when there are none). */
export function lastPageOffset(total, limit) {
  return Math.max(0, Math.floor((total - 1) / limit) * limit);
}

/**
 * The filter, sort and (optionally) page parameters of the routes, as URLSearchParams.
 * `runs`: the run names to ask for (null: every run, the route's default).
 */
export function toParams(state, {page = true, runs = null} = {}) {
  const p = new URLSearchParams();
  for (const run of runs || []) p.append('run', run);
  if (state.tag) p.append('tag', state.tag);
  for (const level of state.levels) p.append('level', level);
  if (state.stepMin !== '') p.set('step_min', state.stepMin);
  if (state.stepMax !== '') p.set('step_max', state.stepMax);
  if (state.search) p.set('search', state.search);
  if (state.where.trim()) p.set('where', state.where);
  if (state.sort) {
    p.set('sort', state.sort);
    p.set('order', state.order);
  }
  if (page) {
    p.set('limit', String(state.limit));
    p.set('offset', String(state.offset));
  }
  return p;
}

/** The state a location hash (`#run=…&where=…`, the same parameters) describes. */
export function fromHash(hash) {
  const p = new URLSearchParams(hash.replace(/^#/, ''));
  const state = defaultState();
  const integer = (text) => (/^-?\d+$/.test(text || '') ? text : '');
  // No `run`: every run; `run=` alone: none checked; else the runs named.
  state.runs = p.has('run') ? [...new Set(p.getAll('run').filter(Boolean))].sort() : null;
  state.runRegex = p.get('run_regex') || '';
  state.levels = LEVELS.filter((level) => p.getAll('level').includes(level));
  state.stepMin = integer(p.get('step_min'));
  state.stepMax = integer(p.get('step_max'));
  state.search = p.get('search') || '';
  state.where = p.get('where') || '';
  state.sort = p.get('sort') || '';
  state.order = p.get('order') === 'desc' ? 'desc' : 'asc';
  const limit = Number(p.get('limit'));
  state.limit = PAGE_SIZES.includes(limit) ? limit : 100;
  state.offset = Math.max(0, Math.floor(Number(p.get('offset')) || 0));
  state.utc = p.get('utc') === '1';
  state.follow = p.get('follow') === '1';
  state.view = VIEWS.includes(p.get('view')) ? p.get('view') : 'table';
  state.fields = [...new Set(p.getAll('chart').filter(Boolean))];
  state.x = p.get('x') === 'wall_time' ? 'wall_time' : 'step';
  state.log = p.get('log') === '1';
  const smoothing = Number(p.get('smoothing'));
  state.smoothing = smoothing > 0 && smoothing < 1 ? smoothing : 0;
  state.by = p.get('by') || 'run';
  state.tag = p.get('tag') || '';
  return state;
}

/** The view's parameters: the route parameters plus the view-only ones (utc, follow). */
function viewParams(state) {
  const p = toParams(state, {runs: state.runs && (state.runs.length ? state.runs : [''])});
  if (state.runRegex) p.set('run_regex', state.runRegex);
  if (state.utc) p.set('utc', '1');
  if (state.follow) p.set('follow', '1');
  if (state.view !== 'table') p.set('view', state.view);
  for (const field of state.fields) p.append('chart', field);
  if (state.x !== 'step') p.set('x', state.x);
  if (state.log) p.set('log', '1');
  if (state.smoothing) p.set('smoothing', String(state.smoothing));
  if (state.by !== 'run') p.set('by', state.by);
  return p;
}

export function toHash(state) {
  return '#' + viewParams(state).toString();
}

// TensorBoard's own deep links: `#<plugin>&<key>=<value>&…`, where a plugin's keys carry the
// prefix `p.<plugin>.` (what TensorBoard's plugin API hands an iframe plugin as its URL data).
const TB_PREFIX = 'p.tbkit.';

/** The view's state in a TensorBoard location hash (`#tbkit&p.tbkit.where=…`), or null when
 * the hash holds none of its keys. */
export function fromTensorBoardHash(hash) {
  const ours = new URLSearchParams();
  for (const [key, value] of new URLSearchParams(hash.replace(/^#/, ''))) {
    if (key.startsWith(TB_PREFIX)) ours.append(key.slice(TB_PREFIX.length), value);
  }
  return [...ours.keys()].length ? fromHash('#' + ours.toString()) : null;
}

/** The TensorBoard hash that opens the tbkit tab on this view. */
export function toTensorBoardHash(state) {
  const p = new URLSearchParams();
  for (const [key, value] of viewParams(state)) p.append(TB_PREFIX + key, value);
  return '#tbkit&' + p.toString();
}

/** A link to an export of the whole current selection (limit and offset do not apply). */
export function exportUrl(state, runs, format) {
  const p = toParams(state, {page: false, runs});
  p.set('format', format);
  return './export?' + p.toString();
}

/** GET a JSON route. Resolves to {ok, status, body}; body is the parsed JSON error on 4xx. */
async function getJson(url) {
  const response = await fetch(url, {headers: {Accept: 'application/json'}});
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = {error: `${response.status} ${response.statusText}`};
  }
  return {ok: response.ok, status: response.status, body};
}

/** Resolves to {runs, superseded, complete}: run → tag → count, run → superseded records,
 * and whether the server read everything. */
export async function fetchRuns() {
  const {ok, body} = await getJson('./runs');
  if (!ok) throw new Error(body.error);
  return {runs: body.runs, superseded: body.superseded, complete: body.complete};
}

/** Resolves to {revision, complete}: what the live poll compares (a cheap route). */
export async function fetchRevision() {
  const {ok, body} = await getJson('./revision');
  if (!ok) throw new Error(body.error);
  return body;
}

/** Resolves to the record of a row id as written (nested objects nested). */
export async function fetchRecord(id) {
  const {ok, body} = await getJson('./record?id=' + encodeURIComponent(id));
  if (!ok) throw new Error(body.error);
  return body.record;
}

/** Resolves to the /chart answer of a field for a state (the common filters apply), or throws
 * an Error with the server's message. */
export async function fetchChart(state, runs, field) {
  const p = toParams(state, {page: false, runs});
  p.delete('sort');
  p.delete('order');
  p.set('field', field);
  p.set('x', state.x);
  const {ok, body} = await getJson('./chart?' + p.toString());
  if (!ok) throw new Error(body.error);
  return body;
}

/** Resolves to the /groups answer for a state (grouped by state.by), or throws. */
export async function fetchGroups(state, runs) {
  const p = toParams(state, {page: false, runs});
  p.delete('sort');
  p.delete('order');
  p.set('by', state.by);
  const {ok, body} = await getJson('./groups?' + p.toString());
  if (!ok) throw new Error(body.error);
  return body;
}

/**
 * Loads the schema and a page of records for a state. Only the newest call's answer counts:
 * load(state, runs) resolves to null when a later call (or cancel()) was made before this
 * one's responses arrived. `runs`: the run names to ask for, null for every run.
 */
export function createLoader() {
  let latest = 0;
  async function load(state, runs) {
    const ticket = ++latest;
    const runOnly = new URLSearchParams();
    for (const run of runs || []) runOnly.append('run', run);
    if (state.tag) runOnly.append('tag', state.tag);  // that tag's fields only
    let schema, records;
    try {
      [schema, records] = await Promise.all([
        getJson('./schema?' + runOnly.toString()),
        getJson('./records?' + toParams(state, {runs}).toString()),
      ]);
    } catch (error) {  // the server is gone, or answered something that is not HTTP
      if (ticket !== latest) return null;
      return {columns: [], records: null, error: {error: `request failed: ${error}`}};
    }
    if (ticket !== latest) return null;
    return {
      columns: schema.ok ? schema.body.columns : [],
      records: records.ok ? records.body : null,
      error: records.ok ? null : records.body,
    };
  }
  load.cancel = () => { latest++; };  // drops the answers of calls made so far
  return load;
}
