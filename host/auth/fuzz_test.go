package auth

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary bytes to the token parser: it must never
// panic, and anything it accepts must have been signed with the key.
func FuzzVerify(f *testing.F) {
	p := filepath.Join(f.TempDir(), "k.key")
	if err := os.WriteFile(p, []byte(testSecret), 0o600); err != nil {
		f.Fatal(err)
	}
	v, err := New(Options{HMACKeyFiles: []string{p}})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := Mint([]byte(testSecret), "k", Claims{Scopes: []string{"live:votes"}, TTL: time.Hour})
	f.Add(good)
	f.Add("")
	f.Add("e30.e30.")
	f.Add("eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9.")
	f.Add(good[:len(good)-2])
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := v.Verify(s)
		if err != nil {
			if !errors.Is(err, ErrNoToken) && !errors.Is(err, ErrExpired) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error outside the documented ones: %v", err)
			}
			return
		}
		if tok == nil {
			t.Fatal("nil token without error")
		}
	})
}
