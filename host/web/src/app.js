// The built-in dashboard: live charts over history, running totals, a SQL
// console, plugin upload, deploy and the deployments view. The
// subscription lives in a Web Worker (worker.js); this thread draws, at most
// once per animation frame.
//
// Stable hooks for browser tests:
//   #status                  "connecting", "live", "reconnecting" or "error" (data-state too)
//   #conn                    reconnects and resumes (data-reconnects, data-resumes)
//   section[data-kind=global] the running totals; tr[data-key] per group, key
//                            columns as "col=value,col=value"; [data-value], [data-pct]
//   #chart                   data-panes: JSON [{start, total, source, final}] as drawn;
//                            data-seam, data-complete
//   #sql-result, #sql-error, #sql-chart   the SQL console's table, error and chart
//   #upload-result, #upload-error, #deploy-error, tr[data-deployment] (.rate, .lag, .dead),
//   #partitions tr[data-partition], #dead-letters tr[data-reason]
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api, query, sqlString } from '../assets/wagg.js';

const $ = (sel) => document.querySelector(sel);
const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const pctFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, minimumFractionDigits: 1 });
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const COLORS = ['#3d6df2', '#e8590c', '#2f9e44', '#ae3ec9', '#f08c00', '#1098ad', '#d6336c', '#5c940d', '#7048e8', '#868e96'];
// The subscription's pace: the page draws at most this often when data
// changes (the hub coalesces in between).
const INTERVAL_MS = 200;

// The token comes in the URL fragment (#token=...), which browsers never
// send to a server, so it stays out of access logs. It is kept for this tab
// only and removed from the address bar.
function takeToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem('wagg-token', decodeURIComponent(m[1]));
    const u = new URL(location.href);
    u.hash = '';
    history.replaceState(null, '', u);
  }
  return sessionStorage.getItem('wagg-token') || '';
}
const token = takeToken();
const call = (path, o = {}) => api(path, Object.assign({ token }, o));

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...kids.filter((k) => k !== null && k !== undefined));
  return e;
}

function setParam(k, v) {
  const u = new URL(location.href);
  if (v) u.searchParams.set(k, v);
  else u.searchParams.delete(k);
  history.replaceState(null, '', u);
}

function showError(sel, e) {
  const box = $(sel);
  if (!e) {
    box.hidden = true;
    box.textContent = '';
    return;
  }
  box.hidden = false;
  // The API's message, verbatim: it says what to fix.
  box.textContent = e.code ? `${e.code}: ${e.message}` : String(e.message || e);
}

// ---- tabs ----

function tab(name) {
  for (const b of document.querySelectorAll('nav button[data-tab]')) b.setAttribute('aria-selected', String(b.dataset.tab === name));
  for (const s of document.querySelectorAll('.tab')) s.hidden = s.id !== 'tab-' + name;
  setParam('tab', name === 'live' ? '' : name);
  if (name === 'deployments') loadDeployments();
  if (name === 'plugins') loadPlugins();
  if (name === 'sql') loadExamples();
}

// ---- deployments (shared by every tab) ----

let deployments = [];

async function fetchDeployments() {
  try {
    const list = await call('/v1/deployments');
    deployments = Array.isArray(list) ? list.filter((d) => d && typeof d.name === 'string') : [];
  } catch (e) {
    deployments = [];
    throw e;
  }
  const dl = $('#deployment-names');
  dl.replaceChildren(...deployments.map((d) => el('option', { value: d.name })));
  return deployments;
}

// ---- live ----

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
let following = null;
let chart = null;
let chartKey = '';
let pending = false;
let wanted = false;

worker.onmessage = (ev) => {
  const m = ev.data;
  if (m.type === 'dirty') {
    wanted = true;
    schedule();
  } else if (m.type === 'view') {
    pending = false;
    render(m);
  }
};

