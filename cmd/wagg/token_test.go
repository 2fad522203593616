package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wagg/wagg/host/auth"
)

// captureStdout runs f and returns what it printed.
func captureStdout(t *testing.T, f func() error) (string, error) {
	t.Helper()
	r, w, _ := os.Pipe()
	old := os.Stdout
	os.Stdout = w
	err := f()
	os.Stdout = old
	w.Close()
	var b bytes.Buffer
	io.Copy(&b, r)
	return strings.TrimSpace(b.String()), err
}

func TestToken_MintsWhatTheHostVerifies(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "demo.key")
	os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	cfg := filepath.Join(dir, "wagg.yaml")
	os.WriteFile(cfg, []byte("auth:\n  hmac_key_files: ["+key+"]\n  issuer: me\n  audience: wagg\n"), 0o600)
	out, err := captureStdout(t, func() error {
		return mintToken(t.Context(), []string{"-config", cfg, "-scopes", "live:votes,deployments:read", "-ttl", "5m", "-sub", "dash"})
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.New(auth.Options{HMACKeyFiles: []string{key}, Issuer: "me", Audience: "wagg"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := v.Verify(out)
	if err != nil || !tok.Allows("live:votes") || !tok.Allows("deployments:read") || tok.Allows("deployments:write") || tok.Subject != "dash" {
		t.Fatalf("%+v %v", tok, err)
	}
	for _, bad := range [][]string{
		{"-key", key, "-scopes", "live"},                // unknown scope
		{"-key", key},                                   // no scopes
		{"-key", key, "-scopes", "admin", "-ttl", "0s"}, // never expires
		{"-scopes", "admin"},                            // no key
	} {
		if _, err := captureStdout(t, func() error { return mintToken(t.Context(), bad) }); err == nil {
			t.Errorf("minted with %v", bad)
		}
	}
}
