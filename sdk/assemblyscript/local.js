// The AssemblyScript SDK's test harness, as the Go SDK's wagg.NewLocal:
// it loads a plugin built with asc into Node's WebAssembly and drives its
// exports as the host does, with batches encoded as the host encodes them
// and rows decoded. AssemblyScript only compiles to Wasm, so "locally" means
// in Node rather than natively; the module is the one you upload.
//
//   import { Local } from "../../../sdk/assemblyscript/local.js";
//   const l = await Local.load("votes.wasm", [{ name: "total", kind: "global" }]);
//   l.process([[1000, 7, "yes"]]);        // records: [ts, fields in declared order]
//   l.flush(0);                           // [{ window, start, final, key: [7, "yes"], metrics: [1n] }]
import { readFile } from "node:fs/promises";

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** A failed call: code is the ABI status (-1 bad input, -2 schema, ...). */
export class GuestError extends Error {
  constructor(call, code, message) {
    super(`${call}: ${message} (code ${code})`);
    this.code = code;
  }
}

export class Local {
  /** Instantiates the plugin at path and runs wagg_init with the windows. */
  static async load(path, windows, extra = {}) {
    const { instance } = await WebAssembly.instantiate(await readFile(path), {});
    const l = new Local(instance.exports);
    l.e._initialize();
    l.schema = JSON.parse(fromUtf8.decode(l.region(l.e.wagg_describe())));
    l.call("wagg_init", utf8.encode(JSON.stringify({ abi: 1, windows, ...extra })));
    return l;
  }

  constructor(exports) {
    this.e = exports;
    this.cap = 0;
  }

  region(packed) {
    const v = BigInt.asUintN(64, packed);
    const ptr = Number(v >> 32n), n = Number(v & 0xffffffffn);
    return new Uint8Array(this.e.memory.buffer, ptr, n).slice();
  }

  lastError() {
    return fromUtf8.decode(this.region(this.e.wagg_last_error()));
  }

  call(name, bytes) {
    if (bytes.length > this.cap || !this.ptr) {
      this.cap = Math.max(bytes.length, 64 << 10);
      this.ptr = this.e.wagg_input_buffer(this.cap);
    }
    new Uint8Array(this.e.memory.buffer, this.ptr, bytes.length).set(bytes);
    const code = this.e[name](bytes.length);
    if (code !== 0) throw new GuestError(name, code, this.lastError());
  }

  /** Folds in records, each [ts, field values in declared order]. */
  process(records) {
    this.call("wagg_process", encodeBatch(this.schema, records));
  }

  /** Folds in a batch in its ABI encoding. */
  processEncoded(bytes) {
    this.call("wagg_process", bytes);
  }

  /** The rows a flush at watermark emits: { window, start, final, key, metrics };
   * int64 values are BigInts, float64 values numbers. */
  flush(watermark) {
    const packed = this.e.wagg_flush(BigInt(watermark));
    if (packed < 0n) throw new GuestError("wagg_flush", Number(packed), this.lastError());
    return decodeRows(this.schema, this.region(packed));
  }

  snapshot() {
    return this.region(this.e.wagg_snapshot());
  }

  restore(bytes) {
    this.call("wagg_restore", bytes);
  }
}

/** encodeBatch lays records out as abi/ABI.md "Batch layout" says. */
export function encodeBatch(schema, records) {
  const n = records.length, parts = [];
  const u32s = (a) => new Uint8Array(Uint32Array.from(a).buffer);
  const i64s = (a) => new Uint8Array(BigInt64Array.from(a, (v) => BigInt(v)).buffer);
  const pad = (b) => (b.length % 8 ? new Uint8Array(8 - (b.length % 8)) : new Uint8Array(0));
  const fields = schema.input;
  const header = new DataView(new ArrayBuffer(32));
  header.setUint32(0, 0x31424757, true);
  header.setUint32(4, n, true);
  header.setUint32(8, fields.length, true);
  parts.push(new Uint8Array(header.buffer), i64s(records.map((r) => r[0])));
  fields.forEach((f, c) => {
    const col = records.map((r) => r[1 + c]);
    if (f.type === "int64") parts.push(i64s(col));
    else if (f.type === "float64") parts.push(new Uint8Array(Float64Array.from(col).buffer));
    else {
      const data = col.map((s) => utf8.encode(s));
      const offs = [0];
      data.forEach((d) => offs.push(offs[offs.length - 1] + d.length));
      const o = u32s(offs), all = new Uint8Array(offs[n]);
      data.forEach((d, i) => all.set(d, offs[i]));
      parts.push(o, pad(o), all, pad(all));
    }
  });
  const total = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) (out.set(p, off), (off += p.length));
  new DataView(out.buffer).setBigUint64(16, BigInt(total), true);
  return out;
}

/** sketchEstimate is abi.Sketch.Estimate of a sketch's row form body, a BigInt. */
function sketchEstimate(body) {
  const m = 4096, dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let sum = 0, set = 0;
  const k = body.length === m ? m : body.length / 4;
  for (let i = 0; i < k; i++) {
    const r = body.length === m ? body[i] : dv.getUint32(4 * i, true) & 63;
    if (r) (sum += 2 ** -r), set++;
  }
  const zeros = m - set;
  sum += zeros;
  let e = ((0.7213 / (1 + 1.079 / m)) * m * m) / sum;
  if (e <= 2.5 * m && zeros > 0) e = m * Math.log(m / zeros);
  return BigInt(Math.floor(e + 0.5));
}

/** decodeRows reads abi/ABI.md "Rows layout"; a distinct metric reads as
 * its estimate. */
export function decodeRows(schema, b) {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const rows = [], n = v.getUint32(4, true);
  let off = 16;
  const value = (type, kind) => {
    if (kind === "distinct") {
      const l = v.getUint32(off, true);
      off += 4 + l;
      return sketchEstimate(b.subarray(off - l, off));
    }
    if (type === "string") {
      const l = v.getUint32(off, true);
      const s = fromUtf8.decode(b.subarray(off + 4, off + 4 + l));
      off += 4 + l;
      return s;
    }
    const x = type === "float64" ? v.getFloat64(off, true) : v.getBigInt64(off, true);
    off += 8;
    return x;
  };
  for (let i = 0; i < n; i++) {
    const window = b[off], final = (b[off + 1] & 1) === 1;
    const start = v.getBigInt64(off + 2, true);
    off += 10;
    const key = schema.keys.map((k) => value(k.type));
    const metrics = schema.metrics.map((m) => value(m.type, m.kind));
    rows.push({ window, start, final, key, metrics });
  }
  return rows;
}
