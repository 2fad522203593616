// The AssemblyScript SDK for wagg aggregators (ABI v1, abi/ABI.md).
//
// An aggregator declares its typed input fields, group key columns and
// metrics, and folds batches of records into groups:
//
//   import { Spec, Batch, Groups, register } from "../../../sdk/assemblyscript/assembly";
//   export * from "../../../sdk/assemblyscript/assembly/exports";
//
//   let poll: i32, option: i32, votes: i32;
//
//   function define(s: Spec): void {
//     poll = s.inputInt64("poll_id");
//     option = s.inputString("option");
//     s.keyInt64("poll_id");
//     s.keyString("option");
//     votes = s.count("votes");
//   }
//
//   function aggregate(b: Batch, g: Groups): void {
//     for (let i: u32 = 0; i < b.length; i++) {
//       g.at(b.time(i)).int64(b.int64(poll, i)).string(b, option, i).add(votes, 1);
//     }
//   }
//
//   register(define, aggregate);
//
// The SDK keeps the state per window and group, emits the changed groups at
// each flush, marks closed windows final, and snapshots and restores the
// state in the same layout as the Go, C and Rust SDKs, so an aggregator
// holds no state of its own and replays exactly. Build with
//   asc votes.ts -O3 --runtime incremental --exportStart _initialize --use abort=
// (sdk/assemblyscript/README.md).

// ---- status codes (abi/ABI.md "Error codes") ----

export const OK: i32 = 0;
export const ERR_BAD_INPUT: i32 = -1;
export const ERR_SCHEMA: i32 = -2;
export const ERR_NOT_READY: i32 = -3;
export const ERR_AGGREGATE: i32 = -4;

const T_INT64: u8 = 0;
const T_FLOAT64: u8 = 1;
const T_STRING: u8 = 2;
const TYPE_NAMES: string[] = ["int64", "float64", "string"];

const OP_ADD: u8 = 0;
const OP_MIN: u8 = 1;
const OP_MAX: u8 = 2;
const OP_AVG: u8 = 3; // a sum whose count follows it
const OP_DISTINCT: u8 = 4; // a sketch, whose index in the pane's sketches is the value

const W_GLOBAL: u8 = 0;
const W_TUMBLING: u8 = 1;
const W_HOPPING: u8 = 2;

const BATCH_MAGIC: u32 = 0x31424757; // "WGB1"
const ROWS_MAGIC: u32 = 0x31524757; // "WGR1"
const SNAP_MAGIC: u32 = 0x31534757; // "WGS1"

// ---- raw growable bytes (unmanaged memory, so the host may read it) ----

/** @internal */
export class Buf {
  ptr: usize = 0;
  len: u32 = 0;
  cap: u32 = 0;

  @inline reserve(n: u32): void {
    if (this.cap - this.len < n) this.grow(n);
  }
  grow(n: u32): void {
    let c = this.cap ? this.cap : 256;
    while (c - this.len < n) c *= 2;
    this.ptr = this.ptr ? heap.realloc(this.ptr, c) : heap.alloc(c);
    this.cap = c;
  }
  @inline u8(v: u8): void { this.reserve(1); store<u8>(this.ptr + this.len, v); this.len += 1; }
  @inline u32(v: u32): void { this.reserve(4); store<u32>(this.ptr + this.len, v); this.len += 4; }
  @inline u64(v: u64): void { this.reserve(8); store<u64>(this.ptr + this.len, v); this.len += 8; }
  @inline bytes(p: usize, n: u32): void { this.reserve(n); memory.copy(this.ptr + this.len, p, n); this.len += n; }
  str(s: string): void {
    const b = String.UTF8.encode(s);
    this.bytes(changetype<usize>(b), b.byteLength);
  }
}

// ---- the spec ----

class FieldDef {
  constructor(public name: string, public type: u8, public path: string | null = null, public optional: bool = false) {}
}
class MetricDef {
  constructor(public name: string, public kind: string, public type: u8, public op: u8) {}
  identity(): u64 {
    if (this.op == OP_MIN) return this.type == T_FLOAT64 ? reinterpret<u64>(Infinity) : <u64>i64.MAX_VALUE;
    if (this.op == OP_MAX) return this.type == T_FLOAT64 ? reinterpret<u64>(-Infinity) : <u64>i64.MIN_VALUE;
    return 0;
  }
}

/** What an aggregator declares in its define function; each call returns
 * the index that the batch and group calls take. */
export class Spec {
  input: FieldDef[] = [];
  raw: bool = false;
  keyNames: string[] = [];
  keyTypes: u8[] = [];
  metrics: MetricDef[] = [];
  version: i32 = 0; // 0: undeclared (state version 1)
  acceptsList: i32[] = [];
  migratesList: i32[] = [];

  private field(name: string, t: u8): i32 { this.input.push(new FieldDef(name, t)); return this.input.length - 1; }
  /** An integer input field read from the JSON key name. */
  inputInt64(name: string): i32 { return this.field(name, T_INT64); }
  /** A number input field read from the JSON key name. */
  inputFloat64(name: string): i32 { return this.field(name, T_FLOAT64); }
  /** A string input field read from the JSON key name. */
  inputString(name: string): i32 { return this.field(name, T_STRING); }
  /** Reads field f from another top-level JSON key. */
  from(f: i32, path: string): void { this.input[f].path = path; }
  /** A missing field f reads as its zero value instead of being dead-lettered. */
  optional(f: i32): void { this.input[f].optional = true; }
  /** Also hand the aggregator each record's raw value (Batch.raw). */
  inputRaw(): void { this.raw = true; }

  /** Group key columns, filled by Key's methods in this order. */
  keyInt64(name: string): void { this.keyNames.push(name); this.keyTypes.push(T_INT64); }
  keyFloat64(name: string): void { this.keyNames.push(name); this.keyTypes.push(T_FLOAT64); }
  keyString(name: string): void { this.keyNames.push(name); this.keyTypes.push(T_STRING); }

  private metric(name: string, kind: string, t: u8, op: u8): i32 {
    this.metrics.push(new MetricDef(name, kind, t, op));
    return this.metrics.length - 1;
  }
  /** An int64 counter, merged by sum across partitions. */
  count(name: string): i32 { return this.metric(name, "count", T_INT64, OP_ADD); }
  sum(name: string): i32 { return this.metric(name, "sum", T_INT64, OP_ADD); }
  sumFloat(name: string): i32 { return this.metric(name, "sum", T_FLOAT64, OP_ADD); }
  min(name: string): i32 { return this.metric(name, "min", T_INT64, OP_MIN); }
  minFloat(name: string): i32 { return this.metric(name, "min", T_FLOAT64, OP_MIN); }
  max(name: string): i32 { return this.metric(name, "max", T_INT64, OP_MAX); }
  maxFloat(name: string): i32 { return this.metric(name, "max", T_FLOAT64, OP_MAX); }
  /** The version of what the aggregator's groups mean (1 when undeclared):
   * bump it when a new build would count on differently from the groups an
   * older one left, and say what becomes of the older versions with
   * accepts (as they are) or migrates (converted by the migrate function
   * given to register); abi/ABI.md "State versions". */
  stateVersion(v: i32): void { this.version = v; }
  accepts(v: i32): void { this.acceptsList.push(v); }
  migrates(v: i32): void { this.migratesList.push(v); }

