#!/usr/bin/env bash
# Installs the guest toolchains of the C and Rust SDKs from Debian's packages
# when they are missing, then checks that each builds a wasm32 module.
# Idempotent; prints the versions. `make test` runs it.
#
# What installs here (Debian 12, bookworm, checked with apt-cache):
# - C: clang and lld 14 (clang-14, lld-14), wasi-libc (0.0~git20220510, the
#   sysroot in /usr/lib/wasm32-wasi with crt1-reactor.o, so
#   -mexec-model=reactor gives the _initialize the ABI wants) and
#   libclang-rt-dev-wasm32 (compiler-rt builtins for wasm32).
# - Rust: rustc 1.63 and cargo 0.66 (cargo 1.65) with libstd-rust-dev-wasm32,
#   the standard library for wasm32-unknown-unknown and wasm32-wasi in
#   /usr/lib/rustlib. No rustup: the Rust SDK is written for 1.63 and has no
#   dependencies, so it builds offline. A rustup toolchain earlier on PATH
#   is left alone; the project calls /usr/bin/cargo and /usr/bin/rustc.
# - AssemblyScript: the npm package assemblyscript (0.28, pinned in
#   sdk/assemblyscript/package-lock.json), installed with the machine's Node.js
#   and npm into sdk/assemblyscript/node_modules; it brings its own binaryen
#   (wasm-opt) as JavaScript, so nothing else is needed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

need=()
[ -x /usr/bin/clang ] || need+=(clang)
command -v wasm-ld >/dev/null 2>&1 || need+=(lld)
[ -f /usr/lib/wasm32-wasi/crt1-reactor.o ] || need+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || need+=(libclang-rt-dev-wasm32)
[ -x /usr/bin/rustc ] || need+=(rustc)
[ -x /usr/bin/cargo ] || need+=(cargo)
[ -d /usr/lib/rustlib/wasm32-unknown-unknown ] || need+=(libstd-rust-dev-wasm32)
if [ ${#need[@]} -gt 0 ]; then
  apt_install --no-install-recommends "${need[@]}"
fi

# Each toolchain must build a module, not merely be installed.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'int f(void) { return 1; }\n' > "$tmp/t.c"
/usr/bin/clang --target=wasm32-wasi -mexec-model=reactor -O2 -o "$tmp/t.wasm" "$tmp/t.c" \
  || { log "toolchains: clang cannot build a wasm32-wasi reactor"; exit 1; }
printf '#[no_mangle] pub extern "C" fn f() -> i32 { 1 }\n' > "$tmp/t.rs"
/usr/bin/rustc --edition 2021 --crate-type cdylib --target wasm32-unknown-unknown -O -o "$tmp/t-rs.wasm" "$tmp/t.rs" \
  || { log "toolchains: rustc cannot build for wasm32-unknown-unknown"; exit 1; }
asdir="$WAGG_ROOT/sdk/assemblyscript"
if [ ! -x "$asdir/node_modules/.bin/asc" ] || [ "$asdir/package-lock.json" -nt "$asdir/node_modules/.package-lock.json" ]; then
  (cd "$asdir" && npm ci --no-audit --no-fund --loglevel=error)
fi
printf 'export function f(): i32 { return 1; }\n' > "$tmp/t.ts"
"$asdir/node_modules/.bin/asc" "$tmp/t.ts" -o "$tmp/t-as.wasm" \
  || { log "toolchains: asc cannot build a module"; exit 1; }
log "toolchains: $(/usr/bin/clang --version | head -n1); $(/usr/bin/rustc --version); $(/usr/bin/cargo --version); asc $("$asdir/node_modules/.bin/asc" --version)"
