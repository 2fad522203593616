// wagg.js: the client of wagg's live protocol (docs/protocol.md) and of its
// history (POST /v1/query), for browsers and Web Workers. One ES module, no
// dependencies, no build step; wagg.d.ts beside it has the types. A wagg
// host serves both at /wagg.js and /wagg.d.ts.
//
//   import { Live, Series, query } from '/wagg.js';
//   const live = new Live(liveURL(), { aggregator: 'votes' }, { token });
//   live.on('change', () => draw(live.rows()));
//   live.on('status', (status, detail) => show(status, detail));
//   live.start();
//
// Live subscribes, applies the snapshot and then each delta after checking
// that it continues exactly where the state is (same epoch, prev == seq),
// and reconnects with backoff after any close or gap, resuming from the
// (epoch, seq) it holds: the hub answers with the missed deltas or a fresh
// snapshot. Statuses: "idle", "connecting", "live", "reconnecting", "error".
//
// Series joins a windowed window's history from ClickHouse with the live
// deltas at the seam docs/protocol.md defines ("Joining history and live"),
// so that no pane is missing or counted twice.

const AUTH_CODES = new Set(['unauthorized', 'forbidden', 'token_expired']);
const PING_EVERY_MS = 20000; // browsers cannot send WebSocket pings; the protocol has its own
const SILENCE_MS = 45000; // no frame for this long (WebSocket): the connection is dead

// Emitter is the small event mechanism of Live and Series.
class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  // on adds a handler of an event and returns a function that removes it.
  on(event, fn) {
    let set = this._handlers.get(event);
    if (!set) this._handlers.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  _emit(event, ...args) {
    const set = this._handlers.get(event);
    if (set) for (const fn of set) fn(...args);
  }
}

// keyID is the identity of a group key: its JSON with the columns in the
// schema's order.
export function keyID(key, cols) {
  return JSON.stringify(cols.map((c) => key[c.name]));
}

