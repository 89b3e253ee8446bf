// tbkit plugin frontend: a placeholder until the table UI lands (issue 3, frontend slice).
// Loaded by TensorBoard as an ES module inside an iframe under /data/plugin/tbkit/; every URL
// is relative. Record content reaches the page only through textContent.

export async function render() {
  const status = document.createElement('p');
  document.body.appendChild(status);
  try {
    const response = await fetch('./runs');
    const {runs} = await response.json();
    const counts = Object.values(runs).flatMap((tags) => Object.values(tags));
    const total = counts.reduce((a, b) => a + b, 0);
    status.textContent = `tbkit: ${total} records in ${Object.keys(runs).length} runs.`;
  } catch (error) {
    status.textContent = `tbkit: could not load runs (${error}).`;
  }
}
