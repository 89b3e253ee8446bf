// tbkit plugin frontend: every tbkit record as a table (issue 3). TensorBoard loads this ES
// module in an iframe whose <base> is /data/plugin/tbkit/ and calls render(). model.js holds
// state and requests, views.js the DOM; this file wires them. The view state lives in the
// iframe page's location hash, so a copied link reopens the same view.

import * as model from './model.js';
import * as views from './views.js';

const TYPING_DELAY_MS = 300;
const LOADING_POLL_MS = 1000;  // while the server is still reading the logdir

export async function render() {
  document.head.append(views.el('link', {rel: 'stylesheet', href: './style.css'}));
  const root = views.el('div', {className: 'tbkit'});
  document.body.append(root);
  const ui = views.buildLayout(root);
  const state = model.fromHash(location.hash);
  const load = model.createLoader();
  let pollTimer = 0;
  let runsComplete = false;

  async function refresh() {
    clearTimeout(pollTimer);
    saveHash();
    views.showDownloads(ui, model.exportUrl(state, 'jsonl'), model.exportUrl(state, 'csv'));
    views.showStatus(ui, 'loading…');
    const answer = await load(state);
    if (answer === null) return;  // a newer request is on its way
    views.showFields(ui, answer.columns);
    const whereError = answer.error && answer.error.parameter === 'where' ? answer.error : null;
    views.showWhereError(ui, whereError, state.where);
    views.showStatus(ui, answer.error && !whereError ? answer.error.error : '');
    const rows = answer.records ? answer.records.rows : [];
    views.showTable(ui, answer.columns, rows, state, {onSort: sortBy, onRow: openRow});
    views.showPager(ui, answer.records);
    const loading = answer.records ? !answer.records.complete : !runsComplete;
    if (loading) {
      // The server answers from the records read so far: say so, and ask again shortly.
      const total = answer.records ? answer.records.total : 0;
      views.showStatus(ui, `loading… ${total} matching records read so far`);
      pollTimer = setTimeout(async () => {
        await loadRuns();
        refresh();
      }, LOADING_POLL_MS);
    } else if (!runsComplete) {
      loadRuns();  // everything is read now: the run selector's counts are final too
    }
  }

  async function loadRuns() {
    try {
      const {runs, superseded, complete} = await model.fetchRuns();
      runsComplete = complete;
      views.showRuns(ui, runs, superseded || {});
      // A run not read yet may still come; once everything is read, an unknown run is gone.
      if (complete && state.run && !(state.run in runs)) state.run = '';
      ui.run.value = state.run;
    } catch (error) {
      views.showStatus(ui, `could not load runs: ${error.message}`);
    }
  }

  function saveHash() {
    // Not `location.hash = …`: that adds a history entry per keystroke. replaceState needs an
    // absolute URL here, since a relative one would resolve against the <base>.
    const url = new URL(location.href);
    url.hash = model.toHash(state);
    history.replaceState(null, '', url.href);
  }

  /** Applies a change to the filters: back to the first page, then reload. */
  function update(change) {
    Object.assign(state, change, {offset: 0});
    views.showDetail(ui, null);
    refresh();
  }

  function sortBy(name) {
    const order = state.sort === name && state.order === 'asc' ? 'desc' : 'asc';
    update({sort: name, order});
  }

  function openRow(row) {
    views.showDetail(ui, row);
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

  ui.run.addEventListener('change', () => update({run: ui.run.value}));
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
  onTyping(ui.where, () => update({where: ui.where.value}));
  ui.limit.addEventListener('change', () => update({limit: Number(ui.limit.value)}));
  ui.prev.addEventListener('click', () => {
    state.offset = Math.max(0, state.offset - state.limit);
    refresh();
  });
  ui.next.addEventListener('click', () => {
    state.offset += state.limit;
    refresh();
  });
  ui.copy.addEventListener('click', async () => {
    saveHash();
    ui.link.value = location.href;
    ui.link.hidden = false;
    ui.link.select();
    try {
      await navigator.clipboard.writeText(location.href);
      ui.copy.textContent = 'link copied';
    } catch (error) {  // an iframe may not be allowed the clipboard: the link is selected
      ui.copy.textContent = 'copy the link →';
    }
  });

  await loadRuns();
  views.showControls(ui, state);
  await refresh();
}
