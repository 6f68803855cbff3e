// The admin page: every action needs the PIN `lugha serve` read from --pin-file or $LUGHA_SERVE_PIN (checked by the server).
const $ = (s) => document.querySelector(s);
let csrf = null;

async function adminPost(path, body) {
  if (!csrf) csrf = (await (await fetch('/api/config', { cache: 'no-store' })).json()).csrf;
  const headers = { 'X-CSRF-Token': csrf, 'X-Lugha-Pin': $('#pin').value };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, { method: 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body) });
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

// Review: each judgment that export would turn into training data, with its photo, approved or rejected.
function reviewItem(row) {
  const li = document.createElement('li');
  li.className = 'card';
  const said = row.better_caption ? `better caption: “${row.better_caption}”` : `judged correct: “${row.result}”`;
  const asked = row.mode === 'text' ? `text “${row.query_text}” → ${row.result}` : `photo → ${row.result}`;
  const p = Object.assign(document.createElement('p'), { textContent: `#${row.id} [${row.lang}] ${asked}; ${said}` });
  li.append(p);
  if (row.query_image) {
    const img = Object.assign(document.createElement('img'), { alt: 'the tester\'s photo', className: 'thumb' });
    adminPost(`/api/admin/photo/${row.query_image}`).then((r) => r.blob())
      .then((b) => { img.src = URL.createObjectURL(b); }).catch(() => { img.alt = 'photo not available'; });
    li.append(img);
  }
  for (const [label, approve] of [['Approve', true], ['Reject', false]]) {
    const btn = Object.assign(document.createElement('button'), { type: 'button', textContent: label });
    btn.addEventListener('click', async () => {
      try {
        await adminPost('/api/admin/review', { ids: [row.id], approve });
        li.remove();
      } catch (err) { $('#review-status').textContent = err.message; }
    });
    li.append(btn);
  }
  return li;
}

$('#review-load').addEventListener('click', async () => {
  try {
    const data = await (await adminPost('/api/admin/review-queue')).json();
    $('#review-status').textContent = `${data.to_review} judgments wait for review` +
      (data.rows.length < data.to_review ? ` (the oldest ${data.rows.length} shown)` : '');
    $('#review-list').replaceChildren(...data.rows.map(reviewItem));
  } catch (err) { $('#review-status').textContent = err.message; }
});
