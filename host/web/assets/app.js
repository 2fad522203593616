// The built-in live page: pick an aggregator, watch its numbers move.
//
// Stable hooks for browser tests:
//   #status                 "connecting", "live", "reconnecting" or "error" (data-state too)
//   section[data-window]    one per window of the aggregator, with data-kind
//   li[data-key]            one per shown group, key columns as "col=value,col=value"
//   [data-value]            the raw number of a value (.value) or a rate (.rate)
//   [data-pane]             the start (Unix ms) of the pane a windowed section shows
import { Live, liveURL } from './wagg.js';

const TOP = 20;
const $ = (sel) => document.querySelector(sel);
const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

let live = null;
let pending = false;

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

function setStatus(state, detail) {
  const el = $('#status');
  el.textContent = state;
  el.dataset.state = state;
  el.title = detail || '';
  $('#detail').textContent = state === 'live' ? '' : (detail || '');
}

async function listDeployments() {
  try {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const res = await fetch('/v1/deployments', { headers });
    if (!res.ok) throw new Error(res.status + ' ' + res.statusText);
    const list = await res.json();
    const dl = $('#deployments');
    dl.replaceChildren();
    for (const d of Array.isArray(list) ? list : []) {
      if (!d || typeof d.name !== 'string') continue;
      const o = document.createElement('option');
      o.value = d.name;
      dl.append(o);
    }
    return list.map((d) => d && d.name).filter(Boolean);
  } catch (e) {
    // No list: the user types the name.
    $('#aggregator').placeholder = 'aggregator name';
    return [];
  }
}

function follow(name) {
  if (live) live.stop();
  $('#windows').replaceChildren();
  $('#aggregator').value = name;
  const u = new URL(location.href);
  u.searchParams.set('aggregator', name);
  history.replaceState(null, '', u);
  document.title = name + ' · wagg live';
  const sub = { aggregator: name, panes: 2 };
  if (token) sub.token = token;
  live = new Live(liveURL(), sub, {
    keepClosed: 2,
    onStatus: setStatus,
    onChange: schedule,
  });
  live.start();
}

function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    render();
  });
}

function keyLabel(key, cols) {
  return cols.map((c) => `${c.name}=${key[c.name]}`).join(',');
}

function keyText(key, cols) {
  return cols.map((c) => String(key[c.name])).join(' · ') || '(all)';
}

function num(v) {
  return typeof v === 'number' ? v : NaN;
}

// top returns the n rows with the largest value of metric m.
function top(rows, m, n) {
  const best = [];
  for (const r of rows) {
    const v = num(r.values[m]);
    if (Number.isNaN(v)) continue;
    if (best.length === n && v <= num(best[n - 1].values[m])) continue;
    let i = best.length;
    while (i > 0 && num(best[i - 1].values[m]) < v) i--;
    best.splice(i, 0, r);
    if (best.length > n) best.pop();
  }
  return best;
}

function section(w) {
  let s = document.querySelector(`section[data-window="${CSS.escape(w.name)}"]`);
  if (s) return s;
  s = document.createElement('section');
  s.dataset.window = w.name;
  s.dataset.kind = w.kind;
  const h = document.createElement('header');
  const title = document.createElement('h2');
  title.textContent = w.name;
  const sub = document.createElement('span');
  sub.className = 'sub';
  h.append(title, sub);
  if (w.kind !== 'global') {
    const rate = document.createElement('span');
    rate.className = 'rate';
    h.append(rate);
  }
  const ol = document.createElement('ol');
  s.append(h, ol);
  $('#windows').append(s);
  return s;
}

// rateMetric is the metric whose pane sum counts events: the first count,
// else the first sum.
function rateMetric(metrics) {
  return metrics.find((m) => m.kind === 'count') || metrics.find((m) => m.kind === 'sum');
}

function render() {
  if (!live || !live.live) return;
  const metric = live.metrics[0];
  if (!metric) return;
  const cols = live.keys;
  for (const w of live.windows) {
    const s = section(w);
    const sub = s.querySelector('.sub');
    let rows;
    if (w.kind === 'global') {
      rows = [];
      for (const pane of live.panes(w.name).values()) rows.push(...pane.values());
      sub.textContent = `running totals · top ${TOP} by ${metric.name}`;
    } else {
      // The last closed pane: every row final. Before one closes, the
      // latest open pane.
      const panes = live.panes(w.name);
      const starts = [...panes.keys()].sort((a, b) => b - a);
      let start = starts.find((st) => live.closed(w.name, st));
      const closed = start !== undefined;
      if (!closed) start = starts[0];
      rows = start === undefined ? [] : [...panes.get(start).values()];
      if (start === undefined) {
        sub.textContent = 'no pane yet';
        delete s.dataset.pane;
      } else {
        s.dataset.pane = String(start);
        const end = start + (w.size_ms || 0);
        sub.textContent = `${closed ? 'last closed pane' : 'open pane'} ${timeFmt.format(start)}–${timeFmt.format(end)} · top ${TOP} by ${metric.name}`;
      }
      const rm = rateMetric(live.metrics);
      const rate = s.querySelector('.rate');
      if (rm && start !== undefined && w.size_ms) {
        let sum = 0;
        for (const r of rows) sum += num(r.values[rm.name]) || 0;
        const perSec = sum / (w.size_ms / 1000);
        rate.dataset.value = String(perSec);
        rate.textContent = `${fmt.format(perSec)} ${rm.kind === 'count' ? 'events' : rm.name}/s`;
      } else {
        rate.textContent = '';
        delete rate.dataset.value;
      }
    }
    drawList(s.querySelector('ol'), top(rows, metric.name, TOP), metric.name, cols);
  }
  $('#seq').textContent = `epoch ${live.epoch} · seq ${live.seq}`;
}

function drawList(ol, rows, m, cols) {
  const max = rows.reduce((a, r) => Math.max(a, Math.abs(num(r.values[m])) || 0), 0) || 1;
  const old = new Map([...ol.children].map((li) => [li.dataset.key, li]));
  const items = rows.map((r) => {
    const k = keyLabel(r.key, cols);
    let li = old.get(k);
    if (!li) {
      li = document.createElement('li');
      li.dataset.key = k;
      li.innerHTML = '<span class="key"></span><span class="bar"><i></i></span><span class="value"></span>';
      li.querySelector('.key').textContent = keyText(r.key, cols);
    }
    const v = num(r.values[m]);
    const val = li.querySelector('.value');
    if (val.dataset.value !== String(v)) {
      val.dataset.value = String(v);
      val.textContent = fmt.format(v);
      li.classList.remove('bump');
      void li.offsetWidth; // restart the highlight
      li.classList.add('bump');
    }
    li.querySelector('.bar i').style.width = `${(100 * Math.abs(v)) / max}%`;
    li.classList.toggle('final', !!r.final);
    return li;
  });
  ol.replaceChildren(...items);
}

async function main() {
  setStatus('idle', 'choose an aggregator');
  const form = $('#pick');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('#aggregator').value.trim();
    if (name) follow(name);
  });
  const names = await listDeployments();
  const wanted = new URL(location.href).searchParams.get('aggregator');
  if (wanted) follow(wanted);
  else if (names.length === 1) follow(names[0]);
}

main();
