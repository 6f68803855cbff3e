// The admin page: every action needs the PIN `lugha serve` read from --pin-file or $LUGHA_SERVE_PIN (checked by the server).
const $ = (s) => document.querySelector(s);
let csrf = null;

async function adminPost(path) {
  if (!csrf) csrf = (await (await fetch('/api/config', { cache: 'no-store' })).json()).csrf;
  const resp = await fetch(path, { method: 'POST', headers: { 'X-CSRF-Token': csrf, 'X-Lugha-Pin': $('#pin').value } });
  if (!resp.ok) throw new Error((await resp.json().catch(() => ({}))).error || `HTTP ${resp.status}`);
  return resp;
}

function table(rows, cols) {
  const t = document.createElement('table');
  t.className = 'report';
  t.append(...[cols, ...rows.map((r) => cols.map((c) => (r[c] === null || r[c] === undefined ? '' : String(r[c]))))]
    .map((cells, i) => {
      const tr = document.createElement('tr');
      tr.append(...cells.map((c) => Object.assign(document.createElement(i ? 'td' : 'th'), { textContent: c })));
      return tr;
    }));
  return t;
}

$('#pin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    const data = await (await adminPost('/api/admin/stats')).json();
    const c = data.counts;
    $('#status').textContent = `${c.feedback} judgments, ${c.consents} testers, ${c.uploads} photos` +
      (data.report.metrics_from ? ` (automatic metric: ${data.report.metrics_from})` : '');
    $('#report').replaceChildren(table(data.report.rows, ['lang', 'mode', 'testers', 'judgments', 'human_top1', 'auto_metric', 'auto', 'gap', 'appropriate', 'better_captions']));
  } catch (err) { $('#status').textContent = err.message; }
});

$('#download').addEventListener('click', async () => {
  try {
    const blob = await (await adminPost('/api/admin/feedback.jsonl')).blob();
    const a = Object.assign(document.createElement('a'), { href: URL.createObjectURL(blob), download: 'feedback.jsonl' });
    document.body.append(a); a.click(); a.remove();
  } catch (err) { $('#status').textContent = err.message; }
});
