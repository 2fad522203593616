// stats: the AssemblyScript twin of ../main.go (sdk/conformance).
import { Spec, Batch, Groups, register, fail } from "../../../assemblyscript/assembly";
export * from "../../../assemblyscript/assembly/exports";

let region: i32, status: i32, tier: i32, ms: i32, size: i32;
let requests: i32, bytes: i32, smallest: i32, largest: i32, total: i32, fastest: i32, slowest: i32, latency: i32, sizes: i32;

function define(s: Spec): void {
  region = s.inputString("region");
  status = s.inputInt64("status");
  tier = s.inputFloat64("tier");
  ms = s.inputFloat64("ms");
  size = s.inputInt64("bytes");
  s.keyString("region");
  s.keyInt64("status");
  s.keyFloat64("tier");
  requests = s.count("requests");
  bytes = s.sum("bytes");
  smallest = s.min("smallest");
  largest = s.max("largest");
  total = s.sumFloat("ms_total");
  fastest = s.minFloat("fastest");
  slowest = s.maxFloat("slowest");
  latency = s.average("latency");
  sizes = s.distinct("sizes");
}

function aggregate(b: Batch, g: Groups): void {
  for (let i: u32 = 0; i < b.length; i++) {
    const st = b.int64(status, i);
    if (st < 0) {
      fail(g, "stats: a negative status");
      return;
    }
    const sz = b.int64(size, i);
    const k = g.at(b.time(i)).string(b, region, i).int64(st).float64(b.float64(tier, i));
    k.add(requests, 1).add(bytes, sz).add(smallest, sz).add(largest, sz).addDistinct(sizes, sz);
    if (st < 400) {
      const m = b.float64(ms, i);
      k.addFloat(total, m).addFloat(fastest, m).addFloat(slowest, m).addFloat(latency, m);
    }
  }
}

register(define, aggregate);