// schedule asks the worker for a view at the next animation frame, once.
function schedule() {
  if (pending || !wanted) return;
  pending = true;
  requestAnimationFrame(() => {
    wanted = false;
    worker.postMessage({ type: 'view', filter: $('#totals-filter').value, metric: $('#metric').value, limit: 50 });
  });
}

function chartOptions() {
  const filter = {};
  for (const t of $('#chart-filter').value.split(/[\s,]+/).filter(Boolean)) {
    const i = t.indexOf('=');
    if (i > 0) (filter[t.slice(0, i)] = filter[t.slice(0, i)] || []).push(t.slice(i + 1));
  }
  return {
    window: $('#window').value,
    metric: $('#metric').value,
    rangeMs: Math.max(1, Number($('#range').value) || 5) * 60_000,
    top: Math.max(0, Math.min(10, Number($('#top').value) || 0)),
    filter: Object.keys(filter).length ? filter : undefined,
  };
}

function follow(name) {
  following = name;
  $('#aggregator').value = name;
  setParam('aggregator', name);
  document.title = name + ' · wagg';
  const d = deployments.find((d) => d.name === name);
  $('#window').replaceChildren();
  $('#metric').replaceChildren();
  chartKey = '';
  worker.postMessage(Object.assign({
    type: 'follow', aggregator: name, token, base: location.href, table: d ? d.table : '', intervalMs: INTERVAL_MS, panes: 2,
  }, chartOptions()));
}

function setStatus(v) {
  const st = $('#status');
  st.textContent = v.status;
  st.dataset.state = v.status;
  st.title = v.detail || '';
  $('#detail').textContent = v.status === 'live' ? '' : v.detail || '';
  const conn = $('#conn');
  conn.dataset.reconnects = String(v.reconnects || 0);
  conn.dataset.resumes = String(v.resumes || 0);
  conn.textContent = v.reconnects ? `reconnected ${v.reconnects}× · resumed ${v.resumes}×` : '';
}

function fillSelect(sel, items, pick) {
  const s = $(sel);
  const names = items.map((i) => i.name);
  if ([...s.options].map((o) => o.value).join() === names.join()) return;
  const keep = s.value;
  s.replaceChildren(...items.map((i) => el('option', { value: i.name, textContent: i.name })));
  s.value = names.includes(keep) ? keep : pick(items) || '';
}

function render(v) {
  setStatus(v);
  if (!v.live) return;
  $('#seq').textContent = `epoch ${v.epoch} · seq ${v.seq}`;
  const windowed = v.windows.filter((w) => w.kind !== 'global');
  fillSelect('#window', windowed, (ws) => ws[0] && ws[0].name);
  fillSelect('#metric', v.metrics, (ms) => ms[0] && ms[0].name);
  $('#chart-card').hidden = windowed.length === 0;
  const opts = chartOptions();
  const key = JSON.stringify(opts);
  if (windowed.length && key !== chartKey) {
    chartKey = key;
    worker.postMessage(Object.assign({ type: 'chart' }, opts));
  }
  drawTotals(v);
  if (v.series && v.series.window === opts.window) drawChart(v.series);
}

function keyLabel(key, cols) {
  return cols.map((c) => `${c.name}=${key[c.name]}`).join(',');
}

let shownValues = new Map(); // key label -> the value drawn last frame