  /** An average of float64 values, carried as two metrics the host merges
   * exactly across partitions: name_sum (a float64 sum) and name_count (a
   * count); the average is their quotient, live and in ClickHouse.
   * Key.addFloat folds a value into both. */
  average(name: string): i32 {
    const m = this.metric(name + "_sum", "sum", T_FLOAT64, OP_AVG);
    this.metric(name + "_count", "count", T_INT64, OP_ADD);
    return m;
  }
  /** A count of distinct values (unique users, say), estimated from a
   * HyperLogLog sketch that the host merges across partitions (abi/ABI.md
   * "Distinct counts"); fed by Key.addDistinct (int64) or
   * Key.addDistinctString / addDistinctStr, one of the two. */
  distinct(name: string): i32 { return this.metric(name, "distinct", T_INT64, OP_DISTINCT); }

  toJSON(): string {
    let s = '{"abi":1,"input":[';
    for (let i = 0; i < this.input.length; i++) {
      const f = this.input[i];
      if (i) s += ",";
      s += '{"name":' + quote(f.name) + ',"type":"' + TYPE_NAMES[f.type] + '"';
      const p = f.path;
      if (p !== null) s += ',"path":' + quote(p);
      if (f.optional) s += ',"optional":true';
      s += "}";
    }
    s += "]";
    if (this.raw) s += ',"raw":true';
    s += ',"keys":[';
    for (let i = 0; i < this.keyNames.length; i++) {
      if (i) s += ",";
      s += '{"name":' + quote(this.keyNames[i]) + ',"type":"' + TYPE_NAMES[this.keyTypes[i]] + '"}';
    }
    s += '],"metrics":[';
    for (let i = 0; i < this.metrics.length; i++) {
      const m = this.metrics[i];
      if (i) s += ",";
      s += '{"name":' + quote(m.name) + ',"kind":"' + m.kind + '","type":"' + TYPE_NAMES[m.type] + '"}';
    }
    s += "]";
    if (this.version || this.acceptsList.length || this.migratesList.length) {
      s += ',"state":{"version":' + (this.version ? this.version : 1).toString();
      if (this.acceptsList.length) s += ',"accepts":[' + this.acceptsList.join(",") + "]";
      if (this.migratesList.length) s += ',"migrates":[' + this.migratesList.join(",") + "]";
      s += "}";
    }
    return s + "}";
  }
}

function quote(v: string): string {
  let s = '"';
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c == 0x22 || c == 0x5c) s += "\\" + String.fromCharCode(c);
    else if (c < 0x20) s += "\\u00" + (c < 16 ? "0" : "") + c.toString(16);
    else s += String.fromCharCode(c);
  }
  return s + '"';
}

// ---- the batch, read in place from the host's encoding ----

/** A batch of records in the declared typed columns, valid during the
 * aggregate call only. */
export class Batch {
  length: u32 = 0;
  times: usize = 0;
  cols: StaticArray<usize> = new StaticArray<usize>(65); // values, or string data
  offs: StaticArray<usize> = new StaticArray<usize>(65); // string offsets

  /** Record i's event time, Unix ms. */
  @inline time(i: u32): i64 { return load<i64>(this.times + (<usize>i << 3)); }
  /** Record i's value of an int64 field. */
  @inline int64(f: i32, i: u32): i64 { return load<i64>(unchecked(this.cols[f]) + (<usize>i << 3)); }
  /** Record i's value of a float64 field. */
  @inline float64(f: i32, i: u32): f64 { return load<f64>(unchecked(this.cols[f]) + (<usize>i << 3)); }
  /** The address and length of record i's bytes of a string field. */
  @inline strPtr(f: i32, i: u32): usize { return unchecked(this.cols[f]) + load<u32>(unchecked(this.offs[f]) + (<usize>i << 2)); }
  @inline strLen(f: i32, i: u32): u32 {
    const o = unchecked(this.offs[f]) + (<usize>i << 2);
    return load<u32>(o + 4) - load<u32>(o);
  }
  /** Record i's value of a string field, decoded (allocates: for logic,
   * not for keys; Key.string takes the bytes directly). */
  string(f: i32, i: u32): string { return String.UTF8.decodeUnsafe(this.strPtr(f, i), this.strLen(f, i)); }
  /** Record i's raw value, with Spec.inputRaw. */
  raw(i: u32): string { return this.string(spec.input.length, i); }
}

// ---- sketches: a distinct metric's HyperLogLog (abi/ABI.md "Distinct counts") ----
// Sparse, the set registers as index<<6 | rank in increasing index, while
// at most SK_SPARSE_MAX are set; dense, a byte per register, beyond.

const SK_P: u32 = 12;
const SK_M: u32 = 1 << SK_P;
const SK_MAX_RANK: u32 = 64 - SK_P + 1;
const SK_SPARSE_MAX: i32 = <i32>(SK_M / 4 - 1);

class Sketch {
  entries: u32[] = [];
  regs: Uint8Array | null = null;

  addHash(h: u64): void {
    const idx = <u32>(h >> (64 - SK_P));
    const rank = <u32>clz<u64>((h << SK_P) | (<u64>1 << (SK_P - 1))) + 1;
    const regs = this.regs;
    if (regs !== null) {
      if (<u32>regs[idx] < rank) regs[idx] = <u8>rank;
      return;
    }
    const e = (idx << 6) | rank;
    const a = this.entries;
    let lo = 0, hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((unchecked(a[mid]) >> 6) < idx) lo = mid + 1; else hi = mid;
    }
    if (lo < a.length && (a[lo] >> 6) == idx) {
      if (a[lo] < e) a[lo] = e;
      return;
    }
    a.push(e);
    for (let i = a.length - 1; i > lo; i--) a[i] = a[i - 1];
    a[lo] = e;
    if (a.length > SK_SPARSE_MAX) {
      const r = new Uint8Array(SK_M);
      for (let i = 0; i < a.length; i++) r[a[i] >> 6] = <u8>(a[i] & 63);
      this.regs = r;
      this.entries = [];
    }
  }

  /** Appends the row form: u32 length, then the entries or the registers. */
  put(b: Buf): void {
    const regs = this.regs;
    if (regs !== null) {
      b.u32(SK_M);
      b.bytes(regs.dataStart, SK_M);
      return;
    }
    b.u32(<u32>this.entries.length * 4);
    for (let i = 0; i < this.entries.length; i++) b.u32(this.entries[i]);
  }

  /** Reads the row form's body (n bytes at p) with abi.DecodeSketch's
   * checks, one encoding per sketch; false when it does not decode. */
  read(p: usize, n: u32): bool {
    if (n == SK_M) {
      let set = 0;
      for (let i: u32 = 0; i < SK_M; i++) {
        const r = <u32>load<u8>(p + i);
        if (r > SK_MAX_RANK) return false;
        if (r) set++;
      }
      if (set <= SK_SPARSE_MAX) return false;
      const regs = new Uint8Array(SK_M);
      memory.copy(regs.dataStart, p, SK_M);
      this.regs = regs;
      return true;
    }
    if (n > SK_M || n % 4) return false;
    for (let i: u32 = 0; i < n / 4; i++) {
      const e = load<u32>(p + 4 * i), r = e & 63;
      if (r == 0 || r > SK_MAX_RANK || (e >> 6) >= SK_M) return false;
      if (i > 0 && (e >> 6) <= (load<u32>(p + 4 * i - 4) >> 6)) return false;
      this.entries.push(e);
    }
    return true;
  }
}

