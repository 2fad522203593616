// Unit tests of wagg.js in Node, with a scripted WebSocket and a scripted
// POST /v1/query: Live's continuity checks and resume, and Series' seam.
// Run by host/web's Go test (TestWaggJS); by hand: node --test test/
import { test } from 'node:test';
import assert from 'node:assert/strict';

// FakeWS records what the client sends; the test plays the server.
class FakeWS {
  static last = null;
  static OPEN = 1;
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeWS.last = this;
    setTimeout(() => {
      this.readyState = 1;
      this.onopen && this.onopen();
    }, 0);
  }
  send(s) {
    this.sent.push(JSON.parse(s));
  }
  close(code, reason) {
    this.readyState = 3;
    setTimeout(() => this.onclose && this.onclose({ code: code || 1000, reason: reason || '' }), 0);
  }
  frame(f) {
    this.onmessage({ data: JSON.stringify(f) });
  }
}
globalThis.WebSocket = FakeWS;

const { Live, Series } = await import('../assets/wagg.js');
const tick = () => new Promise((r) => setTimeout(r, 5));
async function until(cond, what) {
  for (let i = 0; i < 400; i++) {
    if (cond()) return;
    await tick();
  }
  assert.fail('timed out: ' + what);
}

const schema = {
  windows: [{ name: 'second', kind: 'tumbling', size_ms: 1000 }],
  keys: [{ name: 'poll_id', type: 'int64' }],
  metrics: [{ name: 'votes', kind: 'count', type: 'int64' }],
};
const row = (start, poll, votes, final = false) => ({ window: 'second', start, end: start + 1000, key: { poll_id: poll }, values: { votes }, final });
const snapshot = (epoch, seq, rows) => Object.assign({ type: 'snapshot', aggregator: 'a', epoch, seq, prev: 0, rows }, schema);
const delta = (epoch, seq, prev, rows) => ({ type: 'delta', epoch, seq, prev, rows });

test('Live applies deltas that continue its state, and resumes after a gap', async () => {
  const live = new Live('ws://x/v1/live', { aggregator: 'a' }, { minBackoffMs: 1, maxBackoffMs: 2 });
  live.start();
  await until(() => FakeWS.last && FakeWS.last.sent.length === 1, 'subscribe');
  const ws1 = FakeWS.last;
  assert.deepEqual(ws1.sent[0], { type: 'subscribe', aggregator: 'a' });
  ws1.frame(snapshot('e1', 5, [row(1000, 1, 3)]));
  ws1.frame(delta('e1', 6, 5, [row(1000, 1, 4)]));
  assert.equal(live.seq, 6);
  // A gap: the client drops the connection and resumes from what it holds.
  ws1.frame(delta('e1', 9, 8, [row(1000, 1, 9)]));
  await until(() => FakeWS.last !== ws1 && FakeWS.last.sent.length === 1, 'resubscribe');
  assert.deepEqual(FakeWS.last.sent[0].resume, { epoch: 'e1', seq: 6 });
  assert.equal(live.rows()[0].values.votes, 4, 'the delta after the gap was not applied');
  FakeWS.last.frame({ type: 'resumed', epoch: 'e1', seq: 6 });
  FakeWS.last.frame(delta('e1', 7, 6, [row(1000, 1, 5)]));
  assert.equal(live.rows()[0].values.votes, 5);
  assert.equal(live.resumes, 1);
  assert.equal(live.reconnects, 1);
  live.stop();
});

// scriptedQuery answers the Series' SQL from panes in "ClickHouse" and a
// checkpoint watermark.
function scriptedQuery(state) {
  globalThis.fetch = async (url, init) => {
    const { sql } = JSON.parse(init.body);
    state.asked.push(sql);
    let rows;
    if (sql.includes('_wagg_checkpoints')) rows = [[state.watermark, 4]];
    else {
      const lt = /window_start < toDateTime\((\d+)\)/.exec(sql);
      const ge = /window_start >= toDateTime\((\d+)\)/.exec(sql);
      const panes = state.panes.filter((p) => (!lt || p.start < lt[1] * 1000) && (!ge || p.start >= ge[1] * 1000));
      if (sql.includes(' IN (')) rows = panes.flatMap((p) => Object.entries(p.byPoll).map(([poll, v]) => [p.start, Number(poll), v]));
      else if (sql.startsWith('SELECT poll_id')) rows = [[1, 0]];
      else rows = panes.map((p) => [p.start, Object.values(p.byPoll).reduce((a, b) => a + b, 0), p.final ? 1 : 0]);
    }
    return { ok: true, text: async () => JSON.stringify({ columns: [], rows, truncated: false, elapsed_ms: 1 }) };
  };
}

