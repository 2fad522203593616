package testwasm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The toolchains of the C and Rust SDKs come from Debian's packages
// (scripts/toolchains.sh). A test that needs one skips without it, unless
// WAGG_TEST_INSTALLED is set (make test sets it), when a missing toolchain fails.

// Clang is the C compiler for wasm32-wasi guests.
func Clang() string { return tool("WAGG_CLANG", "/usr/bin/clang", "clang") }

// Cargo and Rustc are Debian's Rust, which ships the wasm32 standard
// library (a rustup toolchain elsewhere on PATH may lack it).
func Cargo() string { return tool("WAGG_CARGO", "/usr/bin/cargo", "cargo") }

// Rustc is the compiler Cargo runs.
func Rustc() string { return tool("WAGG_RUSTC", "/usr/bin/rustc", "rustc") }

func tool(env, debian, name string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	if _, err := os.Stat(debian); err == nil {
		return debian
	}
	return name
}

// Need skips tb when a toolchain is missing, or fails it under
// WAGG_TEST_INSTALLED.
func Need(tb testing.TB, tools ...string) {
	tb.Helper()
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			Missing(tb, fmt.Sprintf("%s not found: run bash scripts/toolchains.sh (make test does)", t))
		}
	}
}

// Missing skips tb for want of something make test installs (a toolchain,
// node, Chromium, npm packages); under WAGG_TEST_INSTALLED, which make test
// sets, it fails tb instead, so that a broken install step cannot pass as
// skipped tests.
func Missing(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv("WAGG_TEST_INSTALLED") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// CFlags compile a C guest's sources, and CLinkFlags link them into a WASI
// reactor (its _initialize runs the C runtime's constructors), optimized
// across files, stripped. The two steps run apart because clang, given an
// optimization level when it links, also runs binaryen's wasm-opt if that
// is installed, and its output runs slower under wazero (BENCHMARKS.md):
// the build would depend on what else the machine has.
var (
	CFlags     = []string{"--target=wasm32-wasi", "-O2", "-flto", "-Wall", "-Werror"}
	CLinkFlags = []string{"--target=wasm32-wasi", "-mexec-model=reactor", "-flto", "-Wl,--lto-O2", "-Wl,--strip-all"}
)

// BuildC compiles C sources (paths relative to the module root) with the C
// SDK (sdk/c/wagg.c) into a plugin.
func BuildC(tb testing.TB, srcs ...string) []byte {
	tb.Helper()
	Need(tb, Clang())
	return cached(tb, "c:"+strings.Join(srcs, ","), func(dir string) (string, []*exec.Cmd) {
		return buildC(dir, append(slices.Clone(srcs), "sdk/c/wagg.c"))
	})
}

// BuildRawC compiles a C plugin that implements the ABI itself, without
// the SDK (adversarial tests), into a plugin.
func BuildRawC(tb testing.TB, src string) []byte {
	tb.Helper()
	Need(tb, Clang())
	return cached(tb, "rawc:"+src, func(dir string) (string, []*exec.Cmd) {
		return buildC(dir, []string{src})
	})
}

// buildC returns the commands that compile srcs into dir and link them.
func buildC(dir string, srcs []string) (string, []*exec.Cmd) {
	out := filepath.Join(dir, "guest.wasm")
	link := append([]string{}, CLinkFlags...)
	var cmds []*exec.Cmd
	for i, src := range srcs {
		obj := filepath.Join(dir, fmt.Sprintf("%d.o", i))
		args := append(append([]string{}, CFlags...), "-Isdk/c", "-c", "-o", obj, src)
		cmds = append(cmds, exec.Command(Clang(), args...))
		link = append(link, obj)
	}
	return out, append(cmds, exec.Command(Clang(), append(link, "-o", out)...))
}

// Asc is the AssemblyScript compiler, from npm into sdk/assemblyscript
// (scripts/toolchains.sh runs npm ci there).
func Asc(tb testing.TB) string {
	return filepath.Join(Root(tb), "sdk", "assemblyscript", "node_modules", ".bin", "asc")
}

// AscFlags build an AssemblyScript guest: the top-level code becomes the
// reactor's _initialize, and abort traps instead of importing env.abort.
var AscFlags = []string{"-O3", "--runtime", "incremental", "--exportStart", "_initialize", "--use", "abort="}

// BuildAS compiles an AssemblyScript entry file (relative to the module
// root) into a plugin. asc takes seconds, so the module is also kept under
// .cache/guests, named by a hash of the sources it reads and the flags.
func BuildAS(tb testing.TB, entry string) []byte {
	tb.Helper()
	Need(tb, "node", Asc(tb))
	root := Root(tb)
	h := sha256.New()
	fmt.Fprintln(h, AscFlags, entry)
	srcs, _ := filepath.Glob(filepath.Join(root, filepath.Dir(entry), "*.ts"))
	sdk, _ := filepath.Glob(filepath.Join(root, "sdk", "assemblyscript", "assembly", "*.ts"))
	for _, f := range append(append(srcs, sdk...), filepath.Join(root, "sdk", "assemblyscript", "package-lock.json")) {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		fmt.Fprintln(h, f, len(b))
		h.Write(b)
	}
	keep := filepath.Join(root, ".cache", "guests", hex.EncodeToString(h.Sum(nil))+".wasm")
	if b, err := os.ReadFile(keep); err == nil {
		return b
	}
	b := cached(tb, "as:"+entry, func(dir string) (string, []*exec.Cmd) {
		out := filepath.Join(dir, "guest.wasm")
		return out, []*exec.Cmd{exec.Command(Asc(tb), append([]string{entry, "-o", out}, AscFlags...)...)}
	})
	if err := os.MkdirAll(filepath.Dir(keep), 0o755); err == nil {
		os.WriteFile(keep, b, 0o644) // a cache: a failed write only costs the next run time
	}
	return b
}

var crateName = regexp.MustCompile(`(?m)^name\s*=\s*"([^"]+)"`)

// BuildRust builds the cdylib crate at dir (relative to the module root)
// for wasm32-unknown-unknown. Cargo's output is kept under .cache/cargo,
// so a second run rebuilds nothing.
func BuildRust(tb testing.TB, dir string) []byte {
	tb.Helper()
	Need(tb, Cargo(), Rustc())
	root := Root(tb)
	manifest, err := os.ReadFile(filepath.Join(root, dir, "Cargo.toml"))
	if err != nil {
		tb.Fatal(err)
	}
	m := crateName.FindSubmatch(manifest)
	if m == nil {
		tb.Fatalf("%s/Cargo.toml names no package", dir)
	}
	target := filepath.Join(root, ".cache", "cargo")
	return cached(tb, "rust:"+dir, func(string) (string, []*exec.Cmd) {
		cmd := exec.Command(Cargo(), "build", "-q", "--offline", "--release", "--lib", "--target", "wasm32-unknown-unknown",
			"--manifest-path", filepath.Join(dir, "Cargo.toml"))
		cmd.Env = append(os.Environ(), "CARGO_TARGET_DIR="+target, "RUSTC="+Rustc())
		return filepath.Join(target, "wasm32-unknown-unknown", "release", strings.ReplaceAll(string(m[1]), "-", "_")+".wasm"), []*exec.Cmd{cmd}
	})
}

// cached runs the build that make returns, its commands in order, once
// per test binary and key.
func cached(tb testing.TB, key string, make func(dir string) (string, []*exec.Cmd)) []byte {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	if b, ok := built[key]; ok {
		return b
	}
	out, cmds := make(tb.TempDir())
	for _, cmd := range cmds {
		cmd.Dir = Root(tb)
		if msg, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("building %s: %v\n%s", key, err, msg)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	built[key] = b
	return b
}

// BuildNativeC compiles a native program from C sources (relative to the
// module root) with the C SDK, optimized as a release build would be, and
// returns its path.
func BuildNativeC(tb testing.TB, srcs ...string) string {
	tb.Helper()
	Need(tb, "cc")
	dir := filepath.Join(Root(tb), ".cache", "native")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(srcs[0]), ".c")+"-c")
	args := append([]string{"-O2", "-flto", "-std=c11", "-Isdk/c", "-o", out}, srcs...)
	cmd := exec.Command("cc", append(args, "sdk/c/wagg.c")...)
	cmd.Dir = Root(tb)
	if msg, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building %v natively: %v\n%s", srcs, err, msg)
	}
	return out
}

// BuildNativeRust builds the binary bin of the crate at dir natively, in
// release mode, and returns its path.
func BuildNativeRust(tb testing.TB, dir, bin string) string {
	tb.Helper()
	Need(tb, Cargo(), Rustc())
	target := filepath.Join(Root(tb), ".cache", "cargo")
	cmd := exec.Command(Cargo(), "build", "-q", "--offline", "--release", "--bin", bin, "--manifest-path", filepath.Join(dir, "Cargo.toml"))
	cmd.Dir = Root(tb)
	cmd.Env = append(os.Environ(), "CARGO_TARGET_DIR="+target, "RUSTC="+Rustc())
	if msg, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building %s natively: %v\n%s", dir, err, msg)
	}
	return filepath.Join(target, "release", bin)
}
