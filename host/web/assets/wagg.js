// wagg.js: a small client for wagg's live protocol (docs/protocol.md).
// No dependencies, no build step: import it as an ES module.
//
//   import { Live } from './wagg.js';
//   const live = new Live('ws://host/v1/live', { aggregator: 'votes' }, {
//     onChange: (live) => draw(live.rows()),
//     onStatus: (status, detail) => show(status),
//   });
//   live.start();
//
// It subscribes, applies the snapshot and then each delta after checking that
// the delta continues exactly where the state is (same epoch, prev == seq),
// and reconnects with backoff after any close or gap, resuming from the last
// (epoch, seq) it holds: the hub answers with the missed deltas or a fresh
// snapshot. Statuses: "connecting", "live", "reconnecting", "error".

const AUTH_CODES = new Set(['unauthorized', 'forbidden', 'token_expired']);
const PING_EVERY_MS = 20000; // browsers cannot send WebSocket pings; the protocol has its own
const SILENCE_MS = 45000;    // no frame for this long: the connection is dead

export class Live {
  // url: the hub's WebSocket URL. sub: the subscribe fields (aggregator,
  // windows, keys, panes, interval_ms). opts: onChange(live), onStatus(status,
  // detail), onError(frame), keepClosed (closed panes of each tumbling or
  // hopping window kept, the oldest dropped first; 0 = as many as the hub
  // keeps), minBackoffMs, maxBackoffMs.
  constructor(url, sub, opts = {}) {
    this.url = url;
    this.sub = Object.assign({}, sub);
    this.opts = Object.assign({ keepClosed: 0, minBackoffMs: 250, maxBackoffMs: 10000 }, opts);
    this.epoch = null;
    this.seq = 0;
    this.windows = [];
    this.keys = [];
    this.metrics = [];
    this.live = false;
    this.state = new Map(); // window name -> Map(start -> Map(key JSON -> row))
    this.ws = null;
    this.stopped = true;
    this.backoff = this.opts.minBackoffMs;
    this.timer = null;
    this.pinger = null;
    this.lastFrame = 0;
    this.status = 'idle';
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
    if (this.ws) this.ws.close(1000, 'bye');
    this.ws = null;
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

  // panes returns Map(start -> Map(key JSON -> row)) of one window.
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
    if (this.opts.onStatus) this.opts.onStatus(s, detail);
  }

  _connect() {
    // A refused subscription stays visible while we retry.
    if (this.status !== 'error') this._status(this.epoch ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this._retry(String(e));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      const f = Object.assign({ type: 'subscribe' }, this.sub);
      if (this.epoch) f.resume = { epoch: this.epoch, seq: this.seq };
      ws.send(JSON.stringify(f));
      this.lastFrame = Date.now();
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this._keepalive(ws), PING_EVERY_MS);
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastFrame = Date.now();
      let f;
      try {
        f = JSON.parse(ev.data);
      } catch (e) {
        this._drop(ws, 'undecodable frame');
        return;
      }
      this._frame(ws, f);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearInterval(this.pinger);
      this.live = false;
      if (this.stopped) return;
      // 4009: the aggregator was redeployed; the old state means nothing.
      if (ev.code === 4009) this._forget();
      // 4010: the token expired. With opts.refreshToken (a function that
      // resolves to a new token) reconnect and resume; without, stop.
      if (ev.code === 4010) {
        if (!this.opts.refreshToken) {
          this._status('error', 'token expired: open the page again with a new #token=');
          return;
        }
        Promise.resolve(this.opts.refreshToken()).then((t) => {
          this.sub = Object.assign({}, this.sub, { token: t });
          this._retry('token refreshed');
        }, (e) => this._status('error', 'token refresh failed: ' + e));
        return;
      }
      this._retry(ev.reason || `closed (${ev.code})`);
    };
  }

  _keepalive(ws) {
    if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastFrame > SILENCE_MS) {
      this._drop(ws, 'no answer from the server');
      return;
    }
    ws.send('{"type":"ping"}');
  }

  // _drop abandons a connection and reconnects (resuming from the state held).
  _drop(ws, why) {
    if (ws !== this.ws) return;
    this.ws = null;
    clearInterval(this.pinger);
    this.live = false;
    try { ws.close(1000, 'reconnecting'); } catch (e) { /* already closed */ }
    if (!this.stopped) this._retry(why);
  }

  _retry(why) {
    clearTimeout(this.timer);
    const wait = this.backoff * (0.8 + 0.4 * Math.random());
    this.backoff = Math.min(this.backoff * 2, this.opts.maxBackoffMs);
    this._status(this.status === 'error' ? 'error' : 'reconnecting', why);
    this.timer = setTimeout(() => { if (!this.stopped) this._connect(); }, wait);
  }

  _forget() {
    this.epoch = null;
    this.seq = 0;
    this.state = new Map();
  }

  _frame(ws, f) {
    switch (f.type) {
      case 'snapshot':
        this.epoch = f.epoch;
        this.seq = f.seq;
        this.windows = f.windows || [];
        this.keys = f.keys || [];
        this.metrics = f.metrics || [];
        this.state = new Map();
        this._rows(f.rows);
        this._prune();
        this._live();
        break;
      case 'resumed':
        if (f.epoch !== this.epoch || f.seq !== this.seq) {
          this._forget();
          this._drop(ws, 'resume does not match the state held');
          return;
        }
        this._live();
        break;
      case 'delta':
        if (!this.live || f.epoch !== this.epoch) {
          this._forget();
          this._drop(ws, 'delta of another epoch');
          return;
        }
        if (f.prev !== this.seq) {
          // A gap: resume from what we hold; the hub fills it or snapshots.
          this._drop(ws, `gap: delta ${f.seq} follows ${f.prev}, we hold ${this.seq}`);
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
        if (this.opts.onError) this.opts.onError(f);
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
          this._drop(ws, `${f.code}: ${f.message}`);
        }
        return;
      default:
        return; // pong, and frame types of later versions
    }
    if (this.opts.onChange) this.opts.onChange(this);
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
      const k = JSON.stringify(r.key);
      const old = pane.get(k);
      if (old && !old.final) pane.open--;
      if (!r.final) pane.open++;
      pane.set(k, r);
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

// liveURL turns a path on this page's server into a WebSocket URL.
export function liveURL(path = '/v1/live', base = location.href) {
  const u = new URL(path, base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}