/** FNV-1a 64 of n bytes at p, then MurmurHash3's finalizer. */
function sketchHash(p: usize, n: u32): u64 {
  let h: u64 = 0xcbf29ce484222325;
  for (let i: u32 = 0; i < n; i++) {
    h ^= <u64>load<u8>(p + i);
    h *= 0x100000001b3;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccd;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53;
  return h ^ (h >> 33);
}

// ---- windows and panes ----

class Window {
  kind: u8 = W_GLOBAL;
  size: i64 = 0;
  slide: i64 = 0;
  name: string = "";
}

class Pane {
  keys: Buf = new Buf();
  ends: u32[] = [];
  hashes: u64[] = [];
  vals: u64[] = [];
  marked: u8[] = [];
  // link[g]: the same key's group + 1 in the pane of the first global
  // window, 0 while unknown (Key.resolve)
  link: u32[] = [];
  dirty: u32[] = [];
  slots: Uint32Array = new Uint32Array(16);
  mask: u32 = 15;
  sketches: Sketch[] = []; // a distinct metric's value in vals is its index here
  constructor(public start: i64) {}

  @inline get n(): u32 { return <u32>this.ends.length; }
  @inline keyPtr(g: u32): usize { return this.keys.ptr + <usize>(g ? unchecked(this.ends[g - 1]) : 0); }
  @inline keyLen(g: u32): u32 { return unchecked(this.ends[g]) - (g ? unchecked(this.ends[g - 1]) : 0); }

  /** The group of the key + 1, or 0 with the empty slot in lastSlot. */
  @inline lookup(key: usize, len: u32, h: u64): u32 {
    let i = <u32>h & this.mask;
    while (true) {
      const s = unchecked(this.slots[i]);
      if (s == 0) break;
      const g = s - 1;
      if (unchecked(this.hashes[g]) == h && this.keyLen(g) == len && keyEq(this.keyPtr(g), key, len)) return s;
      i = (i + 1) & this.mask;
    }
    lastSlot = i;
    return 0;
  }

  insert(key: usize, len: u32, h: u64, slot: u32, idents: u64[]): u32 {
    const g = this.n;
    this.keys.bytes(key, len);
    this.ends.push(this.keys.len);
    this.hashes.push(h);
    for (let j = 0; j < idents.length; j++) this.vals.push(unchecked(idents[j]));
    for (let j = 0; j < distinctMetrics.length; j++) {
      this.vals[<i32>g * idents.length + distinctMetrics[j]] = <u64>this.sketches.length;
      this.sketches.push(new Sketch());
    }
    this.marked.push(0);
    this.link.push(0);
    this.slots[slot] = g + 1;
    if (this.n * 2 > this.mask + 1) {
      const size = (this.mask + 1) * 2;
      this.slots = new Uint32Array(size);
      this.mask = size - 1;
      for (let k: u32 = 0; k < this.n; k++) {
        let i = <u32>unchecked(this.hashes[k]) & this.mask;
        while (unchecked(this.slots[i])) i = (i + 1) & this.mask;
        unchecked((this.slots[i] = k + 1));
      }
    }
    return g;
  }

  @inline touch(g: u32): void {
    if (!unchecked(this.marked[g])) {
      unchecked((this.marked[g] = 1));
      this.dirty.push(g);
    }
  }
}

let lastSlot: u32 = 0;
let distinctMetrics: i32[] = []; // the distinct metrics, set at init

/** The last n < 8 bytes at p as a little-endian word, in at most three
 * loads: a loop per byte costs a meter check per byte in Wasm. */
@inline function tail(p: usize, n: u32): u64 {
  let t: u64 = 0, sh: u64 = 0;
  if (n & 4) { t = <u64>load<u32>(p); p += 4; sh = 32; }
  if (n & 2) { t |= <u64>load<u16>(p) << sh; p += 2; sh += 16; }
  if (n & 1) t |= <u64>load<u8>(p) << sh;
  return t;
}

@inline function keyEq(a: usize, b: usize, n: u32): bool {
  while (n >= 8) {
    if (load<u64>(a) != load<u64>(b)) return false;
    a += 8; b += 8; n -= 8;
  }
  return tail(a, n) == tail(b, n);
}

/** The Go SDK's hashKey: 8 bytes at a time, multiply-rotate. */
@inline function hashKey(b: usize, n: u32): u64 {
  const m1: u64 = 0x9e3779b97f4a7c15, m2: u64 = 0xc2b2ae3d27d4eb4f;
  let h = <u64>n * m1;
  while (n >= 8) {
    h = rotl<u64>((h ^ load<u64>(b)) * m2, 31);
    b += 8; n -= 8;
  }
  h = (h ^ tail(b, n)) * m2;
  h ^= h >> 29;
  h *= m1;
  return h ^ (h >> 32);
}

class WState {
  panes: Pane[] = []; // in increasing start
  last: Pane | null = null;
  latest: i64 = 0; // the latest start found for the last record's time
  haveLatest: bool = false;
}

/** The groups of the deployment; aggregators reach them through at. */
export class Groups {
  windows: Window[] = [];
  ws: WState[] = [];
  idents: u64[] = [];
  maxGroups: i64 = 0;
  linkW: i32 = -1; // the first global window, if one follows another window
  key: Key | null = null;
  err: string | null = null; // the first misuse in this batch

  /** Starts the group key of a record with event time ts. Fill the key
   * columns in declared order with Key's methods, then update metrics. */
  @inline at(ts: i64): Key {
    let k = this.key;
    if (k === null) { k = new Key(this); this.key = k; }
    k.ts = ts; k.col = 0; k.resolved = false; k.buf.len = 0; k.failed = false;
    return k;
  }

  misuse(msg: string): void { if (this.err === null) this.err = msg; }

  pane(w: i32, start: i64): Pane {
    const s = unchecked(this.ws[w]);
    const last = s.last;
    if (last !== null && last.start == start) return last;
    let lo = 0, hi = s.panes.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (unchecked(s.panes[mid]).start < start) lo = mid + 1; else hi = mid;
    }
    let p: Pane;
    if (lo == s.panes.length || s.panes[lo].start != start) {
      p = new Pane(start);
      s.panes.push(p); // then shifted into place, keeping starts in order
      for (let i = s.panes.length - 1; i > lo; i--) s.panes[i] = s.panes[i - 1];
      s.panes[lo] = p;
    } else {
      p = s.panes[lo];
    }
    s.last = p;
    return p;
  }

  clear(): void {
    for (let w = 0; w < this.ws.length; w++) this.ws[w] = new WState();
  }
}


/** A group key being built; see Groups.at. */
export class Key {
  ts: i64 = 0;
  col: i32 = 0;
  resolved: bool = false;
  failed: bool = false;
  buf: Buf = new Buf();
  // The record's groups: their panes (addresses, not references: a store of
  // a reference is a call to the collector's write barrier, and the panes
  // are held by Groups for as long as a record is built) and group indexes.
  tpanes: usize[] = [];
  tgroups: u32[] = [];
  ntargets: i32 = 0;
  constructor(public g: Groups) {}

  @inline private next(t: u8): bool {
    if (!this.failed && !this.resolved && this.col < spec.keyTypes.length && unchecked(spec.keyTypes[this.col]) == t) {
      this.col++;
      return true;
    }
    return this.misuse(t);
  }
  private misuse(t: u8): bool {
    if (this.failed) return false;
    this.failed = true;
    if (this.resolved) this.g.misuse("wagg: a key column filled after add: fill every key column first");
    else if (this.col >= spec.keyTypes.length) this.g.misuse("wagg: more key columns filled than the spec declares");
    else this.g.misuse("wagg: key column " + this.col.toString() + " is declared " + TYPE_NAMES[spec.keyTypes[this.col]] + ", but filled with " + TYPE_NAMES[t]);
    return false;
  }

