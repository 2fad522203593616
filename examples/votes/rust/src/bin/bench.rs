//! The votes aggregator natively, for comparison with its Wasm build
//! (examples/votes/bench_test.go runs both; BENCHMARKS.md):
//! `bench FILE ITERATIONS` folds ITERATIONS batches from FILE (u32 length +
//! encoded batch, repeated), flushing every 64, and prints the nanoseconds
//! the loop took.

use std::time::Instant;
use votes::Votes;
use wagg::Engine;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: bench FILE ITERATIONS");
        std::process::exit(2);
    }
    let data = std::fs::read(&args[1]).expect("read the batches");
    let iters: usize = args[2].parse().expect("iterations");
    // 8-aligned copies, as the Wasm input buffer is.
    let mut bufs: Vec<(Vec<u64>, usize)> = Vec::new();
    let mut off = 0;
    while off + 4 <= data.len() {
        let n =
            u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        off += 4;
        let mut v = vec![0u64; (n + 7) / 8];
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, n) }
            .copy_from_slice(&data[off..off + n]);
        bufs.push((v, n));
        off += n;
    }
    let mut e = Engine::<Votes>::new();
    let cfg = br#"{"abi":1,"windows":[{"name":"second","kind":"tumbling","size_ms":1000},{"name":"total","kind":"global"}]}"#;
    e.init(cfg).expect("init");
    let t0 = Instant::now();
    for i in 0..iters {
        let (v, n) = &bufs[i % bufs.len()];
        let b = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, *n) };
        e.process(b).expect("process");
        if i % 64 == 63 {
            e.flush(0).expect("flush");
        }
    }
    println!("{}", t0.elapsed().as_nanos());
}