function drawTotals(v) {
  const t = v.totals;
  const s = $('#totals');
  s.hidden = !t;
  if (!t) return;
  s.dataset.window = t.window;
  $('#totals-title').textContent = t.window;
  $('#totals-sub').textContent = `running totals · ${fmt.format(t.sum)} ${t.metric} over ${fmt.format(t.groups)} groups`;
  const cols = v.keys;
  const head = $('#totals-table thead');
  const want = ['#', ...cols.map((c) => c.name), t.metric, '%', ''].join('|');
  if (head.dataset.cols !== want) {
    head.dataset.cols = want;
    head.replaceChildren(el('tr', {}, ...want.split('|').map((h) => el('th', { textContent: h }))));
  }
  // Rows are drawn anew each frame (50 of them); a value that changed since
  // the last frame is highlighted.
  const body = $('#totals-table tbody');
  const max = t.rows.reduce((a, r) => Math.max(a, Math.abs(r.value)), 0) || 1;
  const seen = new Map();
  const rows = t.rows.map((r, i) => {
    const k = keyLabel(r.key, cols);
    const before = shownValues.get(k);
    seen.set(k, r.value);
    const bar = el('i');
    bar.style.width = `${(100 * Math.abs(r.value)) / max}%`;
    return el('tr', { 'data-key': k, class: (r.final ? 'final' : '') + (before !== undefined && before !== r.value ? ' bump' : '') },
      el('td', { class: 'rank', textContent: String(i + 1) }),
      ...cols.map((c) => el('td', { class: 'key', textContent: String(r.key[c.name]) })),
      el('td', { class: 'value', 'data-value': String(r.value), textContent: fmt.format(r.value) }),
      el('td', { class: 'pct', 'data-pct': String(r.pct), textContent: pctFmt.format(r.pct) + ' %' }),
      el('td', { class: 'barcell' }, el('span', { class: 'bar' }, bar)));
  });
  shownValues = seen;
  body.replaceChildren(...rows);
  $('#totals-empty').hidden = rows.length > 0;
}