  /** Fills the next key column, declared keyInt64. */
  @inline int64(v: i64): Key { if (this.next(T_INT64)) this.buf.u64(<u64>v); return this; }
  /** Fills the next key column, declared keyFloat64. */
  @inline float64(v: f64): Key { if (this.next(T_FLOAT64)) this.buf.u64(reinterpret<u64>(v)); return this; }
  /** Fills the next key column, declared keyString, with record i's bytes
   * of string field f. */
  @inline string(b: Batch, f: i32, i: u32): Key {
    if (this.next(T_STRING)) {
      const n = b.strLen(f, i);
      this.buf.u32(n);
      this.buf.bytes(b.strPtr(f, i), n);
    }
    return this;
  }
  /** Fills the next key column, declared keyString, with s. */
  str(s: string): Key {
    if (this.next(T_STRING)) {
      const e = String.UTF8.encode(s);
      this.buf.u32(e.byteLength);
      this.buf.bytes(changetype<usize>(e), e.byteLength);
    }
    return this;
  }

  /** Finds (or creates) the key's group in window w's pane at start, makes
   * it a target and returns it + 1; 0 on the host's limit. */
  private target(w: i32, start: i64, h: u64): u32 {
    const g = this.g;
    const p = g.pane(w, start);
    const key = this.buf.ptr, len = this.buf.len;
    let s = p.lookup(key, len, h);
    let i: u32;
    if (s) {
      i = s - 1;
    } else {
      if (g.maxGroups > 0 && <i64>p.n >= g.maxGroups) {
        g.misuse("wagg: too many groups in one pane: the pane holds the host's limit (sandbox.max_groups_per_pane)");
        return 0;
      }
      i = p.insert(key, len, h, lastSlot, g.idents);
    }
    this.push(p, i);
    return i + 1;
  }

  @inline private push(p: Pane, i: u32): void {
    p.touch(i);
    if (this.ntargets == this.tpanes.length) {
      this.tpanes.push(changetype<usize>(p));
      this.tgroups.push(i);
    } else {
      unchecked((this.tpanes[this.ntargets] = changetype<usize>(p)));
      unchecked((this.tgroups[this.ntargets] = i));
    }
    this.ntargets++;
  }

  private resolve(): bool {
    if (this.failed) return false;
    if (this.resolved) return true;
    this.resolved = true;
    const g = this.g;
    if (this.col != spec.keyTypes.length) {
      this.failed = true;
      g.misuse("wagg: add before every key column was filled");
      return false;
    }
    const h = hashKey(this.buf.ptr, this.buf.len);
    this.ntargets = 0;
    const ts = this.ts;
    // The record's first group, in a tumbling window, links to its group in
    // the first global window's one pane, which lives as long as the panes
    // do: a key seen again in the same pane skips the second lookup.
    let lp: Pane | null = null;
    let lg: u32 = 0;
    for (let w = 0; w < g.windows.length; w++) {
      const win = unchecked(g.windows[w]);
      if (win.kind == W_GLOBAL) {
        if (w != g.linkW || lp === null) {
          this.target(w, 0, h);
        } else {
          const l = unchecked(lp.link[lg]);
          if (l) this.push(g.pane(w, 0), l - 1);
          else unchecked((lp.link[lg] = this.target(w, 0, h)));
        }
        continue;
      }
      const st = unchecked(g.ws[w]);
      let s: i64;
      // Records come mostly in time order: reuse the last latest start
      // while ts lies within one slide of it, and divide otherwise.
      if (st.haveLatest && ts >= st.latest && <u64>ts - <u64>st.latest < <u64>win.slide) {
        s = st.latest;
      } else {
        let m = ts % win.slide;
        if (m < 0) m += win.slide;
        if (ts < i64.MIN_VALUE + m) continue; // no window holds ts
        s = ts - m;
        st.latest = s;
        st.haveLatest = true;
      }
      if (win.kind == W_TUMBLING) { // size == slide: the one window
        const i = this.target(w, s, h);
        if (lp === null && i) { lp = changetype<Pane>(unchecked(this.tpanes[this.ntargets - 1])); lg = i - 1; }
        continue;
      }
      while (ts - s < win.size) { // latest first, as abi.Window.Starts
        this.target(w, s, h);
        if (s < i64.MIN_VALUE + win.slide) break;
        s -= win.slide;
      }
    }
    // (a string's === is a comparison of its characters: test the reference)
    if (changetype<usize>(g.err) != 0) { this.failed = true; return false; }
    return true;
  }

  @inline private check(m: i32, float: bool): bool {
    if (m < 0 || m >= spec.metrics.length || (spec.metrics[m].type == T_FLOAT64) != float || spec.metrics[m].op == OP_DISTINCT) {
      this.g.misuse(float ? "wagg: add_float on a metric that is not float64" : "wagg: add on a metric that is not an int64 count, sum, min or max");
      return false;
    }
    return true;
  }

  /** Folds an int64 value (hashed as its 8 little-endian bytes) into a
   * distinct metric of the key's groups. */
  addDistinct(m: i32, v: i64): Key {
    const t = memory.data(8);
    store<i64>(t, v);
    return this.addDistinctHash(m, sketchHash(t, 8));
  }
  /** Folds record i's bytes of string field f into a distinct metric. */
  addDistinctString(m: i32, b: Batch, f: i32, i: u32): Key { return this.addDistinctHash(m, sketchHash(b.strPtr(f, i), b.strLen(f, i))); }
  /** Folds the UTF-8 bytes of s into a distinct metric. */
  addDistinctStr(m: i32, s: string): Key {
    const e = String.UTF8.encode(s);
    return this.addDistinctHash(m, sketchHash(changetype<usize>(e), e.byteLength));
  }

  private addDistinctHash(m: i32, h: u64): Key {
    if (!this.resolve()) return this;
    if (m < 0 || m >= spec.metrics.length || spec.metrics[m].op != OP_DISTINCT) {
      this.g.misuse("wagg: addDistinct on a metric that is not distinct");
      return this;
    }
    const nm = spec.metrics.length;
    for (let t = 0; t < this.ntargets; t++) {
      const p = changetype<Pane>(unchecked(this.tpanes[t]));
      p.sketches[<i32>p.vals[<i32>unchecked(this.tgroups[t]) * nm + m]].addHash(h);
    }
    return this;
  }

  /** Folds an int64 value into an int64 metric of the key's groups: a count
   * or sum adds it, a min or max keeps the extreme. */
  add(m: i32, v: i64): Key {
    if (!this.resolve() || !this.check(m, false)) return this;
    const op = unchecked(spec.metrics[m]).op, nm = spec.metrics.length;
    for (let t = 0; t < this.ntargets; t++) {
      const vals = changetype<Pane>(unchecked(this.tpanes[t])).vals;
      const j = <i32>unchecked(this.tgroups[t]) * nm + m;
      const cur = <i64>unchecked(vals[j]);
      unchecked((vals[j] = <u64>(op == OP_MIN ? (v < cur ? v : cur) : op == OP_MAX ? (v > cur ? v : cur) : cur + v)));
    }
    return this;
  }

  /** Folds a float64 value into a float64 metric. */
  addFloat(m: i32, v: f64): Key {
    if (!this.resolve() || !this.check(m, true)) return this;
    const op = unchecked(spec.metrics[m]).op, nm = spec.metrics.length;
    for (let t = 0; t < this.ntargets; t++) {
      const vals = changetype<Pane>(unchecked(this.tpanes[t])).vals;
      const j = <i32>unchecked(this.tgroups[t]) * nm + m;
      const cur = reinterpret<f64>(unchecked(vals[j]));
      unchecked((vals[j] = reinterpret<u64>(op == OP_MIN ? goMin(cur, v) : op == OP_MAX ? goMax(cur, v) : cur + v)));
      if (op == OP_AVG) unchecked((vals[j + 1] += 1)); // the count follows the sum
    }
    return this;
  }
}