test('Series takes each pane from one source, waits for complete history, and moves the seam on a fresh snapshot', async () => {
  const state = { asked: [], watermark: 0, panes: [] };
  for (let s = 1000; s <= 9000; s += 1000) state.panes.push({ start: s, final: true, byPoll: { 1: 10, 2: 1 } });
  scriptedQuery(state);
  const live = new Live('ws://x/v1/live', { aggregator: 'a', panes: 2 }, { minBackoffMs: 1, maxBackoffMs: 2 });
  const series = new Series({ live, table: 'db.a', window: 'second', metric: 'votes', rangeMs: 60_000, top: 1, retryMs: 5, base: 'http://x/' });
  live.start();
  await until(() => FakeWS.last && FakeWS.last.sent.length === 1 && FakeWS.last.sent[0].aggregator === 'a' && FakeWS.last.readyState === 1, 'subscribe');
  const ws = FakeWS.last;
  // The hub holds panes 8000 (closed) and 9000 (open); 7000 is still open
  // in the hub but not in a snapshot bounded to 2 panes.
  ws.frame(snapshot('e1', 10, [row(8000, 1, 10, true), row(8000, 2, 1, true), row(9000, 1, 4)]));
  assert.equal(series.seam, 8000);
  // A delta for the pane before the seam is history's: ignored.
  ws.frame(delta('e1', 11, 10, [row(7000, 1, 999)]));
  ws.frame(delta('e1', 12, 11, [row(9000, 2, 2)]));
  await until(() => state.asked.length >= 3, 'history asked');
  // The checkpoints are behind the seam: incomplete, asked again.
  await until(() => state.asked.filter((q) => q.includes('_wagg_checkpoints')).length >= 2, 'asked again');
  assert.equal(series.complete, false);
  state.watermark = 8000;
  await until(() => series.complete, 'complete');
  const panes = series.panes();
  assert.deepEqual(panes.map((p) => [p.start, p.total, p.source]), [
    [1000, 11, 'history'], [2000, 11, 'history'], [3000, 11, 'history'], [4000, 11, 'history'],
    [5000, 11, 'history'], [6000, 11, 'history'], [7000, 11, 'history'],
    [8000, 11, 'live'], [9000, 6, 'live'],
  ]);
  assert.deepEqual(series.tracked.map((t) => t.key), [{ poll_id: 1 }]);
  assert.equal(panes.find((p) => p.start === 8000).values.get('[1]'), 10);

  // Away: the hub moved on and no longer has the deltas; a fresh snapshot
  // holds 11000 and 12000. Pane 9000 changed meanwhile (now 7 + 3 in
  // ClickHouse): it must come from history again, and 10000 too.
  state.panes.push({ start: 10000, final: true, byPoll: { 1: 20 } });
  state.panes.find((p) => p.start === 9000).byPoll = { 1: 7, 2: 3 };
  state.watermark = 9000;
  ws.close(1006, 'network');
  await until(() => FakeWS.last !== ws && FakeWS.last.sent.length === 1, 'resubscribe');
  FakeWS.last.frame(snapshot('e2', 1, [row(11000, 1, 5, true), row(12000, 1, 1)]));
  assert.equal(series.seam, 11000);
  await until(() => !series.complete, 'history asked again');
  state.watermark = 11000;
  await until(() => series.complete && series.panes().some((p) => p.start === 10000), 'complete again');
  const after = new Map(series.panes().map((p) => [p.start, p]));
  assert.deepEqual([9000, 10000, 11000, 12000].map((s) => [after.get(s).total, after.get(s).source]), [
    [10, 'history'], [20, 'history'], [5, 'live'], [1, 'live'],
  ]);
  series.stop();
  live.stop();
});