// seamPlugin draws the seam: history left of it, live right of it.
function seamPlugin(getSeam) {
  return {
    hooks: {
      draw: (u) => {
        const s = getSeam();
        if (s === null || !Number.isFinite(s)) return;
        const x = u.valToPos(s / 1000, 'x', true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
        const c = u.ctx;
        c.save();
        c.strokeStyle = '#999';
        c.setLineDash([4, 4]);
        c.beginPath();
        c.moveTo(x, u.bbox.top);
        c.lineTo(x, u.bbox.top + u.bbox.height);
        c.stroke();
        c.restore();
      },
    },
  };
}

let seam = null;

function drawChart(s) {
  const box = $('#chart');
  box.dataset.panes = JSON.stringify(s.panes);
  box.dataset.seam = String(s.seam);
  box.dataset.complete = String(s.complete);
  const first = s.sources.indexOf('live');
  $('#seam').textContent = s.error
    ? `history: ${s.error}`
    : `${s.sources.length} panes · ${first < 0 ? s.sources.length : first} from ClickHouse${s.complete ? '' : ' (still arriving)'}, ` +
      `${first < 0 ? 0 : s.sources.length - first} live` + (Number.isFinite(s.seam) && s.seam !== null ? ` · seam ${timeFmt.format(s.seam)}` : '');
  seam = s.seam;
  const labels = s.labels.join('|');
  if (!chart || chart._labels !== labels) {
    if (chart) chart.destroy();
    const width = Math.max(300, box.clientWidth || 800);
    chart = new uPlot({
      width, height: 300,
      plugins: [seamPlugin(() => seam)],
      scales: { x: { time: true } },
      axes: [{}, { size: 60 }],
      series: [{}, ...s.labels.map((l, i) => ({ label: l, stroke: COLORS[i % COLORS.length], width: i === 0 ? 2 : 1.5, spanGaps: false }))],
    }, s.data, box);
    chart._labels = labels;
  } else {
    chart.setData(s.data);
  }
}

new ResizeObserver(() => {
  if (chart) chart.setSize({ width: Math.max(300, $('#chart').clientWidth), height: 300 });
}).observe(document.body);

// ---- SQL console ----

let sqlChart = null;

function examples() {
  const out = [];
  for (const d of deployments) {
    const t = d.table;
    const windowed = (d.windows || []).find((w) => w.kind !== 'global');
    const global = (d.windows || []).find((w) => w.kind === 'global');
    if (global) out.push([`${d.name}: running totals`, `SELECT *\nFROM ${t}\nWHERE window_name = ${sqlString(global.name)}\nLIMIT 20`]);
    if (windowed) {
      out.push([`${d.name}: panes of the last 5 minutes`, `SELECT window_start, count() AS groups\nFROM ${t}\nWHERE window_name = ${sqlString(windowed.name)} AND window_start > now() - 300\nGROUP BY window_start\nORDER BY window_start`]);
    }
    out.push([`${d.name}: where each partition stands`, `SELECT source_partition, next_offset, watermark, written_at\nFROM ${t.split('.')[0]}._wagg_checkpoints FINAL\nWHERE deployment = ${sqlString(d.name)}\nORDER BY source_partition`]);
  }
  return out;
}

async function loadExamples() {
  try {
    await fetchDeployments();
  } catch (e) {
    /* no list: no examples */
  }
  const sel = $('#examples');
  sel.replaceChildren(el('option', { value: '', textContent: 'example queries…' }), ...examples().map(([label, sql]) => el('option', { value: sql, textContent: label })));
}

async function runSQL() {
  const sql = $('#sql').value.trim();
  if (!sql) return;
  showError('#sql-error', null);
  $('#sql-meta').textContent = 'running…';
  const table = $('#sql-result');
  try {
    const r = await query(sql, { token });
    $('#sql-meta').textContent = `${r.rows.length} rows${r.truncated ? ' (truncated)' : ''} · ${r.elapsed_ms} ms`;
    table.querySelector('thead').replaceChildren(el('tr', {}, ...r.columns.map((c) => el('th', { textContent: c.name, title: c.type }))));
    table.querySelector('tbody').replaceChildren(...r.rows.slice(0, 1000).map((row) => el('tr', {}, ...row.map((v) => el('td', { textContent: v === null ? 'NULL' : String(v) })))));
    table.hidden = false;
    drawResultChart(r);
  } catch (e) {
    $('#sql-meta').textContent = '';
    table.hidden = true;
    if (sqlChart) sqlChart.destroy();
    sqlChart = null;
    $('#sql-chart').hidden = true;
    showError('#sql-error', e);
  }
}

// drawResultChart draws a line per numeric column over the first column
// when that is a time or a number, and bars of the numeric columns per row
// (up to 100) when it is text (votes per option); otherwise no chart.
function drawResultChart(r) {
  const box = $('#sql-chart');
  if (sqlChart) sqlChart.destroy();
  sqlChart = null;
  box.hidden = true;
  delete box.dataset.kind;
  if (r.columns.length < 2 || r.rows.length < 1) return;
  const t0 = r.columns[0].type;
  const isTime = /^(Nullable\()?Date/.test(t0);
  const isNum = /^(Nullable\()?(U?Int|Float|Decimal)/;
  const ys = r.columns.map((c, i) => [c, i]).slice(1).filter(([c]) => isNum.test(c.type));
  if (!ys.length) return;
  // Shown before it is measured: a hidden box has no width.
  const width = () => {
    box.hidden = false;
    return Math.max(300, box.clientWidth || 800);
  };
  if (!isTime && !isNum.test(t0)) {
    const rows = r.rows.slice(0, 100);
    const labels = rows.map((row) => String(row[0]));
    const data = [rows.map((_, i) => i), ...ys.map(([, i]) => rows.map((row) => (row[i] === null ? null : Number(row[i]))))];
    const bars = uPlot.paths.bars({ size: [0.8 / ys.length, 60], align: 0 });
    box.dataset.kind = 'bars';
    sqlChart = new uPlot({
      width: width(), height: 260,
      scales: { x: { time: false, range: [-0.5, rows.length - 0.5] } },
      axes: [{ values: (u, splits) => splits.map((i) => (Number.isInteger(i) && labels[i] !== undefined ? labels[i] : '')) }, {}],
      series: [{ label: r.columns[0].name, value: (u, i) => (i === null ? '' : labels[i]) },
        ...ys.map(([c], j) => ({ label: c.name, fill: COLORS[j % COLORS.length], stroke: COLORS[j % COLORS.length], paths: bars, points: { show: false } }))],
    }, data, box);
    return;
  }
  if (r.rows.length < 2) return;
  const rows = r.rows.map((row) => [isTime ? Date.parse(row[0]) / 1000 : Number(row[0]), ...ys.map(([, i]) => (row[i] === null ? null : Number(row[i])))]);
  rows.sort((a, b) => a[0] - b[0]);
  const data = [rows.map((r) => r[0]), ...ys.map((_, j) => rows.map((r) => r[j + 1]))];
  box.dataset.kind = 'lines';
  sqlChart = new uPlot({
    width: width(), height: 260,
    scales: { x: { time: isTime } },
    series: [{ label: r.columns[0].name }, ...ys.map(([c], j) => ({ label: c.name, stroke: COLORS[j % COLORS.length] }))],
  }, data, box);
}

// ---- plugins and deploy ----

function schemaTable(m) {
  const s = m.schema || {};
  const rows = [
    ...(s.input || []).map((f) => ['input', f.name, f.type]),
    ...(s.keys || []).map((k) => ['key', k.name, k.type]),
    ...(s.metrics || []).map((x) => ['metric', x.name, `${x.kind} (${x.type})`]),
  ];
  if (s.raw) rows.push(['input', '(raw record bytes)', 'bytes']);
  return el('table', { class: 'grid' },
    el('thead', {}, el('tr', {}, el('th', { textContent: 'role' }), el('th', { textContent: 'name' }), el('th', { textContent: 'type' }))),
    el('tbody', {}, ...rows.map((r) => el('tr', {}, ...r.map((c) => el('td', { textContent: c }))))));
}

async function upload(e) {
  e.preventDefault();
  showError('#upload-error', null);
  const out = $('#upload-result');
  out.replaceChildren();
  const file = $('#wasm').files[0];
  const name = $('#plugin-name').value.trim() || (file ? file.name.replace(/\.wasm$/, '') : '');
  const version = $('#plugin-version').value.trim();
  if (!file) return showError('#upload-error', new Error('choose a .wasm file'));
  try {
    const m = await call(`/v1/plugins/${encodeURIComponent(name)}/${encodeURIComponent(version)}`, {
      method: 'POST', body: await file.arrayBuffer(), contentType: 'application/wasm',
    });
    out.append(el('p', { textContent: `${m.name}@${m.version} stored · ABI ${m.abi} · ${fmt.format(m.size)} bytes · sha256 ${m.sha256}` }), schemaTable(m));
    $('#deploy-plugin').value = `${m.name}@${m.version}`;
    loadPlugins();
  } catch (err) {
    showError('#upload-error', err);
  }
}

async function loadPlugins() {
  try {
    const ms = await call('/v1/plugins');
    $('#plugin-refs').replaceChildren(...(ms || []).map((m) => el('option', { value: `${m.name}@${m.version}` })));
    $('#plugins-list').replaceChildren(...(ms || []).map((m) => el('li', { textContent: `${m.name}@${m.version} · ${(m.schema.keys || []).map((k) => k.name).join(', ')} → ${(m.schema.metrics || []).map((x) => x.name).join(', ')}` })));
  } catch (e) {
    $('#plugins-list').replaceChildren(el('li', { textContent: `${e.code || 'error'}: ${e.message}` }));
  }
}

// parseWindows reads one window a line: "name kind [size] [slide]".
function parseWindows(text) {
  return text.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
    const [name, kind, size, slide] = l.split(/\s+/);
    const w = { name, kind };
    if (size) w.size = size;
    if (slide) w.slide = slide;
    return w;
  });
}

async function deploy(e) {
  e.preventDefault();
  showError('#deploy-error', null);
  $('#deploy-result').textContent = '';
  const spec = {
    name: $('#deploy-name').value.trim(),
    plugin: $('#deploy-plugin').value.trim(),
    topic: $('#deploy-topic').value.trim(),
    windows: parseWindows($('#deploy-windows').value),
  };
  for (const [id, field] of [['#deploy-lateness', 'lateness'], ['#deploy-emit', 'emit_every'], ['#deploy-checkpoint', 'checkpoint_every']]) {
    const v = $(id).value.trim();
    if (v) spec[field] = v;
  }
  try {
    const d = await call('/v1/deployments', { method: 'POST', body: spec });
    $('#deploy-result').textContent = `${d.name} deployed on ${d.topic}: query ${d.table}, follow it on the live tab`;
    await fetchDeployments();
  } catch (err) {
    showError('#deploy-error', err);
  }
}

// ---- deployments view ----

const STATS_EVERY_MS = 2000;
let statsTimer = null;
const lastStats = new Map(); // name -> the previous stats answer, for records/s
let inspected = null; // the deployment whose partitions and dead letters are shown

async function loadDeployments() {
  showError('#deployments-error', null);
  let list;
  try {
    list = await fetchDeployments();
  } catch (e) {
    showError('#deployments-error', e);
    return;
  }
  const body = $('#deployments-table tbody');
  body.replaceChildren(...list.map((d) => el('tr', { 'data-deployment': d.name, 'data-status': d.status },
    el('td', {}, el('a', { href: `?aggregator=${encodeURIComponent(d.name)}`, textContent: d.name })),
    el('td', { textContent: d.plugin }),
    el('td', { textContent: d.topic }),
    el('td', { textContent: (d.windows || []).map((w) => w.name + ' ' + w.kind + (w.size ? ' ' + w.size : '')).join(', ') }),
    el('td', { class: 'status-' + d.status, textContent: d.status }),
    el('td', { class: 'rate', 'data-rate': '' }),
    el('td', { class: 'lag', 'data-lag': '' }),
    el('td', { class: 'dead', 'data-dead': '' }),
    el('td', { class: 'owners' }),
    el('td', { class: 'err', textContent: d.error || '' }),
    el('td', {},
      el('button', { type: 'button', class: 'inspect', textContent: 'Details', onclick: () => inspect(d.name) }), ' ',
      el('button', { type: 'button', class: 'undeploy', textContent: 'Undeploy', onclick: () => undeploy(d.name) })))));
  $('#deployments-empty').hidden = list.length > 0;
  if (inspected && !list.some((d) => d.name === inspected)) inspect(null);
  refreshStats();
}

// refreshStats polls each deployment's stats while the tab is shown.
async function refreshStats() {
  clearTimeout(statsTimer);
  if ($('#tab-deployments').hidden) return;
  await Promise.all(deployments.map(async (d) => {
    const tr = document.querySelector(`tr[data-deployment="${CSS.escape(d.name)}"]`);
    if (!tr) return;
    let st;
    try {
      st = await call(`/v1/deployments/${encodeURIComponent(d.name)}/stats`);
    } catch (e) {
      tr.querySelector('.err').textContent = `${e.code}: ${e.message}`;
      return;
    }
    const prev = lastStats.get(d.name);
    lastStats.set(d.name, st);
    const handled = (x) => Object.values(x.records || {}).reduce((a, b) => a + b, 0);
    if (prev && prev.host === st.host) {
      const rate = (handled(st) - handled(prev)) / ((Date.parse(st.at) - Date.parse(prev.at)) / 1000);
      tr.querySelector('.rate').dataset.rate = String(rate);
      tr.querySelector('.rate').textContent = fmt.format(Math.max(0, rate)) + '/s';
    }
    const lag = st.partitions.reduce((a, p) => a + Math.max(0, p.lag), 0);
    tr.querySelector('.lag').dataset.lag = String(lag);
    tr.querySelector('.lag').textContent = st.error ? '?' : fmt.format(lag);
    const dead = Object.entries(st.dead_letters || {});
    tr.querySelector('.dead').dataset.dead = String(dead.reduce((a, [, n]) => a + n, 0));
    tr.querySelector('.dead').textContent = dead.length ? dead.map(([r, n]) => `${r} ${fmt.format(n)}`).join(', ') : '0';
    tr.querySelector('.owners').textContent = [...new Set(st.partitions.map((p) => p.owner || '(none)'))].join(', ');
    if (inspected === d.name) drawPartitions(st);
  }));
  statsTimer = setTimeout(refreshStats, STATS_EVERY_MS);
}

function inspect(name) {
  inspected = name;
  const box = $('#inspect');
  box.hidden = !name;
  if (!name) return;
  $('#inspect-title').textContent = name;
  const st = lastStats.get(name);
  if (st) drawPartitions(st);
  loadDeadLetters();
}

function drawPartitions(st) {
  $('#partitions-error').textContent = st.error || '';
  $('#partitions tbody').replaceChildren(...st.partitions.map((p) => el('tr', { 'data-partition': String(p.partition) },
    el('td', { textContent: String(p.partition) }), el('td', { textContent: p.owner || '(none)' }),
    el('td', { class: 'value', textContent: p.committed < 0 ? '–' : fmt.format(p.committed) }),
    el('td', { class: 'value', textContent: fmt.format(p.end) }),
    el('td', { class: 'value', textContent: p.lag < 0 ? '?' : fmt.format(p.lag) }))));
}

async function loadDeadLetters() {
  if (!inspected) return;
  showError('#dead-error', null);
  const n = Math.max(1, Math.min(500, Number($('#dead-n').value) || 50));
  try {
    const dls = await call(`/v1/deployments/${encodeURIComponent(inspected)}/dead-letters?n=${n}`);
    $('#dead-letters tbody').replaceChildren(...dls.map((d) => el('tr', { 'data-reason': d.reason },
      el('td', { textContent: new Date(d.time).toLocaleTimeString() }),
      el('td', { textContent: d.reason }),
      el('td', { class: 'source', textContent: `${d.source.topic} / ${d.source.partition} @ ${d.source.offset}` }),
      el('td', { textContent: d.error }),
      el('td', { class: 'mono', textContent: d.value + (d.truncated ? ' …' : '') }))));
    $('#dead-empty').hidden = dls.length > 0;
  } catch (e) {
    showError('#dead-error', e);
  }
}

async function undeploy(name) {
  if (!confirm(`Undeploy ${name}? Its live subscribers are closed; its tables stay in ClickHouse.`)) return;
  try {
    await call(`/v1/deployments/${encodeURIComponent(name)}`, { method: 'DELETE' });
  } catch (e) {
    showError('#deployments-error', e);
  }
  loadDeployments();
}

// ---- start ----

async function main() {
  setStatus({ status: 'idle', detail: 'choose an aggregator' });
  for (const b of document.querySelectorAll('nav button[data-tab]')) b.addEventListener('click', () => tab(b.dataset.tab));
  $('#pick').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('#aggregator').value.trim();
    if (name) follow(name);
  });
  for (const id of ['#window', '#metric', '#range', '#top', '#chart-filter']) $(id).addEventListener('change', () => { chartKey = ''; wanted = true; schedule(); });
  $('#totals-filter').addEventListener('input', () => { wanted = true; schedule(); });
  $('#run').addEventListener('click', runSQL);
  $('#sql').addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) runSQL(); });
  $('#examples').addEventListener('change', (e) => { if (e.target.value) $('#sql').value = e.target.value; });
  $('#upload').addEventListener('submit', upload);
  $('#deploy').addEventListener('submit', deploy);
  $('#refresh').addEventListener('click', loadDeployments);
  $('#dead-load').addEventListener('click', loadDeadLetters);
  const params = new URL(location.href).searchParams;
  tab(params.get('tab') || 'live');
  let names = [];
  try {
    names = (await fetchDeployments()).map((d) => d.name);
  } catch (e) {
    $('#aggregator').placeholder = 'aggregator name'; // no list: the user types the name
  }
  const want = params.get('aggregator');
  if (want) follow(want);
  else if (names.length === 1) follow(names[0]);
}

main();