// Go's math.Min and math.Max: NaN wins, -0 is below +0.
function goMin(a: f64, b: f64): f64 {
  if (isNaN(a) || isNaN(b)) return isNaN(a) ? a : b;
  if (a == 0 && b == 0) return (reinterpret<u64>(a) >> 63) ? a : b;
  return a < b ? a : b;
}
function goMax(a: f64, b: f64): f64 {
  if (isNaN(a) || isNaN(b)) return isNaN(a) ? a : b;
  if (a == 0 && b == 0) return (reinterpret<u64>(a) >> 63) ? b : a;
  return a > b ? a : b;
}

// ---- registration and the engine ----

/** @internal */ export let spec: Spec = new Spec();
let aggregateFn: ((b: Batch, g: Groups) => void) | null = null;
let migrateFn: ((old: OldGroup, g: NewGroup) => bool) | null = null;
/** @internal */ export let groups: Groups | null = null;
let batch: Batch = new Batch();
/** @internal */ export const lastErr: Buf = new Buf();

/** Installs the aggregator: call it once, at the top level of the entry
 * file. migrate converts the groups of a snapshot of an older state version
 * the spec migrates (Spec.migrates); see OldGroup. */
export function register(
  define: (s: Spec) => void,
  aggregate: (b: Batch, g: Groups) => void,
  migrate: ((old: OldGroup, g: NewGroup) => bool) | null = null,
): void {
  define(spec);
  aggregateFn = aggregate;
  migrateFn = migrate;
}

// ---- migrating a snapshot of an older state version (abi/ABI.md) ----

class OldMetric {
  constructor(public name: string, public kind: string, public type: u8) {}
}

/** What abi.Config.migrate_from says of the build whose snapshot is to be
 * migrated; null when snapshots are restored as they are. */
class From {
  version: i64 = 1;
  keyTypes: u8[] = [];
  metrics: OldMetric[] = [];
  carry: i32[] = []; // per current metric, the old one it starts from (-1: none)
}
let from: From | null = null;

/** A group of a snapshot of an older state version, read through the
 * metrics of the build that wrote it. Reused for the next group. */
export class OldGroup {
  version: i32 = 0;
  /** The index of the deployment's window the group belongs to. */
  window: i32 = 0;
  /** The start of the group's window instance, Unix ms (0 for a global one). */
  start: i64 = 0;
  keyPtr: usize = 0;
  keyLen: u32 = 0;
  vals: u64[] = []; // per old metric (a distinct one's unused)
  // A distinct metric is a sketch, not a value the hook reads.
  private index(name: string, t: u8): i32 {
    const ms = from!.metrics;
    for (let i = 0; i < ms.length; i++) if (ms[i].type == t && ms[i].name == name && ms[i].kind != "distinct") return i;
    return -1;
  }
  /** Whether the old build had an int64 metric called name. */
  hasInt64(name: string): bool { return this.index(name, T_INT64) >= 0; }
  /** The old int64 metric called name (0 when there is none). */
  int64(name: string): i64 {
    const i = this.index(name, T_INT64);
    return i < 0 ? 0 : <i64>this.vals[i];
  }
  /** Whether the old build had a float64 metric called name. */
  hasFloat64(name: string): bool { return this.index(name, T_FLOAT64) >= 0; }
  /** The old float64 metric called name (0 when there is none). */
  float64(name: string): f64 {
    const i = this.index(name, T_FLOAT64);
    return i < 0 ? 0 : reinterpret<f64>(this.vals[i]);
  }
  private col(c: i32): usize {
    let off: usize = 0;
    const ts = from!.keyTypes;
    for (let i = 0; i < c; i++) off += ts[i] == T_STRING ? 4 + <usize>load<u32>(this.keyPtr + off) : 8;
    return this.keyPtr + off;
  }
  /** Key column c, an int64 one. */
  keyInt64(c: i32): i64 { return load<i64>(this.col(c)); }
  /** Key column c, a float64 one. */
  keyFloat64(c: i32): f64 { return load<f64>(this.col(c)); }
  /** Key column c, a string one. */
  keyString(c: i32): string {
    const p = this.col(c);
    return String.UTF8.decodeUnsafe(p + 4, load<u32>(p));
  }
}

/** The current metric values of a group being migrated: they start with
 * the old values of the metrics of the same name, kind and type, the others
 * empty; set what changes. */
export class NewGroup {
  vals: u64[] = [];
  err: string | null = null;
  private check(m: i32, t: u8, avg: bool, call: string): bool {
    if (m >= 0 && m < spec.metrics.length && spec.metrics[m].type == t && (spec.metrics[m].op == OP_AVG) == avg && spec.metrics[m].op != OP_DISTINCT) return true;
    if (this.err === null) this.err = "wagg: migrate failed: NewGroup." + call + " does not set metric " + m.toString();
    return false;
  }
  /** Sets an int64 metric (a count, sum, min or max). */
  set(m: i32, v: i64): void { if (this.check(m, T_INT64, false, "set")) this.vals[m] = <u64>v; }
  /** Sets a float64 metric (a float sum, min or max). */
  setFloat(m: i32, v: f64): void { if (this.check(m, T_FLOAT64, false, "setFloat")) this.vals[m] = reinterpret<u64>(v); }
  /** Sets an average to the sum and the count of the values it averages. */
  setAverage(m: i32, sum: f64, count: i64): void {
    if (this.check(m, T_FLOAT64, true, "setAverage")) {
      this.vals[m] = reinterpret<u64>(sum);
      this.vals[m + 1] = <u64>count;
    }
  }
}

function parseType(r: Reader): u8 {
  const t = r.str();
  if (t == "int64") return T_INT64;
  if (t == "float64") return T_FLOAT64;
  if (t == "string") return T_STRING;
  r.ok = false;
  return T_INT64;
}

/** Reads migrate_from, an abi.Schema. */
function parseFrom(r: Reader): From | null {
  const f = new From();
  if (!r.lit(0x7b)) return null;
  if (r.lit(0x7d)) return f;
  do {
    const k = r.str();
    if (!r.ok || !r.lit(0x3a)) return null;
    if (k == "keys" || k == "metrics") {
      if (!r.lit(0x5b)) return null;
      if (r.lit(0x5d)) continue;
      do {
        if (!r.lit(0x7b)) return null;
        let name = "", kind = "", t: u8 = 0, typed = false;
        if (!r.lit(0x7d)) {
          do {
            const fk = r.str();
            if (!r.ok || !r.lit(0x3a)) return null;
            if (fk == "type") { t = parseType(r); typed = true; }
            else if (fk == "name") name = r.str();
            else if (fk == "kind") kind = r.str();
            else r.skip();
          } while (r.ok && r.lit(0x2c));
          if (!r.ok || !r.lit(0x7d)) return null;
        }
        if (!typed) return null;
        if (k == "keys") f.keyTypes.push(t);
        else f.metrics.push(new OldMetric(name, kind, t));
        if (f.keyTypes.length > 16 || f.metrics.length > 64) return null;
      } while (r.ok && r.lit(0x2c));
      if (!r.ok || !r.lit(0x5d)) return null;
    } else if (k == "state") {
      if (r.word("null")) continue;
      if (!r.lit(0x7b)) return null;
      if (r.lit(0x7d)) continue;
      do {
        const sk = r.str();
        if (!r.ok || !r.lit(0x3a)) return null;
        if (sk == "version") f.version = r.int();
        else r.skip();
      } while (r.ok && r.lit(0x2c));
      if (!r.ok || !r.lit(0x7d)) return null;
    } else r.skip();
  } while (r.ok && r.lit(0x2c));
  if (!r.ok || !r.lit(0x7d) || f.metrics.length == 0) return null;
  return f;
}