export class Live extends Emitter {
  // url: the hub's WebSocket URL (liveURL()), or its SSE URL (sseURL()) with
  // opts.transport "sse". sub: the subscribe fields (aggregator, windows,
  // keys, panes, interval_ms, token). opts: token, transport ("ws" or
  // "sse"), keepClosed (closed panes of each tumbling or hopping window kept,
  // the oldest dropped first; 0 = as many as the hub keeps), minBackoffMs,
  // maxBackoffMs, refreshToken (a function returning a new token, or a
  // promise of one, called when a subscription's token expired), and the
  // callbacks onChange(live), onStatus(status, detail), onError(frame).
  constructor(url, sub, opts = {}) {
    super();
    this.url = url;
    this.sub = Object.assign({}, sub);
    this.opts = Object.assign({ transport: 'ws', keepClosed: 0, minBackoffMs: 250, maxBackoffMs: 10000 }, opts);
    if (this.opts.token && !this.sub.token) this.sub.token = this.opts.token;
    if (this.opts.onChange) this.on('change', this.opts.onChange);
    if (this.opts.onStatus) this.on('status', this.opts.onStatus);
    if (this.opts.onError) this.on('error', this.opts.onError);
    this.epoch = null;
    this.seq = 0;
    this.windows = [];
    this.keys = [];
    this.metrics = [];
    this.live = false;
    this.state = new Map(); // window name -> Map(start -> Map(keyID -> row))
    this.conn = null;
    this.stopped = true;
    this.backoff = this.opts.minBackoffMs;
    this.timer = null;
    this.pinger = null;
    this.lastFrame = 0;
    this.status = 'idle';
    this.reconnects = 0; // connections after the first one
    this.resumes = 0; // reconnects the hub answered with "resumed"
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.conn) this.conn.close();
    this.conn = null;
    this.live = false;
    this._status('idle');
  }

  // rows returns every row held, in window order then by start.
  rows() {
    const out = [];
    for (const w of this.windows) {
      const panes = this.state.get(w.name);
      if (!panes) continue;
      for (const start of [...panes.keys()].sort((a, b) => a - b)) {
        for (const r of panes.get(start).values()) out.push(r);
      }
    }
    return out;
  }

  // panes returns Map(start -> Map(keyID -> row)) of one window.
  panes(window) {
    return this.state.get(window) || new Map();
  }

  // closed reports whether every row of a pane is final.
  closed(window, start) {
    const pane = this.panes(window).get(start);
    return !!pane && pane.size > 0 && pane.open === 0;
  }

  _status(s, detail) {
    this.status = s;
    this.detail = detail;
    this._emit('status', s, detail);
  }

  _connect() {
    // A refused subscription stays visible while we retry.
    if (this.status !== 'error') this._status(this.epoch ? 'reconnecting' : 'connecting');
    if (this._connected) this.reconnects++;
    this._connected = true;
    const resume = this.epoch ? { epoch: this.epoch, seq: this.seq } : null;
    const conn = { close: () => {} };
    // Every callback checks that its connection is still the current one.
    const cur = () => conn === this.conn;
    const onFrame = (data) => {
      if (!cur()) return;
      this.lastFrame = Date.now();
      let f;
      try {
        f = JSON.parse(data);
      } catch (e) {
        this._drop(conn, 'undecodable frame');
        return;
      }
      this._frame(conn, f);
    };
    const onClose = (code, reason) => {
      if (!cur()) return;
      this.conn = null;
      clearInterval(this.pinger);
      this.live = false;
      if (!this.stopped) this._closed(code, reason);
    };
    try {
      if (this.opts.transport === 'sse') this._openSSE(conn, resume, onFrame, onClose);
      else this._openWS(conn, resume, onFrame, onClose);
    } catch (e) {
      this._retry(String(e));
      return;
    }
    this.conn = conn;
  }

  _openWS(conn, resume, onFrame, onClose) {
    const ws = new WebSocket(this.url);
    conn.close = () => ws.close(1000, 'bye');
    conn.ping = () => {
      if (ws.readyState === WebSocket.OPEN) ws.send('{"type":"ping"}');
    };
    ws.onopen = () => {
      const f = Object.assign({ type: 'subscribe' }, this.sub);
      if (resume) f.resume = resume;
      ws.send(JSON.stringify(f));
      this.lastFrame = Date.now();
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this._keepalive(conn), PING_EVERY_MS);
    };
    ws.onmessage = (ev) => onFrame(ev.data);
    ws.onclose = (ev) => onClose(ev.code, ev.reason);
  }

  // _openSSE follows the same subscription over Server-Sent Events. The
  // resume point goes in last_event_id (EventSource sends Last-Event-ID by
  // itself only on its own reconnects, which this client does not use: it
  // closes the stream and reconnects with backoff, as on a WebSocket).
  _openSSE(conn, resume, onFrame, onClose) {
    const u = new URL(this.url, typeof location !== 'undefined' ? location.href : undefined);
    const s = this.sub;
    u.searchParams.set('aggregator', s.aggregator);
    for (const w of s.windows || []) u.searchParams.append('window', w);
    for (const [col, vals] of Object.entries(s.keys || {})) for (const v of vals) u.searchParams.append('key.' + col, String(v));
    if (s.panes) u.searchParams.set('panes', String(s.panes));
    if (s.interval_ms) u.searchParams.set('interval_ms', String(s.interval_ms));
    if (s.token) u.searchParams.set('token', s.token);
    if (resume) u.searchParams.set('last_event_id', `${resume.epoch}:${resume.seq}`);
    const es = new EventSource(u.href);
    let closing = null;
    conn.close = () => es.close();
    es.onmessage = (ev) => {
      if (ev.data.startsWith('{"type":"close"')) {
        closing = JSON.parse(ev.data);
        return;
      }
      onFrame(ev.data);
    };
    es.onerror = () => {
      es.close();
      // A refusal (HTTP 4xx) has no frame we can read here: an SSE client
      // sees it as a failed stream, before any snapshot.
      if (closing) onClose(closing.status, closing.reason);
      else onClose(1006, this.live ? 'stream ended' : 'stream refused or unreachable');
    };
  }

  _closed(code, reason) {
    // 4009: the aggregator was redeployed; the old state means nothing.
    if (code === 4009) this._forget();
    // 4010: the token expired. With opts.refreshToken reconnect and resume;
    // without, stop.
    if (code === 4010) {
      if (!this.opts.refreshToken) {
        this._status('error', 'token expired: open the page again with a new #token=');
        return;
      }
      Promise.resolve(this.opts.refreshToken()).then(
        (t) => {
          this.sub = Object.assign({}, this.sub, { token: t });
          this._retry('token refreshed');
        },
        (e) => this._status('error', 'token refresh failed: ' + e),
      );
      return;
    }
    this._retry(reason || `closed (${code})`);
  }

  _keepalive(conn) {
    if (conn !== this.conn) return;
    if (Date.now() - this.lastFrame > SILENCE_MS) {
      this._drop(conn, 'no answer from the server');
      return;
    }
    conn.ping();
  }

  // _drop abandons a connection and reconnects (resuming from the state held).
  _drop(conn, why) {
    if (conn !== this.conn) return;
    this.conn = null;
    clearInterval(this.pinger);
    this.live = false;
    try {
      conn.close();
    } catch (e) {
      /* already closed */
    }
    if (!this.stopped) this._retry(why);
  }

  _retry(why) {
    clearTimeout(this.timer);
    const wait = this.backoff * (0.8 + 0.4 * Math.random());
    this.backoff = Math.min(this.backoff * 2, this.opts.maxBackoffMs);
    this._status(this.status === 'error' ? 'error' : 'reconnecting', why);
    this.timer = setTimeout(() => {
      if (!this.stopped) this._connect();
    }, wait);
  }

  _forget() {
    this.epoch = null;
    this.seq = 0;
    this.state = new Map();
  }

  _frame(conn, f) {
    switch (f.type) {
      case 'snapshot':
        this.epoch = f.epoch;
        this.seq = f.seq;
        this.windows = f.windows || [];
        this.keys = f.keys || [];
        this.metrics = f.metrics || [];
        this.state = new Map();
        this._emit('snapshot', this, f);
        this._rows(f.rows);
        this._prune();
        this._live();
        break;
      case 'resumed':
        if (f.epoch !== this.epoch || f.seq !== this.seq) {
          this._forget();
          this._drop(conn, 'resume does not match the state held');
          return;
        }
        this.resumes++;
        this._live();
        break;
      case 'delta':
        if (!this.live || f.epoch !== this.epoch) {
          this._forget();
          this._drop(conn, 'delta of another epoch');
          return;
        }
        if (f.prev !== this.seq) {
          // A gap: resume from what we hold; the hub fills it or snapshots.
          this._drop(conn, `gap: delta ${f.seq} follows ${f.prev}, we hold ${this.seq}`);
          return;
        }
        this._rows(f.rows);
        for (const p of f.evicted || []) {
          const panes = this.state.get(p.window);
          if (panes) panes.delete(p.start);
        }
        this._prune();
        this.seq = f.seq;
        break;
      case 'error':
        this._emit('error', f);
        if (!this.live && AUTH_CODES.has(f.code)) {
          // A token problem does not go away by retrying.
          this.stop();
          this._status('error', `${f.code}: ${f.message}`);
          return;
        }
        if (!this.live) {
          // The subscription was refused (unknown aggregator, bad filter):
          // say so and try again later, the aggregator may be deployed soon.
          this._status('error', `${f.code}: ${f.message}`);
          this._drop(conn, `${f.code}: ${f.message}`);
        }
        return;
      default:
        return; // pong, and frame types of later versions
    }
    this._emit('change', this);
  }

  _live() {
    this.live = true;
    this.backoff = this.opts.minBackoffMs;
    this._status('live');
  }

  _rows(rows) {
    for (const r of rows || []) {
      let panes = this.state.get(r.window);
      if (!panes) this.state.set(r.window, (panes = new Map()));
      let pane = panes.get(r.start);
      if (!pane) {
        pane = new Map();
        pane.open = 0; // rows not final
        panes.set(r.start, pane);
      }
      const k = keyID(r.key, this.keys);
      const old = pane.get(k);
      if (old && !old.final) pane.open--;
      if (!r.final) pane.open++;
      pane.set(k, r);
      this._emit('row', r, old);
    }
  }

  // _prune keeps the latest keepClosed closed panes of each windowed window;
  // open panes stay.
  _prune() {
    const keep = this.opts.keepClosed;
    if (!keep) return;
    for (const w of this.windows) {
      if (w.kind === 'global') continue;
      const panes = this.state.get(w.name);
      if (!panes || panes.size <= keep) continue;
      const closed = [...panes.keys()].filter((s) => this.closed(w.name, s)).sort((a, b) => a - b);
      for (const s of closed.slice(0, Math.max(0, closed.length - keep))) panes.delete(s);
    }
  }
}

