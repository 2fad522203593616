// The votes aggregator through the AssemblyScript SDK's harness (Node):
//   node --test examples/votes/assemblyscript/
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { Local, GuestError } from "../../../sdk/assemblyscript/local.js";

const here = dirname(fileURLToPath(import.meta.url));
const asc = join(here, "../../../sdk/assemblyscript/node_modules/.bin/asc");
const wasm = join(mkdtempSync(join(tmpdir(), "votes-as-")), "votes.wasm");
const windows = [{ name: "second", kind: "tumbling", size_ms: 1000 }, { name: "total", kind: "global" }];

before(() => {
  execFileSync(asc, [join(here, "votes.ts"), "-o", wasm, "-O3", "--runtime", "incremental", "--exportStart", "_initialize", "--use", "abort="]);
});

const text = (rows) =>
  rows.map((r) => `${r.window} ${r.start} ${r.final ? "final" : "open"} ${r.key.join(",")} ${r.metrics.join(",")}`).sort();

test("counts per window, closes windows at the watermark, restores", async () => {
  const l = await Local.load(wasm, windows);
  l.process([[1000, 7, "yes"], [1500, 7, "yes"], [2100, 7, "no"]]);
  assert.deepEqual(text(l.flush(2000)), ["0 1000 final 7,yes 2", "0 2000 open 7,no 1", "1 0 open 7,no 1", "1 0 open 7,yes 2"]);
  assert.deepEqual(l.flush(2000), [], "nothing changed");

  const snap = l.snapshot();
  l.process([[2500, 7, "no"]]);
  l.restore(snap);
  assert.deepEqual(text(l.flush(2000)), ["0 2000 open 7,no 1", "1 0 open 7,no 1", "1 0 open 7,yes 2"], "every restored group is emitted");

  snap[0] ^= 1;
  assert.throws(() => l.restore(snap), (e) => e instanceof GuestError && e.code === -1);
  assert.deepEqual(l.flush(3000), [], "a refused snapshot leaves the state empty");
});

test("refuses a batch of other fields", async () => {
  const l = await Local.load(wasm, windows);
  const schema = { ...l.schema, input: l.schema.input.slice(0, 1) };
  const { encodeBatch } = await import("../../../sdk/assemblyscript/local.js");
  assert.throws(() => l.processEncoded(encodeBatch(schema, [[1000, 7]])), (e) => e.code === -2);
});

test("a time at INT64_MIN + 1 after one near INT64_MAX lies in no 1 s window", async () => {
  const l = await Local.load(wasm, windows);
  l.process([[9223372036854775000n, 1n, "a"], [-9223372036854775807n, 2n, "b"]]);
  assert.deepEqual(text(l.flush(-9223372036854775808n)), ["0 9223372036854775000 open 1,a 1", "1 0 open 1,a 1", "1 0 open 2,b 1"]);
});