/** Fails the batch with the aggregator's own message (ErrAggregate). */
export function fail(g: Groups, msg: string): void { g.misuse(msg); }

/** @internal */
export function setError(code: i32, msg: string): i32 {
  lastErr.len = 0;
  lastErr.str(msg);
  return code;
}

let schemaJSON: ArrayBuffer | null = null;

/** @internal */
export function describe(): ArrayBuffer {
  let s = schemaJSON;
  if (s === null) { s = String.UTF8.encode(spec.toJSON()); schemaJSON = s; }
  return s;
}

// A small JSON reader for wagg_init's abi.Config, hostile input all the same.
class Reader {
  depth: i32 = 0;
  ok: bool = true;
  err: string | null = null;
  constructor(public p: usize, public end: usize) {}
  ws(): void {
    while (this.p < this.end) {
      const c = load<u8>(this.p);
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) break;
      this.p++;
    }
  }
  lit(c: u8): bool {
    this.ws();
    if (this.p < this.end && load<u8>(this.p) == c) { this.p++; return true; }
    return false;
  }
  word(w: string): bool {
    this.ws();
    const n = <usize>w.length;
    if (this.end - this.p < n) return false;
    for (let i: usize = 0; i < n; i++) if (load<u8>(this.p + i) != <u8>w.charCodeAt(<i32>i)) return false;
    this.p += n;
    return true;
  }
  /** A string's bytes; "" with esc set for one with escapes. */
  esc: bool = false;
  str(): string {
    this.esc = false;
    if (!this.lit(0x22)) { this.ok = false; return ""; }
    const start = this.p;
    while (this.p < this.end && load<u8>(this.p) != 0x22) {
      const c = load<u8>(this.p);
      if (c < 0x20) { this.ok = false; return ""; }
      if (c == 0x5c) { this.esc = true; this.p++; }
      this.p++;
    }
    if (this.p >= this.end) { this.ok = false; return ""; }
    const s = String.UTF8.decodeUnsafe(start, this.p - start);
    this.p++;
    return this.esc ? "" : s;
  }
  int(): i64 {
    this.ws();
    let neg = false;
    if (this.p < this.end && load<u8>(this.p) == 0x2d) { neg = true; this.p++; }
    if (this.p >= this.end || load<u8>(this.p) < 0x30 || load<u8>(this.p) > 0x39) { this.ok = false; return 0; }
    let u: u64 = 0;
    while (this.p < this.end && load<u8>(this.p) >= 0x30 && load<u8>(this.p) <= 0x39) {
      const d = <u64>(load<u8>(this.p++) - 0x30);
      if (u > (u64.MAX_VALUE - d) / 10) { this.ok = false; return 0; }
      u = u * 10 + d;
    }
    if (this.p < this.end) {
      const c = load<u8>(this.p);
      if (c == 0x2e || c == 0x65 || c == 0x45) { this.ok = false; return 0; }
    }
    if (neg ? u > <u64>i64.MAX_VALUE + 1 : u > <u64>i64.MAX_VALUE) { this.ok = false; return 0; }
    return neg ? <i64>(0 - u) : <i64>u;
  }
  skip(): void {
    this.ws();
    if (this.p >= this.end || ++this.depth > 64) { this.ok = false; return; }
    const c = load<u8>(this.p);
    if (c == 0x7b) {
      this.p++;
      if (!this.lit(0x7d)) {
        do { this.str(); if (!this.ok || !this.lit(0x3a)) { this.ok = false; return; } this.skip(); } while (this.ok && this.lit(0x2c));
        if (!this.lit(0x7d)) this.ok = false;
      }
    } else if (c == 0x5b) {
      this.p++;
      if (!this.lit(0x5d)) {
        do this.skip(); while (this.ok && this.lit(0x2c));
        if (!this.lit(0x5d)) this.ok = false;
      }
    } else if (c == 0x22) {
      this.str();
    } else if (c == 0x74 || c == 0x66 || c == 0x6e) {
      if (!(this.word("true") || this.word("false") || this.word("null"))) this.ok = false;
    } else {
      const start = this.p;
      while (this.p < this.end && "+-.eE0123456789".includes(String.fromCharCode(load<u8>(this.p)))) this.p++;
      if (this.p == start) this.ok = false;
    }
    this.depth--;
  }
}

function validName(s: string): bool {
  if (s.length == 0 || s.length > 63) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 0x61 && c <= 0x7a) || c == 0x5f || (i > 0 && c >= 0x30 && c <= 0x39))) return false;
  }
  return true;
}

function parseWindow(r: Reader): Window | null {
  let name = "", kind = "";
  let nameOk = false;
  let size: i64 = 0, slide: i64 = 0;
  if (!r.lit(0x7b)) { r.ok = false; return null; }
  if (!r.lit(0x7d)) {
    do {
      const k = r.str();
      if (!r.ok || !r.lit(0x3a)) { r.ok = false; return null; }
      if (k == "name") { name = r.str(); nameOk = !r.esc; }
      else if (k == "kind") kind = r.str();
      else if (k == "size_ms") size = r.int();
      else if (k == "slide_ms") slide = r.int();
      else r.skip();
      if (!r.ok) return null;
    } while (r.lit(0x2c));
    if (!r.lit(0x7d)) { r.ok = false; return null; }
  }
  const w = new Window();
  w.name = name;
  // abi.Window.Validate
  if (!nameOk || !validName(name)) { r.err = "wagg: window name: want lower-case letters, digits and _"; return null; }
  if (kind == "global") {
    if (size != 0 || slide != 0) { r.err = "wagg: a global window has no size or slide"; return null; }
    w.kind = W_GLOBAL;
    return w;
  } else if (kind == "tumbling") {
    if (slide != 0 && slide != size) { r.err = "wagg: a tumbling window has no slide"; return null; }
    w.kind = W_TUMBLING;
    slide = size;
  } else if (kind == "hopping") {
    if (slide <= 0 || slide % 1000 != 0) { r.err = "wagg: window slide: want a positive whole number of seconds"; return null; }
    if (size % slide != 0 || size / slide > 64) { r.err = "wagg: window size: want a multiple of the slide, at most 64 slides"; return null; }
    w.kind = W_HOPPING;
  } else {
    r.err = "wagg: window kind: want tumbling, hopping or global";
    return null;
  }
  if (size <= 0 || size % 1000 != 0) { r.err = "wagg: window size: want a positive whole number of seconds"; return null; }
  w.size = size;
  w.slide = slide;
  return w;
}