// here is the base of relative URLs: the page's (or the worker's) location;
// elsewhere (Node) pass base.
function here() {
  return typeof location !== 'undefined' ? location.href : undefined;
}

// liveURL turns a path on this page's server into a WebSocket URL.
export function liveURL(path = '/v1/live', base = here()) {
  const u = new URL(path, base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

// sseURL is the Server-Sent Events endpoint of this page's server.
export function sseURL(path = '/v1/live/sse', base = here()) {
  return new URL(path, base).href;
}

// QueryError is a refusal of POST /v1/query (or of another API call): the
// API's error code and message, verbatim, and the HTTP status.
export class QueryError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'QueryError';
    this.status = status;
    this.code = code;
  }
}

// api calls the host's HTTP API and returns the decoded JSON answer, or
// throws a QueryError with the API's code and message.
export async function api(path, { method = 'GET', body, token, base = here(), signal, contentType } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined && !(body instanceof Blob) && !(body instanceof ArrayBuffer) && typeof body !== 'string') {
    body = JSON.stringify(body);
    contentType = contentType || 'application/json';
  }
  if (contentType) headers['Content-Type'] = contentType;
  let res;
  try {
    res = await fetch(new URL(path, base), { method, body, headers, signal });
  } catch (e) {
    throw new QueryError(0, 'unavailable', 'the host does not answer: ' + e.message);
  }
  const text = await res.text();
  let v = null;
  try {
    v = text ? JSON.parse(text) : null;
  } catch (e) {
    /* not JSON: the message is the text */
  }
  if (!res.ok) {
    const err = (v && v.error) || {};
    throw new QueryError(res.status, err.code || 'http_' + res.status, err.message || text || res.statusText);
  }
  return v;
}

