// tbkit plugin frontend: every tbkit record as a table, live (issues 3 and 12). TensorBoard
// loads this ES module in an iframe whose <base> is /data/plugin/tbkit/ and calls render().
// model.js holds state and requests, views.js the DOM, host.js the TensorBoard around the
// page; this file wires them. The view state lives in the iframe page's hash and, while the
// tab is shown, in TensorBoard's own hash (#tbkit&p.tbkit.…), so a link reopens the view.

import * as charts from './charts.js';
import * as host from './host.js';
import * as model from './model.js';
import * as views from './views.js';

const TYPING_DELAY_MS = 300;
const LIVE_POLL_MS = 2000;  // TensorBoard's own auto-reload is 30 s; its reload button is heard
const LOADING_POLL_MS = 1000;  // while the server is still reading the logdir

export async function render() {
  document.head.append(views.el('link', {rel: 'stylesheet', href: './vendor/uPlot.min.css'}),
                       views.el('link', {rel: 'stylesheet', href: './style.css'}));
  host.followTheme();
  const root = views.el('div', {className: 'tbkit'});
  document.body.append(root);
  const ui = views.buildLayout(root);
  // The iframe's own hash first (a bare plugin page link), then TensorBoard's deep link.
  const state = location.hash.length > 1 ? model.fromHash(location.hash) :
      (model.fromTensorBoardHash(host.tensorBoardHash()) || model.defaultState());
  const load = model.createLoader();
  let runsComplete = false;
  let seen = null;  // the "revision/complete" the table shows
  let baseline = null;  // the total when the user last set up the view: "+N new" counts from it
  let selected = null;  // {id, row} of the open detail
  let total = 0;
  let asking = 0;  // user-made requests in flight: a live refresh would overtake them
  let runs = {};  // run → tag → count, from /runs
  let superseded = {};
  let columns = [];  // the schema of the selection, from the last page
  let chartAnswers = [];  // the /chart answers the charts show (redrawn on a theme change)
  let extraTicket = 0;  // only the newest chart or group request is shown
  window.__tbkitCharts = [];  // test hook: what each chart drew (charts.drawChart)

  /** {runs, all}: the runs the view shows now (model.selectedRuns). */
  const selection = () => model.selectedRuns(state, Object.keys(runs));

  /**
   * Loads and shows the current page. `live`: a refresh because the data changed, in place
   * (no "loading…", scroll, sort and detail kept). `where`: a filter to try; it is applied only
   * if the server accepts it, else its error shows under the box and the rows stay.
   */
  async function refresh({live = false, where = null} = {}) {
    const wanted = where === null ? {...state} : {...state, where, offset: 0};
    const chosen = selection();
    if (!chosen.runs.length && runsComplete) {
      noRuns();
      return;
    }
    const asked = chosen.all ? null : chosen.runs;  // null: every run, new ones included
    if (!live) views.showStatus(ui, 'loading…');
    if (!live) asking += 1;
    let answer;
    try {
      answer = await load(wanted, asked);
    } finally {
      if (!live) asking -= 1;
    }
    if (answer === null) return;  // a newer request is on its way
    const whereError = answer.error && answer.error.parameter === 'where' ? answer.error : null;
    if (whereError && where !== null) {
      views.showWhereError(ui, whereError, wanted.where);  // keep the last good rows
      views.showStatus(ui, '');
      return;
    }
    if (state.follow && answer.records) {
      const last = model.lastPageOffset(answer.records.total, wanted.limit);
      if (last !== wanted.offset) {
        answer = await load({...wanted, offset: last}, asked);
        if (answer === null) return;
        wanted.offset = last;
      }
    }
    Object.assign(state, {where: wanted.where, offset: wanted.offset});
    saveHash();
    show(answer, {live, whereError, asked});
  }

  /** No run is checked, or the run filter matches none: say so instead of asking. */
  function noRuns() {
    saveHash();
    load.cancel();
    views.showTable(ui, [], [], state, {onSort: sortBy, onRow: openRow});
    views.showPager(ui, null);
    views.showStatus(ui, Object.keys(runs).length ?
        'no run selected: check a run, or change the run filter' : 'no tbkit records yet');
  }

  function show(answer, {live, whereError, asked}) {
    views.showDownloads(ui, model.exportUrl(state, asked, 'jsonl'),
                        model.exportUrl(state, asked, 'csv'));
    views.showFields(ui, answer.columns);
    columns = answer.columns;
    showExtra({live});
    if (!live || whereError) views.showWhereError(ui, whereError, state.where);
    views.showStatus(ui, answer.error && !whereError ? answer.error.error : '');
    const records = answer.records;
    const box = ui.tableBox;
    const [top, left] = [box.scrollTop, box.scrollLeft];
    const arranged = model.arrangeColumns(answer.columns, model.columnPrefs(state.tag));
    if (!ui.columnPanel.hidden) showColumnPanel(arranged);
    views.showTable(ui, arranged.filter((c) => !c.hidden), records ? records.rows : [], state,
                    {onSort: sortBy, onRow: openRow, ids: records ? records.ids : [],
                     selected: selected && selected.id});
    views.showPager(ui, records);
    total = records ? records.total : 0;
    if (!live || baseline === null) baseline = total;
    views.showFresh(ui, total - baseline);
    if (state.follow) {
      box.scrollTop = box.scrollHeight;
    } else if (live) {
      [box.scrollTop, box.scrollLeft] = [top, left];
    }
    if (records ? !records.complete : !runsComplete) {
      // The server answers from the records read so far: say so; the poll asks again.
      views.showStatus(ui, `loading… ${total} matching records read so far`);
    }
  }

  /** The charts or the grouped view of the selection, when shown (after each page load). */
  async function showExtra({live = false} = {}) {
    views.showView(ui, state);
    const ticket = ++extraTicket;
    const chosen = selection();
    const asked = chosen.all ? null : chosen.runs;
    if (state.view === 'charts') {
      const numeric = model.numericFields(columns);
      if (!state.fields.length && numeric.length) state.fields = [numeric.includes('loss') ? 'loss' : numeric[0]];
      views.showFieldPicker(ui, numeric, state.fields);
      const fields = state.fields.filter((name) => numeric.includes(name));
      try {
        const answers = await Promise.all(fields.map((f) => model.fetchChart(state, asked, f)));
        if (ticket !== extraTicket) return;
        chartAnswers = answers;
        drawCharts();
      } catch (error) {
        if (ticket === extraTicket) views.showStatus(ui, `could not load the chart: ${error.message}`);
      }
    } else if (state.view === 'groups') {
      views.showGroupChoices(ui, model.stringFields(columns), state.by);
      try {
        const answer = await model.fetchGroups(state, asked);
        if (ticket === extraTicket) views.showGroups(ui, answer);
      } catch (error) {
        if (ticket === extraTicket) {
          views.showGroups(ui, null);
          views.showStatus(ui, `could not group: ${error.message}`);
        }
      }
    }
    if (!live) saveHash();
  }

  function drawCharts() {
    const width = Math.max(320, ui.charts.clientWidth - 24);
    for (const chart of window.__tbkitCharts) chart.plot.destroy();
    window.__tbkitCharts = chartAnswers.map((answer) => charts.drawChart(answer, {
      x: state.x, log: state.log, smoothing: state.smoothing, utc: state.utc, width,
      onPoint: (hit) => openRow({run: hit.run, tag: hit.tag,
                                 step: state.x === 'step' ? hit.x : '…'}, hit.id),
    }));
    ui.charts.replaceChildren(...window.__tbkitCharts.map((chart) => chart.node));
    if (!chartAnswers.length) {
      ui.charts.append(views.el('div', {className: 'status'}, 'choose a numeric field to chart'));
    }
  }
  // The axes take their colours from the theme: redraw when TensorBoard's theme changes.
  new MutationObserver(() => { if (state.view === 'charts') drawCharts(); })
      .observe(document.body, {attributes: true, attributeFilter: ['class']});

  function changeExtra(change) {
    Object.assign(state, change);
    saveHash();
    showExtra();
  }

  async function loadRuns() {
    try {
      const answer = await model.fetchRuns();
      [runs, superseded, runsComplete] = [answer.runs, answer.superseded || {}, answer.complete];
      // A run not read yet may still come; once everything is read, an unknown run is gone.
      if (runsComplete && state.runs && state.runs.length) {
        const known = state.runs.filter((name) => name in runs);
        state.runs = known.length ? known : null;  // only unknown runs were named: show all
      }
      showRuns();
    } catch (error) {
      views.showStatus(ui, `could not load runs: ${error.message}`);
    }
  }

  /** The column chooser of the current tag; a change is kept in the browser and shown. */
  function showColumnPanel(arranged) {
    const tag = state.tag;
    const change = (prefs) => {
      model.saveColumnPrefs(tag, prefs);
      refresh({live: true});
    };
    views.showColumnPanel(ui, arranged, tag, {
      onShow: (name, shown) => {
        const prefs = model.columnPrefs(tag);
        const hidden = prefs.hidden.filter((n) => n !== name);
        change({...prefs, hidden: shown ? hidden : [...hidden, name]});
      },
      onMove: (name, delta) => change(model.moveColumn(model.columnPrefs(tag), columns, name, delta)),
      onReset: () => change({order: [], hidden: []}),
    });
  }

  function showRuns() {
    views.showTags(ui, model.tagsOf(runs, selection().runs), state.tag);
    views.showRuns(ui, runs, superseded, {shown: new Set(selection().runs),
                                          pattern: model.runPattern(state.runRegex),
                                          allChecked: state.runs === null});
  }

  /** Checks or unchecks runs; checking every run again means "all" (new runs included). */
  function checkRuns(names, on) {
    const every = Object.keys(runs);
    let checked = new Set(state.runs || every);
    for (const name of names) {
      if (on) checked.add(name); else checked.delete(name);
    }
    checked = every.filter((name) => checked.has(name));
    state.runs = checked.length === every.length ? null : checked;
    showRuns();
    update({});
  }

  // Live: poll the server's revision (a counter; nothing is queried when it has not moved),
  // on a timer while the page is visible, and whenever TensorBoard reloads.
  let pollTimer = 0;
  let polling = false;
  async function poll() {
    clearTimeout(pollTimer);
    if (document.visibilityState === 'hidden') return;  // visibilitychange restarts it
    if (!polling) {
      polling = true;
      try {
        const {revision, complete} = await model.fetchRevision();
        const now = `${revision}/${complete}`;
        if (now !== seen && !asking) {  // (while the user's request runs, the next tick)
          seen = now;
          await loadRuns();
          await refresh({live: true});
        }
      } catch (error) {
        // The server is restarting or gone: keep what is shown, try again on the next tick.
      } finally {
        polling = false;
      }
    }
    pollTimer = setTimeout(poll, runsComplete ? LIVE_POLL_MS : LOADING_POLL_MS);
  }
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') poll();
  });
  host.onTensorBoardReload(poll);

  function saveHash() {
    // Not `location.hash = …`: that adds a history entry per keystroke. replaceState needs an
    // absolute URL here, since a relative one would resolve against the <base>.
    const url = new URL(location.href);
    url.hash = model.toHash(state);
    history.replaceState(null, '', url.href);
    host.setTensorBoardHash(model.toTensorBoardHash(state));
  }

  /** Applies a change to the filters: back to the first page, then reload. */
  function update(change) {
    Object.assign(state, change, {offset: 0});
    closeDetail();
    refresh();
  }

  function sortBy(name) {
    if (state.follow) setFollow(false);
    const order = state.sort === name && state.order === 'asc' ? 'desc' : 'asc';
    update({sort: name, order});
  }

  async function openRow(row, id) {
    selected = {id, row, record: null};
    views.showDetail(ui, {row, utc: state.utc}, {onClose: () => { selected = null; }});
    try {
      const record = await model.fetchRecord(id);
      if (!selected || selected.id !== id) return;  // another row was opened meanwhile
      selected.record = record;
      showSelected();
    } catch (error) {
      if (selected && selected.id === id) {
        views.showDetail(ui, {row, error: `could not load the record: ${error.message}`});
      }
    }
  }

  function showSelected() {
    if (!selected) return;
    views.showDetail(ui, {row: selected.row, record: selected.record, utc: state.utc},
                     {onClose: () => { selected = null; }});
  }

  function closeDetail() {
    selected = null;
    views.showDetail(ui, null);
  }

  /** Follow: sorted by wall_time, oldest first, the last page scrolled to the bottom, like
   * `tail -f`. Paging back, scrolling up or sorting by something else leaves it. */
  function setFollow(on) {
    state.follow = on;
    ui.follow.setAttribute('aria-pressed', String(on));
    if (on) {
      Object.assign(state, {sort: 'wall_time', order: 'asc'});
      baseline = total;
      refresh({live: true});
    } else {
      saveHash();
    }
  }

  function onTyping(input, apply) {
    let timer = 0;
    input.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(apply, TYPING_DELAY_MS);
    });
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        clearTimeout(timer);
        apply();
      }
    });
  }

  ui.runList.addEventListener('change', (event) => {
    const name = event.target.dataset.run;
    if (name !== undefined) checkRuns([name], event.target.checked);
  });
  ui.allRuns.addEventListener('change', () => {
    if (ui.allRuns.checked) {
      state.runs = null;
      showRuns();
      update({});
    } else {
      checkRuns(Object.keys(runs), false);
    }
  });
  onTyping(ui.runFilter, () => {
    state.runRegex = ui.runFilter.value;
    showRuns();
    update({});
  });
  for (const chip of ui.chips) {
    chip.addEventListener('click', () => {
      const level = chip.dataset.level;
      const levels = state.levels.includes(level) ?
        state.levels.filter((l) => l !== level) : [...state.levels, level];
      chip.setAttribute('aria-pressed', String(levels.includes(level)));
      update({levels: model.LEVELS.filter((l) => levels.includes(l))});
    });
  }
  onTyping(ui.stepMin, () => update({stepMin: ui.stepMin.value}));
  onTyping(ui.stepMax, () => update({stepMax: ui.stepMax.value}));
  onTyping(ui.search, () => update({search: ui.search.value}));
  // The filter applies only when the server accepts it: a half-typed one shows its error under
  // the box and leaves the table as it was.
  onTyping(ui.where, () => {
    if (ui.where.value === state.where) {
      views.showWhereError(ui, null, state.where);
      return;
    }
    closeDetail();
    refresh({where: ui.where.value});
  });
  ui.limit.addEventListener('change', () => update({limit: Number(ui.limit.value)}));
  ui.prev.addEventListener('click', () => {
    if (state.follow) setFollow(false);
    state.offset = Math.max(0, state.offset - state.limit);
    refresh();
  });
  ui.next.addEventListener('click', () => {
    state.offset += state.limit;
    refresh();
  });
  ui.follow.addEventListener('click', () => setFollow(!state.follow));
  ui.fresh.addEventListener('click', () => setFollow(true));
  ui.tableBox.addEventListener('wheel', (event) => {
    if (state.follow && event.deltaY < 0) setFollow(false);  // scrolling up leaves follow
  }, {passive: true});
  ui.utc.addEventListener('click', () => {
    state.utc = !state.utc;
    ui.utc.setAttribute('aria-pressed', String(state.utc));
    showSelected();
    refresh({live: true});
  });
  ui.copy.addEventListener('click', async () => {
    saveHash();
    const link = host.tensorBoardUrl(model.toTensorBoardHash(state));
    ui.link.value = link;
    ui.link.hidden = false;
    ui.link.select();
    try {
      await navigator.clipboard.writeText(link);
      ui.copy.textContent = 'link copied';
    } catch (error) {  // an iframe may not be allowed the clipboard: the link is selected
      ui.copy.textContent = 'copy the link →';
    }
  });

  for (const tab of ui.views) {
    tab.addEventListener('click', () => changeExtra({view: tab.dataset.view}));
  }
  ui.fieldPicker.addEventListener('change', (event) => {
    const name = event.target.dataset.field;
    if (name === undefined) return;
    const fields = state.fields.filter((f) => f !== name);
    changeExtra({fields: event.target.checked ? [...fields, name] : fields});
  });
  ui.tag.addEventListener('change', () => {
    if (state.sort && !model.BUILTIN_COLUMNS.includes(state.sort)) state.sort = '';  // may not be a column of it
    update({tag: ui.tag.value});
  });
  ui.columnsButton.addEventListener('click', () => {
    const open = ui.columnPanel.hidden;
    ui.columnPanel.hidden = !open;
    ui.columnsButton.setAttribute('aria-expanded', String(open));
    if (open) showColumnPanel(model.arrangeColumns(columns, model.columnPrefs(state.tag)));
  });
  ui.xAxis.addEventListener('change', () => changeExtra({x: ui.xAxis.value}));
  ui.log.addEventListener('click', () => {
    state.log = !state.log;
    saveHash();
    views.showView(ui, state);
    drawCharts();  // the same data, another scale
  });
  ui.smoothing.addEventListener('input', () => {
    state.smoothing = Number(ui.smoothing.value);
    saveHash();
    views.showView(ui, state);
    drawCharts();
  });
  ui.by.addEventListener('change', () => changeExtra({by: ui.by.value}));

  try {
    const {revision, complete} = await model.fetchRevision();
    seen = `${revision}/${complete}`;
  } catch (error) {
    seen = null;
  }
  await loadRuns();
  views.showControls(ui, state);
  await refresh();
  pollTimer = setTimeout(poll, runsComplete ? LIVE_POLL_MS : LOADING_POLL_MS);
}
