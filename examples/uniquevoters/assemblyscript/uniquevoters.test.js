// The uniquevoters aggregator through the AssemblyScript SDK's harness (Node):
//   node --test examples/uniquevoters/assemblyscript/
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
const wasm = join(mkdtempSync(join(tmpdir(), "uniquevoters-as-")), "uniquevoters.wasm");

before(() => {
  execFileSync(asc, [join(here, "uniquevoters.ts"), "-o", wasm, "-O3", "--runtime", "incremental", "--exportStart", "_initialize", "--use", "abort="]);
});

test("counts unique voters within the sketch's error, restores the sketches", async () => {
  const l = await Local.load(wasm, [{ name: "ten", kind: "tumbling", size_ms: 10000 }]);
  const records = [];
  for (let i = 0; i < 6000; i++) records.push([1000, 1, `u${i % 3000}`]);
  records.push([2000, 2, "ann"], [2500, 2, "bob"], [3000, 2, "ann"]);
  l.process(records);
  const snap = l.snapshot();
  const rows = l.flush(10000).sort((a, b) => Number(a.key[0] - b.key[0]));
  assert.equal(rows.length, 2);
  assert.equal(rows[0].metrics[0], 6000n);
  const voters = Number(rows[0].metrics[1]);
  assert.ok(Math.abs(voters - 3000) <= 3 * (1.04 / 64) * 3000, `${voters} voters of 3000`);
  assert.deepEqual(rows[1].metrics, [3n, 2n]);

  l.restore(snap);
  assert.deepEqual(l.flush(10000).sort((a, b) => Number(a.key[0] - b.key[0])), rows, "the restored sketches");
  snap[snap.length - 1] ^= 0x40; // the last sketch entry now names register 2^18
  assert.throws(() => l.restore(snap), (e) => e instanceof GuestError && e.code === -1);
});
