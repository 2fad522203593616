// The ABI exports (abi/ABI.md "Exports"): re-export them from the entry
// file of a plugin with
//   export * from "../../../sdk/assemblyscript/assembly/exports";
import { describe, init, process, flush, snapshot, restore, rows, snap, lastErr, groups, setError, ERR_BAD_INPUT, ERR_NOT_READY } from "./index";

// The input buffer: unmanaged, 8-aligned, reused until a larger one is asked for.
let input: usize = 0;
let inputCap: u32 = 0;

@inline function region(p: usize, n: u32): i64 { return n ? <i64>((<u64>p << 32) | <u64>n) : 0; }

function inBuffer(n: i32): bool { return n >= 0 && <u32>n <= inputCap; }

/** wagg_abi_version_1() -> (): never called; its presence declares ABI v1. */
export function wagg_abi_version_1(): void {}

/** wagg_input_buffer(size) -> ptr: at least size writable bytes; 0 = cannot allocate. */
export function wagg_input_buffer(size: i32): u32 {
  if (size < 0) return 0;
  if (<u32>size > inputCap) {
    if (input) heap.free(input);
    input = heap.alloc((<usize>size + 7) & ~7);
    inputCap = <u32>size;
  }
  return <u32>input;
}

/** wagg_describe() -> packed: the abi.Schema as JSON. */
export function wagg_describe(): i64 {
  const s = describe();
  return region(changetype<usize>(s), s.byteLength);
}

/** wagg_init(len) -> status: an abi.Config as JSON in the input buffer. */
export function wagg_init(n: i32): i32 {
  if (!inBuffer(n)) return setError(ERR_BAD_INPUT, "wagg: length exceeds the input buffer");
  return init(input, <u32>n);
}

/** wagg_process(len) -> status: a batch in the input buffer. */
export function wagg_process(n: i32): i32 {
  if (groups === null) return setError(ERR_NOT_READY, "wagg: wagg_init has not succeeded");
  if (!inBuffer(n)) return setError(ERR_BAD_INPUT, "wagg: length exceeds the input buffer");
  return process(input, <u32>n);
}

/** wagg_flush(watermark) -> packed: the rows. */
export function wagg_flush(watermark: i64): i64 {
  if (groups === null) return setError(ERR_NOT_READY, "wagg: wagg_init has not succeeded");
  flush(watermark);
  return region(rows.ptr, rows.len);
}

/** wagg_snapshot() -> packed: the state. */
export function wagg_snapshot(): i64 {
  if (groups === null) return setError(ERR_NOT_READY, "wagg: wagg_init has not succeeded");
  snapshot();
  return region(snap.ptr, snap.len);
}

/** wagg_restore(len) -> status: a snapshot in the input buffer. */
export function wagg_restore(n: i32): i32 {
  if (groups === null) return setError(ERR_NOT_READY, "wagg: wagg_init has not succeeded");
  if (!inBuffer(n)) return setError(ERR_BAD_INPUT, "wagg: length exceeds the input buffer");
  return restore(input, <u32>n);
}

/** wagg_last_error() -> packed: the message of the last failed call. */
export function wagg_last_error(): i64 { return region(lastErr.ptr, lastErr.len); }