// query runs read-only SQL through POST /v1/query (scope sql:read) and
// returns { columns: [{name, type}], rows: [[...]], truncated, elapsed_ms }.
export function query(sql, opts = {}) {
  return api('/v1/query', Object.assign({}, opts, { method: 'POST', body: { sql } }));
}

// sqlString quotes a string for ClickHouse SQL.
export function sqlString(s) {
  return "'" + String(s).replace(/\\/g, '\\\\').replace(/'/g, "\\'") + "'";
}

function sqlValue(v, type) {
  if (type === 'string') return sqlString(v);
  const n = Number(v);
  if (!Number.isFinite(n)) throw new QueryError(400, 'bad_filter', `key value ${v} is not a number`);
  return String(n);
}

function sqlIdent(name) {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new QueryError(400, 'bad_filter', `column name ${name} cannot be used in SQL`);
  return name;
}

// merge combines two values of a metric by its kind.
export function merge(kind, a, b) {
  if (a === undefined || a === null) return b;
  if (b === undefined || b === null) return a;
  if (kind === 'min') return Math.min(a, b);
  if (kind === 'max') return Math.max(a, b);
  return a + b; // count, sum
}

// Series is one metric of one tumbling or hopping window over the last
// rangeMs: per pane the merged value over every group that matches the
// filter (total) and the value of each tracked group (the top groups over
// the range, or the ones named). Panes before the seam come from
// ClickHouse, the rest from the live subscription; docs/protocol.md
// ("Joining history and live") defines the seam.
//
// opts: live (a started or not yet started Live following the window,
// unfiltered or with the same key filter), table (the deployment's view,
// "database.name", from GET /v1/deployments), window, metric, rangeMs
// (default 5 minutes), filter ({column: [values]}: only these groups, as
// the subscribe "keys"), top (how many groups to track, default 5), keys
// (the groups to track instead of the top ones), token, base, and
// retryMs (how often incomplete history is asked again, default 1000).
export class Series extends Emitter {
  constructor(opts) {
    super();
    this.opts = Object.assign({ rangeMs: 5 * 60_000, top: 5, retryMs: 1000 }, opts);
    this.live = opts.live;
    this.window = opts.window;
    this.metric = opts.metric;
    this.seam = null; // panes starting before it: history; from it on: live
    this.complete = false; // the history before the seam is all in ClickHouse
    this.error = null; // the last refusal of a history query (QueryError)
    this.tracked = null; // [{key, id}] once chosen
    this.hist = new Map(); // start -> {total, final, byKey: Map(id -> value)}
    this.livePanes = new Map(); // start -> {total, open, byKey}, never evicted
    this._rowsOf = new Map(); // start -> Map(id -> value): live panes' values, to keep totals exact
    this._stopped = false;
    this._timer = null;
    this._off = [
      this.live.on('snapshot', (l, f) => this._onSnapshot(l, f)),
      this.live.on('row', (r) => this._onRow(r)),
      this.live.on('change', () => this._changed()),
    ];
    this._asked = false; // a history answer came
    if (this.live.live) this._onSnapshot(this.live, null);
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._timer);
    for (const off of this._off) off();
  }

  _kind() {
    const m = this.live.metrics.find((m) => m.name === this.metric);
    return m ? m.kind : 'sum';
  }

  _matches(key) {
    const f = this.opts.filter;
    if (!f) return true;
    for (const [col, vals] of Object.entries(f)) {
      if (!vals.some((v) => String(v) === String(key[col]))) return false;
    }
    return true;
  }

  // Every snapshot sets the seam: the earliest pane it holds of the window.
  // Live panes before it are dropped (they may have missed changes while
  // the client was away) and the history before it is asked for again. A
  // snapshot without a pane of the window leaves the seam open (+Infinity)
  // until the first pane a delta brings.
  _onSnapshot(l, f) {
    const starts = new Set();
    if (f) {
      for (const r of f.rows || []) if (r.window === this.window) starts.add(r.start);
    } else {
      for (const s of l.panes(this.window).keys()) starts.add(s);
    }
    this.seam = starts.size ? Math.min(...starts) : Infinity;
    this.livePanes.clear();
    this._rowsOf.clear();
    if (!f) for (const pane of l.panes(this.window).values()) for (const r of pane.values()) this._onRow(r);
    this._ask();
  }

  // _ask runs the history query once the rows of the current frame are in.
  _ask() {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._history(), 0);
  }

  _onRow(r) {
    if (r.window !== this.window || !this._matches(r.key)) return;
    if (this.seam === Infinity) {
      this.seam = r.start;
      this._ask();
    }
    if (r.start < this.seam) return; // history's
    const v = typeof r.values[this.metric] === 'number' ? r.values[this.metric] : null;
    let p = this.livePanes.get(r.start);
    if (!p) {
      p = { total: null, open: 0, byKey: new Map() };
      this.livePanes.set(r.start, p);
      this._rowsOf.set(r.start, new Map());
    }
    const vals = this._rowsOf.get(r.start);
    const id = keyID(r.key, this.live.keys);
    const prev = vals.get(id);
    vals.set(id, { v, final: !!r.final });
    if (prev && !prev.final) p.open--;
    if (!r.final) p.open++;
    const kind = this._kind();
    if (kind === 'count' || kind === 'sum') p.total = (p.total || 0) + (v || 0) - ((prev && prev.v) || 0);
    else p.total = null; // min and max: recomputed when read
    if (this.tracked && this.tracked.some((t) => t.id === id)) p.byKey.set(id, v);
  }

  // _history asks ClickHouse for the panes before the seam, then again for
  // the panes it did not yet have complete, until the checkpoints say
  // everything before the seam is in.
  async _history() {
    if (this._stopped) return;
    const gen = (this._gen = (this._gen || 0) + 1); // a newer query wins
    const o = this.opts;
    const cols = this.live.keys;
    const kind = this._kind();
    const agg = kind === 'min' ? 'min' : kind === 'max' ? 'max' : 'sum';
    const m = sqlIdent(this.metric);
    const [db, name] = o.table.includes('.') ? o.table.split('.', 2) : ['', o.table];
    const liveStarts = [...this.livePanes.keys()];
    const anchor = liveStarts.length ? Math.max(...liveStarts) : Date.now();
    const from = Math.floor((anchor - o.rangeMs) / 1000);
    const where = [`window_name = ${sqlString(this.window)}`, `window_start >= toDateTime(${from})`];
    if (Number.isFinite(this.seam)) where.push(`window_start < toDateTime(${Math.floor(this.seam / 1000)})`);
    const run = (sql) => query(sql, { token: o.token, base: o.base });
    try {
      for (const [col, vals] of Object.entries(o.filter || {})) {
        const c = cols.find((c) => c.name === col);
        if (!c) throw new QueryError(400, 'bad_filter', `the aggregator has no key column ${col}`);
        where.push(`${sqlIdent(col)} IN (${vals.map((v) => sqlValue(v, c.type)).join(', ')})`);
      }
      const w = where.join(' AND ');
      const keyCols = cols.map((c) => sqlIdent(c.name)).join(', ');
      // Everything before the seam is in ClickHouse once every partition's
      // checkpoint (written after its rows) has a watermark past the seam.
      const wm = await run(
        `SELECT min(watermark), count() FROM ${db ? sqlIdent(db) + '.' : ''}_wagg_checkpoints FINAL WHERE deployment = ${sqlString(name)}`,
      );
      const watermark = wm.rows.length && Number(wm.rows[0][1]) > 0 ? Number(wm.rows[0][0]) : -Infinity;
      const totals = await run(
        `SELECT toUInt64(window_start) * 1000 AS s, ${agg}(${m}) AS v, min(is_final) AS f FROM ${o.table} WHERE ${w} GROUP BY s ORDER BY s DESC LIMIT 10000`,
      );
      if (!this.tracked) {
        let keys = o.keys;
        if (!keys && cols.length) {
          const top = await run(
            `SELECT ${keyCols}, ${agg}(${m}) AS v FROM ${o.table} WHERE ${w} GROUP BY ${keyCols} ORDER BY v DESC LIMIT ${Math.max(0, o.top | 0)}`,
          );
          keys = top.rows.map((r) => Object.fromEntries(cols.map((c, i) => [c.name, r[i]])));
        }
        if (keys && keys.length) this._track(keys);
      }
      if (gen !== this._gen) return;
      const hist = new Map();
      for (const [s, v, f] of totals.rows) hist.set(Number(s), { total: v === null ? null : Number(v), final: Number(f) === 1, byKey: new Map() });
      if (this.tracked && this.tracked.length && cols.length) {
        const tuple = (k) => '(' + cols.map((c) => sqlValue(k[c.name], c.type)).join(', ') + ')';
        const per = await run(
          `SELECT toUInt64(window_start) * 1000 AS s, ${keyCols}, ${m} FROM ${o.table} WHERE ${w} AND (${keyCols}) IN (${this.tracked.map((t) => tuple(t.key)).join(', ')}) ORDER BY s DESC LIMIT 10000`,
        );
        for (const r of per.rows) {
          const p = hist.get(Number(r[0]));
          if (!p) continue;
          const key = Object.fromEntries(cols.map((c, i) => [c.name, r[i + 1]]));
          p.byKey.set(keyID(key, cols), r[cols.length + 1] === null ? null : Number(r[cols.length + 1]));
        }
      }
      if (gen !== this._gen) return;
      this.hist = hist;
      this.error = null;
      this._asked = true;
      // With the seam still open, complete means ClickHouse has every pane
      // it holds final.
      this.complete = Number.isFinite(this.seam) ? watermark >= this.seam : totals.rows.every((r) => Number(r[2]) === 1);
    } catch (e) {
      if (gen !== this._gen) return;
      this.error = e;
      this.complete = false;
      // A refusal of the query (no sql:read, an unknown table) does not
      // heal by asking again soon.
      if (e instanceof QueryError && e.status >= 400 && e.status < 500) {
        this._changed();
        return;
      }
    }
    this._changed();
    if (!this.complete && !this._stopped) this._timer = setTimeout(() => this._history(), o.retryMs);
  }

  _track(keys) {
    const cols = this.live.keys;
    this.tracked = keys.map((k) => ({ key: k, id: keyID(k, cols), label: cols.map((c) => String(k[c.name])).join(' · ') }));
    for (const [s, p] of this.livePanes) {
      const vals = this._rowsOf.get(s);
      for (const t of this.tracked) if (vals.has(t.id)) p.byKey.set(t.id, vals.get(t.id).v);
    }
  }

  _changed() {
    if (!this.tracked && !this.opts.keys && this._asked && this.hist.size === 0 && this.livePanes.size) {
      // No history to choose the top groups from: take them from live.
      const sums = new Map();
      const keys = new Map();
      for (const pane of this.live.panes(this.window).values()) {
        for (const [id, r] of pane) {
          if (!this._matches(r.key) || typeof r.values[this.metric] !== 'number') continue;
          sums.set(id, (sums.get(id) || 0) + r.values[this.metric]);
          keys.set(id, r.key);
        }
      }
      const top = [...sums].sort((a, b) => b[1] - a[1]).slice(0, this.opts.top);
      if (top.length) this._track(top.map(([id]) => keys.get(id)));
    }
    this._emit('change', this);
  }

  // panes returns the joined panes of the range, oldest first:
  // [{start, total, final, source: "history" | "live", values: Map(id -> value)}].
  panes() {
    const out = new Map();
    for (const [s, p] of this.hist) {
      if (s < this.seam) out.set(s, { start: s, total: p.total, final: p.final, source: 'history', values: p.byKey });
    }
    const kind = this._kind();
    for (const [s, p] of this.livePanes) {
      let total = p.total;
      if (total === null) {
        for (const x of this._rowsOf.get(s).values()) total = merge(kind, total, x.v);
      }
      out.set(s, { start: s, total, final: p.open === 0, source: 'live', values: p.byKey });
    }
    const starts = [...out.keys()].sort((a, b) => a - b);
    const last = starts.length ? starts[starts.length - 1] : 0;
    return starts.filter((s) => s > last - this.opts.rangeMs).map((s) => out.get(s));
  }

  // columns returns the joined panes as uPlot-style columns: [xs (Unix
  // seconds), totals, then one array per tracked group], with labels.
  columns() {
    const ps = this.panes();
    const tracked = this.tracked || [];
    const data = [ps.map((p) => p.start / 1000), ps.map((p) => p.total)];
    for (const t of tracked) data.push(ps.map((p) => (p.values.has(t.id) ? p.values.get(t.id) : null)));
    return { data, labels: ['total', ...tracked.map((t) => t.label)], sources: ps.map((p) => p.source) };
  }
}
