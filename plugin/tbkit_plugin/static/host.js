// tbkit plugin frontend: what the page learns from, and tells, the TensorBoard around it.
// TensorBoard 2.21 loads the tab as an iframe (/data/plugin_entry.html?name=tbkit) of the same
// origin, so the iframe may read the parent's body class (theme) and location (deep links).
// Its reload (the button, and every auto-reload) reaches iframe plugins only through
// TensorBoard's plugin API: a MessageChannel handed over with an "experimental.bootstrap"
// message, on which TensorBoard broadcasts "experimental.DataReloaded".

/** The parent TensorBoard window when it is reachable (same origin), else null. */
function tensorBoardWindow() {
  try {
    if (window.parent === window) return null;
    void window.parent.document.body;  // throws across origins
    return window.parent;
  } catch (error) {
    return null;
  }
}

/**
 * Calls onReload() whenever TensorBoard reloads its data (its reload button or auto-reload).
 * Returns false when there is no TensorBoard around the page (the bare plugin page).
 */
export function onTensorBoardReload(onReload) {
  if (window.parent === window) return false;
  const channel = new MessageChannel();
  channel.port1.addEventListener('message', (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    if (!message || message.isReply) return;
    if (message.type === 'experimental.DataReloaded') onReload();
    // TensorBoard waits on a reply to each message it sends.
    channel.port1.postMessage(JSON.stringify(
        {type: message.type, id: message.id, payload: null, error: null, isReply: true}));
  });
  channel.port1.start();
  window.parent.postMessage('experimental.bootstrap', location.origin, [channel.port2]);
  return true;
}

/**
 * Keeps `dark` on this page's body while TensorBoard's body has `dark-mode` (what its theme
 * menu toggles, "Browser default" included), live. Without a reachable TensorBoard, follows
 * the browser's prefers-color-scheme.
 */
export function followTheme() {
  const parent = tensorBoardWindow();
  if (parent) {
    const body = parent.document.body;
    const apply = () => document.body.classList.toggle('dark', body.classList.contains('dark-mode'));
    new MutationObserver(apply).observe(body, {attributes: true, attributeFilter: ['class']});
    apply();
    return;
  }
  const query = window.matchMedia('(prefers-color-scheme: dark)');
  const apply = () => document.body.classList.toggle('dark', query.matches);
  query.addEventListener('change', apply);
  apply();
}

/** TensorBoard's location hash (`#tbkit&p.tbkit.…`), or '' without a reachable TensorBoard. */
export function tensorBoardHash() {
  const parent = tensorBoardWindow();
  return parent ? parent.location.hash : '';
}

/**
 * Puts `hash` in TensorBoard's address bar while the tbkit tab is the one shown, so that the
 * browser's own URL is a deep link too. replaceState: no history entry, no hashchange event.
 */
export function setTensorBoardHash(hash) {
  const parent = tensorBoardWindow();
  if (!parent || !/^#tbkit(&|$)/.test(parent.location.hash)) return;
  const url = new URL(parent.location.href);
  url.hash = hash;
  parent.history.replaceState(parent.history.state, '', url.href);
}

/**
 * The URL of TensorBoard itself with `hash`: the parent's address when reachable; from the bare
 * plugin page (…/data/plugin_entry.html), TensorBoard's root beside its data/ folder.
 */
export function tensorBoardUrl(hash) {
  const parent = tensorBoardWindow();
  const url = new URL(parent ? parent.location.href : location.href);
  if (!parent) {
    url.pathname = url.pathname.replace(/data\/plugin_entry\.html$/, '');
    url.search = '';
  }
  url.hash = hash;
  return url.href;
}
