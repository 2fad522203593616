// The dashboard's Web Worker: it holds the subscription (Live), the
// history+live join (Series) and the running totals, so that parsing and
// applying a snapshot of 100k groups never blocks the page. The page asks
// for a view at most once per animation frame; the worker says "dirty" once
// after each change until the page asks again.
import { Live, Series, liveURL } from '../assets/wagg.js';

let live = null;
let series = null;
// For debugging and browser tests: the worker's Live and Series.
self.wagg = {};
let cfg = null;
let dirty = false;
let asked = true; // the page is waiting for a dirty notice

function changed() {
  dirty = true;
  if (asked) {
    asked = false;
    postMessage({ type: 'dirty' });
  }
}

function follow(c) {
  if (series) series.stop();
  if (live) live.stop();
  cfg = c;
  series = null;
  const sub = { aggregator: c.aggregator, panes: c.panes || 2, interval_ms: c.intervalMs || 0 };
  live = new Live(liveURL('/v1/live', c.base), sub, { token: c.token, keepClosed: c.panes || 2 });
  live.on('change', changed);
  live.on('status', changed);
  live.on('snapshot', () => {
    if (!series && cfg.window) chart(cfg);
  });
  live.start();
  self.wagg.live = live;
}

function chart(c) {
  cfg = Object.assign({}, cfg, c);
  if (series) series.stop();
  series = null;
  if (!live || !cfg.window || !cfg.table) return changed();
  const w = live.windows.find((w) => w.name === cfg.window);
  if (live.windows.length && (!w || w.kind === 'global')) return changed();
  series = new Series({
    live, table: cfg.table, window: cfg.window, metric: cfg.metric || (live.metrics[0] || {}).name,
    rangeMs: cfg.rangeMs, top: cfg.top, filter: cfg.filter, token: cfg.token, base: cfg.base,
  });
  series.on('change', changed);
  self.wagg.series = series;
  changed();
}

// matcher turns the totals filter ("poll_id=7 opt") into a predicate:
// col=value terms match a key column exactly, other terms any part of the key.
function matcher(text, cols) {
  const terms = String(text || '').toLowerCase().split(/[\s,]+/).filter(Boolean);
  if (!terms.length) return () => true;
  return (r) => terms.every((t) => {
    const eq = t.indexOf('=');
    if (eq > 0) {
      const col = t.slice(0, eq);
      if (cols.some((c) => c.name.toLowerCase() === col)) {
        const c = cols.find((c) => c.name.toLowerCase() === col);
        return String(r.key[c.name]).toLowerCase() === t.slice(eq + 1);
      }
    }
    return cols.some((c) => String(r.key[c.name]).toLowerCase().includes(t));
  });
}

function totals(q) {
  const g = live.windows.find((w) => w.kind === 'global');
  if (!g) return null;
  const m = q.metric && live.metrics.some((x) => x.name === q.metric) ? q.metric : (live.metrics[0] || {}).name;
  const match = matcher(q.filter, live.keys);
  let sum = 0;
  let n = 0;
  const best = [];
  const limit = q.limit || 50;
  for (const pane of live.panes(g.name).values()) {
    for (const r of pane.values()) {
      const v = r.values[m];
      if (typeof v !== 'number' || !match(r)) continue;
      sum += v;
      n++;
      if (best.length === limit && v <= best[limit - 1].values[m]) continue;
      let i = best.length;
      while (i > 0 && best[i - 1].values[m] < v) i--;
      best.splice(i, 0, r);
      if (best.length > limit) best.pop();
    }
  }
  return {
    window: g.name, metric: m, sum, groups: n,
    rows: best.map((r) => ({ key: r.key, value: r.values[m], pct: sum ? (100 * r.values[m]) / sum : 0, final: r.final })),
  };
}

function view(q) {
  dirty = false;
  asked = true;
  if (!live) return { type: 'view', status: 'idle' };
  const v = {
    type: 'view', status: live.status, detail: live.detail, epoch: live.epoch, seq: live.seq, live: live.live,
    windows: live.windows, keys: live.keys, metrics: live.metrics, reconnects: live.reconnects, resumes: live.resumes,
  };
  if (live.live) {
    v.totals = totals(q);
    if (series) {
      const c = series.columns();
      v.series = {
        window: series.window, metric: series.metric, seam: series.seam, complete: series.complete,
        error: series.error ? String(series.error.message || series.error) : null,
        data: c.data, labels: c.labels, sources: c.sources,
        panes: series.panes().map((p) => ({ start: p.start, total: p.total, source: p.source, final: p.final })),
      };
    }
  }
  return v;
}

onmessage = (ev) => {
  const m = ev.data;
  switch (m.type) {
    case 'follow':
      follow(m);
      break;
    case 'chart':
      chart(m);
      break;
    case 'view':
      postMessage(view(m));
      break;
  }
};