/** @internal wagg_init: reads an abi.Config and starts an empty state. */
export function init(p: usize, n: u32): i32 {
  const r = new Reader(p, p + n);
  let abi: i64 = -1, maxGroups: i64 = 0;
  const wins: Window[] = [];
  let mf: From | null = null;
  if (!r.lit(0x7b)) r.ok = false;
  else if (!r.lit(0x7d)) {
    do {
      const k = r.str();
      if (!r.ok || !r.lit(0x3a)) { r.ok = false; break; }
      if (k == "abi") abi = r.int();
      else if (k == "max_groups") maxGroups = r.int();
      else if (k == "migrate_from") {
        if (r.word("null")) continue;
        mf = parseFrom(r);
        if (mf === null) { r.ok = false; if (r.err === null) r.err = "wagg: config migrate_from: not the JSON of an abi.Schema"; break; }
      }
      else if (k == "windows") {
        wins.length = 0;
        if (r.word("null")) continue;
        if (!r.lit(0x5b)) { r.ok = false; break; }
        if (!r.lit(0x5d)) {
          do {
            if (wins.length == 255) return setError(ERR_BAD_INPUT, "wagg: more than 255 windows");
            const w = parseWindow(r);
            if (w === null) { r.ok = false; break; }
            wins.push(w);
          } while (r.lit(0x2c));
          if (r.ok && !r.lit(0x5d)) r.ok = false;
        }
      } else r.skip();
    } while (r.ok && r.lit(0x2c));
    if (r.ok && !r.lit(0x7d)) r.ok = false;
  }
  r.ws();
  if (r.ok && r.p != r.end) r.ok = false;
  if (!r.ok) {
    const e = r.err;
    return setError(ERR_BAD_INPUT, e !== null ? e : "wagg: config: not the JSON of an abi.Config");
  }
  if (abi != 1) return setError(ERR_BAD_INPUT, "wagg: the host speaks another ABI than 1");
  if (wins.length == 0) return setError(ERR_BAD_INPUT, "wagg: 0 windows, want 1 to 255");
  if (mf !== null) {
    if (!spec.migratesList.includes(<i32>mf.version)) {
      return setError(ERR_BAD_INPUT, "wagg: config migrate_from: a state version this build does not migrate");
    }
    if (migrateFn === null) return setError(ERR_BAD_INPUT, "wagg: the spec migrates older state versions but register got no migrate function");
    let same = mf.keyTypes.length == spec.keyTypes.length;
    for (let i = 0; same && i < spec.keyTypes.length; i++) same = mf.keyTypes[i] == spec.keyTypes[i];
    if (!same) return setError(ERR_BAD_INPUT, "wagg: config migrate_from: other key column types: a migration keeps the key's column types");
    for (let i = 0; i < spec.metrics.length; i++) {
      const m = spec.metrics[i];
      let c = -1;
      for (let k = 0; k < mf.metrics.length; k++) {
        const o = mf.metrics[k];
        if (o.name == m.name && o.kind == m.kind && o.type == m.type) { c = k; break; }
      }
      mf.carry.push(c);
    }
  }
  from = mf;
  const g = new Groups();
  g.windows = wins;
  for (let i = 0; i < wins.length; i++) g.ws.push(new WState());
  for (let i = 1; i < wins.length; i++) {
    if (wins[i].kind == W_GLOBAL) { g.linkW = i; break; }
  }
  distinctMetrics = [];
  for (let i = 0; i < spec.metrics.length; i++) {
    g.idents.push(spec.metrics[i].identity());
    if (spec.metrics[i].op == OP_DISTINCT) distinctMetrics.push(i);
  }
  g.maxGroups = maxGroups;
  groups = g;
  return OK;
}

@inline function pad8(k: u64): u64 { return (8 - k % 8) % 8; }

function zeros(p: usize, n: u64): bool {
  for (let i: u64 = 0; i < n; i++) if (load<u8>(p + <usize>i)) return false;
  return true;
}

function decodeBatch(p: usize, len: u32, b: Batch): i32 {
  if (len < 32 || load<u32>(p) != BATCH_MAGIC) return setError(ERR_BAD_INPUT, "abi: malformed batch: bad header");
  const n = load<u32>(p + 4), flags = load<u32>(p + 12);
  if (n > (1 << 20)) return setError(ERR_BAD_INPUT, "abi: malformed batch: too many records");
  if (flags & ~1) return setError(ERR_BAD_INPUT, "abi: malformed batch: unknown flags");
  if (load<u64>(p + 16) != <u64>len) return setError(ERR_BAD_INPUT, "abi: malformed batch: the header's length is not the batch's");
  if (load<u64>(p + 24) != 0) return setError(ERR_BAD_INPUT, "abi: malformed batch: reserved header bytes are not zero");
  let off: u64 = 32;
  const total = <u64>len;
  b.length = n;
  if (8 * <u64>n > total - off) return setError(ERR_BAD_INPUT, "abi: malformed batch: a section overruns the batch");
  b.times = p + <usize>off;
  off += 8 * <u64>n;
  const ncols = spec.input.length + (spec.raw ? 1 : 0);
  for (let c = 0; c < ncols; c++) {
    const t = c < spec.input.length ? spec.input[c].type : T_STRING;
    if (t != T_STRING) {
      if (8 * <u64>n > total - off) return setError(ERR_BAD_INPUT, "abi: malformed batch: a section overruns the batch");
      unchecked((b.cols[c] = p + <usize>off));
      off += 8 * <u64>n;
      continue;
    }
    const ob = 4 * (<u64>n + 1);
    if (ob + pad8(ob) > total - off) return setError(ERR_BAD_INPUT, "abi: malformed batch: a section overruns the batch");
    const o = p + <usize>off;
    if (!zeros(o + <usize>ob, pad8(ob))) return setError(ERR_BAD_INPUT, "abi: malformed batch: padding is not zero");
    off += ob + pad8(ob);
    if (load<u32>(o) != 0) return setError(ERR_BAD_INPUT, "abi: malformed batch: string offsets go backwards");
    for (let i: u32 = 0; i < n; i++) {
      if (load<u32>(o + ((<usize>i + 1) << 2)) < load<u32>(o + (<usize>i << 2))) return setError(ERR_BAD_INPUT, "abi: malformed batch: string offsets go backwards");
    }
    const dl = <u64>load<u32>(o + (<usize>n << 2));
    if (dl + pad8(dl) > total - off) return setError(ERR_BAD_INPUT, "abi: malformed batch: a section overruns the batch");
    unchecked((b.offs[c] = o));
    unchecked((b.cols[c] = p + <usize>off));
    if (!zeros(p + <usize>(off + dl), pad8(dl))) return setError(ERR_BAD_INPUT, "abi: malformed batch: padding is not zero");
    off += dl + pad8(dl);
  }
  if (off != total) return setError(ERR_BAD_INPUT, "abi: malformed batch: trailing bytes");
  return OK;
}

/** @internal wagg_process */
export function process(p: usize, len: u32): i32 {
  const g = groups;
  if (g === null) return setError(ERR_NOT_READY, "wagg: wagg_init has not succeeded");
  if (len >= 16 && load<u32>(p) == BATCH_MAGIC) {
    const f = load<u32>(p + 8), raw = (load<u8>(p + 12) & 1) != 0;
    if (f != <u32>spec.input.length || raw != spec.raw) {
      return setError(ERR_SCHEMA, "wagg: batch does not match the declared input: " + f.toString() + " fields (raw " + raw.toString() +
        "), declared " + spec.input.length.toString() + " (raw " + spec.raw.toString() + ")");
    }
  }
  const st = decodeBatch(p, len, batch);
  if (st) return st;
  g.err = null;
  const fn = aggregateFn;
  if (fn === null) return setError(ERR_NOT_READY, "wagg: no aggregator is registered (call register)");
  fn(batch, g);
  const e = g.err;
  if (e !== null) return setError(ERR_AGGREGATE, e);
  return OK;
}

/** @internal */ export const rows: Buf = new Buf();

function closed(w: Window, start: i64, watermark: i64): bool {
  if (w.kind == W_GLOBAL) return false;
  const end = start > i64.MAX_VALUE - w.size ? i64.MAX_VALUE : start + w.size;
  return end <= watermark;
}

/** Appends group g's metrics: 8 bytes each, a sketch for a distinct one. */
function putValues(b: Buf, p: Pane, g: u32, nm: i32): void {
  for (let j = 0; j < nm; j++) {
    const v = unchecked(p.vals[<i32>g * nm + j]);
    if (distinctMetrics.length && spec.metrics[j].op == OP_DISTINCT) p.sketches[<i32>v].put(b);
    else b.u64(v);
  }
}

function putRow(w: i32, fin: bool, p: Pane, g: u32, nm: i32): void {
  rows.u8(<u8>w);
  rows.u8(fin ? 1 : 0);
  rows.u64(<u64>p.start);
  rows.bytes(p.keyPtr(g), p.keyLen(g));
  putValues(rows, p, g, nm);
}

/** @internal wagg_flush: the changed groups, and every group of the windows
 * that watermark closed (final), which are then forgotten. */
export function flush(watermark: i64): void {
  const g = groups!;
  const nm = spec.metrics.length;
  rows.len = 0;
  rows.u32(ROWS_MAGIC);
  rows.u32(0);
  rows.u64(0);
  let count: u32 = 0;
  for (let w = 0; w < g.windows.length; w++) {
    const s = g.ws[w];
    const keep: Pane[] = [];
    for (let i = 0; i < s.panes.length; i++) {
      const p = s.panes[i];
      if (closed(g.windows[w], p.start, watermark)) {
        for (let k: u32 = 0; k < p.n; k++) { putRow(w, true, p, k, nm); count++; }
        if (s.last === p) s.last = null;
        continue;
      }
      for (let d = 0; d < p.dirty.length; d++) {
        const k = p.dirty[d];
        putRow(w, false, p, k, nm);
        count++;
        p.marked[k] = 0;
      }
      p.dirty.length = 0;
      keep.push(p);
    }
    s.panes = keep;
  }
  store<u32>(rows.ptr + 4, count);
  store<u64>(rows.ptr + 8, <u64>rows.len);
}

/** @internal */ export const snap: Buf = new Buf();

/** @internal wagg_snapshot, in the layout the Go, C and Rust SDKs write:
 *   u32 "WGS1", u32 windows; per window: u32 panes; per pane: i64 start,
 *   u32 groups; per group: u32 key length, key, metrics x u64 (a distinct
 *   metric: its sketch as a row carries it) */
export function snapshot(): void {
  const g = groups!;
  const nm = spec.metrics.length;
  snap.len = 0;
  snap.u32(SNAP_MAGIC);
  snap.u32(<u32>g.windows.length);
  for (let w = 0; w < g.windows.length; w++) {
    const s = g.ws[w];
    snap.u32(<u32>s.panes.length);
    for (let i = 0; i < s.panes.length; i++) {
      const p = s.panes[i];
      snap.u64(<u64>p.start);
      snap.u32(p.n);
      for (let k: u32 = 0; k < p.n; k++) {
        snap.u32(p.keyLen(k));
        snap.bytes(p.keyPtr(k), p.keyLen(k));
        putValues(snap, p, k, nm);
      }
    }
  }
}

function validKey(k: usize, n: u32): bool {
  let off: u64 = 0;
  for (let c = 0; c < spec.keyTypes.length; c++) {
    if (spec.keyTypes[c] == T_STRING) {
      if (<u64>n - off < 4) return false;
      off += 4 + <u64>load<u32>(k + <usize>off);
      if (off > <u64>n) return false;
    } else {
      if (<u64>n - off < 8) return false;
      off += 8;
    }
  }
  return off == <u64>n;
}

function decodeSnapshot(b: usize, len: u32, g: Groups): i32 {
  const nm = spec.metrics.length;
  const mf = from;
  const width = mf !== null ? mf.metrics.length : nm; // metrics per group in the snapshot
  const og = new OldGroup();
  const ng = new NewGroup();
  for (let m = 0; m < nm; m++) ng.vals.push(0);
  // Per metric of the snapshot: whether it is distinct (a sketch of its own
  // length, the others 8 bytes), and the group's value or sketch.
  const distinct: bool[] = [];
  const oldSk: Sketch[] = [];
  for (let m = 0; m < width; m++) {
    distinct.push(mf !== null ? mf.metrics[m].kind == "distinct" : spec.metrics[m].op == OP_DISTINCT);
    og.vals.push(0);
    oldSk.push(new Sketch());
  }
  const total = <u64>len;
  if (total < 8) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: truncated");
  if (load<u32>(b) != SNAP_MAGIC) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: bad magic");
  if (load<u32>(b + 4) != <u32>g.windows.length) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: taken with another number of windows");
  let off: u64 = 8;
  for (let w = 0; w < g.windows.length; w++) {
    const win = g.windows[w];
    if (total - off < 4) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: truncated");
    const panes = load<u32>(b + <usize>off);
    off += 4;
    let prev: i64 = 0;
    for (let i: u32 = 0; i < panes; i++) {
      if (total - off < 12) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: truncated");
      const start = load<i64>(b + <usize>off);
      const n = load<u32>(b + <usize>off + 8);
      off += 12;
      if (i > 0 && start <= prev) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: panes out of order");
      prev = start;
      if (win.kind == W_GLOBAL ? start != 0 : start % win.slide != 0) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: not a window start");
      const p = g.pane(w, start);
      for (let j: u32 = 0; j < n; j++) {
        if (total - off < 4) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: truncated");
        const kl = load<u32>(b + <usize>off);
        off += 4;
        if (<u64>kl > total - off) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: truncated");
        const k = b + <usize>off;
        if (!validKey(k, kl)) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: a key does not match the key columns");
        const h = hashKey(k, kl);
        if (p.lookup(k, kl, h)) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: a group appears twice");
        const slot = lastSlot;
        off += <u64>kl;
        for (let m = 0; m < width; m++) {
          if (distinct[m]) {
            if (total - off < 4) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: truncated");
            const sn = load<u32>(b + <usize>off);
            off += 4;
            if (<u64>sn > total - off) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: truncated");
            const sk = new Sketch();
            if (!sk.read(b + <usize>off, sn)) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: a sketch does not decode");
            oldSk[m] = sk;
            off += <u64>sn;
            continue;
          }
          if (total - off < 8) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: truncated");
          og.vals[m] = load<u64>(b + <usize>off);
          off += 8;
        }
        for (let m = 0; m < nm; m++) {
          const c = mf !== null ? mf.carry[m] : m;
          ng.vals[m] = c >= 0 ? og.vals[c] : g.idents[m];
        }
        if (mf !== null) {
          og.version = <i32>mf.version; og.window = w; og.start = start;
          og.keyPtr = k; og.keyLen = kl;
          ng.err = null;
          const keep = migrateFn!(og, ng);
          const e = ng.err;
          if (e !== null) return setError(ERR_AGGREGATE, e);
          if (!keep) continue;
        }
        const gi = p.insert(k, kl, h, slot, g.idents);
        for (let m = 0; m < nm; m++) {
          const at = <i32>gi * nm + m;
          if (spec.metrics[m].op != OP_DISTINCT) {
            p.vals[at] = ng.vals[m];
            continue;
          }
          // A distinct metric's sketch comes from the snapshot's metric it
          // carries (itself when not migrating); a new one starts empty.
          const c = mf !== null ? mf.carry[m] : m;
          if (c >= 0) p.sketches[<i32>p.vals[at]] = oldSk[c];
        }
        // Every restored group is marked changed: the first flush after a
        // restore emits the whole state (abi/ABI.md).
        p.touch(gi);
      }
      if (mf !== null && p.n == 0) { // every group dropped
        const s = g.ws[w];
        s.panes.pop();
        s.last = null;
      }
    }
  }
  if (off != total) return setError(ERR_BAD_INPUT, "wagg: malformed snapshot: trailing bytes");
  return OK;
}

/** @internal wagg_restore: on error the state is empty. */
export function restore(b: usize, len: u32): i32 {
  const g = groups;
  if (g === null) return setError(ERR_NOT_READY, "wagg: wagg_init has not succeeded");
  g.clear();
  const st = decodeSnapshot(b, len, g);
  if (st) g.clear();
  return st;
}
