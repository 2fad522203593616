package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testSecret = "0123456789abcdef0123456789abcdef"

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pemPub(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t *testing.T, m jwt.SigningMethod, k any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func good() jwt.MapClaims {
	return jwt.MapClaims{"sub": "ann", "iss": "wagg-test", "aud": "wagg", "exp": time.Now().Add(time.Hour).Unix(), "scope": "live:votes deployments:read"}
}

func TestVerify_EveryKeyKind(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	epub, epriv, _ := ed25519.GenerateKey(rand.Reader)
	ek2, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "EC", "kid": "es384", "crv": "P-384", "x": b64u(ek2.X.Bytes()), "y": b64u(ek2.Y.Bytes())},
		{"kty": "OKP", "kid": "jwks-ed", "crv": "Ed25519", "x": b64u(epub)},
		{"kty": "RSA", "kid": "jwks-rsa", "n": b64u(rk.N.Bytes()), "e": "AQAB"},
		{"kty": "oct", "kid": "jwks-hs", "k": b64u([]byte(testSecret + "jwks"))},
		{"kty": "RSA", "kid": "enc", "use": "enc", "n": "x", "e": "x"},
	}})
	v, err := New(Options{
		HMACKeyFiles:   []string{writeFile(t, "hs.key", []byte(testSecret+"\n"))},
		PublicKeyFiles: []string{writeFile(t, "rsa.pem", pemPub(t, &rk.PublicKey)), writeFile(t, "ec.pem", pemPub(t, &ek.PublicKey)), writeFile(t, "ed.pem", pemPub(t, epub))},
		JWKSFiles:      []string{writeFile(t, "keys.json", jwks)},
		Issuer:         "wagg-test", Audience: "wagg",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		tok  string
	}{
		{"HS256", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", good())},
		{"HS256 kid", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "hs", good())},
		{"RS256", sign(t, jwt.SigningMethodRS256, rk, "", good())},
		{"PS256", sign(t, jwt.SigningMethodPS256, rk, "rsa", good())},
		{"ES256", sign(t, jwt.SigningMethodES256, ek, "ec", good())},
		{"EdDSA", sign(t, jwt.SigningMethodEdDSA, epriv, "ed", good())},
		{"JWKS ES384", sign(t, jwt.SigningMethodES384, ek2, "es384", good())},
		{"JWKS EdDSA", sign(t, jwt.SigningMethodEdDSA, epriv, "jwks-ed", good())},
		{"JWKS RS256", sign(t, jwt.SigningMethodRS256, rk, "jwks-rsa", good())},
		{"JWKS oct", sign(t, jwt.SigningMethodHS256, []byte(testSecret+"jwks"), "jwks-hs", good())},
	} {
		tok, err := v.Verify(c.tok)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if tok.Subject != "ann" || !tok.Allows("live:votes") || tok.Allows("live:other") || tok.Allows(ScopeAdmin) {
			t.Errorf("%s: %+v", c.name, tok)
		}
	}
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestVerify_Refusals(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	pubFile := writeFile(t, "rsa.pem", pemPub(t, &rk.PublicKey))
	v, err := New(Options{HMACKeyFiles: []string{writeFile(t, "hs.key", []byte(testSecret))}, PublicKeyFiles: []string{pubFile}, Issuer: "wagg-test", Audience: "wagg", Leeway: -1})
	if err != nil {
		t.Fatal(err)
	}
	with := func(k string, val any) jwt.MapClaims {
		c := good()
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	pubPEM, _ := os.ReadFile(pubFile)
	withHeader := func(k string, val any) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, good())
		tok.Header[k] = val
		s, err := tok.SignedString([]byte(testSecret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, c := range []struct {
		name string
		tok  string
		want error
		msg  string
	}{
		{"empty", "", ErrNoToken, ""},
		{"garbage", "not.a.jwt", ErrInvalid, ""},
		{"expired", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("exp", time.Now().Add(-time.Minute).Unix())), ErrExpired, ""},
		{"no exp", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("exp", nil)), ErrInvalid, "exp"},
		{"not yet", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("nbf", time.Now().Add(time.Hour).Unix())), ErrInvalid, "not valid yet"},
		{"bad signature", sign(t, jwt.SigningMethodHS256, []byte(testSecret+"x"), "", good()), ErrInvalid, "signature"},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("iss", "evil")), ErrInvalid, "issuer"},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("aud", "other")), ErrInvalid, "audience"},
		{"unknown kid", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "nope", good()), ErrInvalid, "kid"},
		// The RSA public key used as an HMAC secret: never accepted.
		{"alg confusion", sign(t, jwt.SigningMethodHS256, pubPEM, "rsa", good()), ErrInvalid, ""},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", good()), ErrInvalid, ""},
		{"too long", strings.Repeat("a", MaxTokenSize+1), ErrInvalid, ""},
		{"a critical header", withHeader("crit", []string{"exp"}), ErrInvalid, "crit"},
		{"a kid that is not a string", withHeader("kid", 7), ErrInvalid, "kid"},
		{"bad scope type", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", with("scope", 7)), ErrInvalid, "scope"},
	} {
		_, err := v.Verify(c.tok)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want %v containing %q", c.name, err, c.want, c.msg)
		}
	}
}

func TestScopes_Grants(t *testing.T) {
	for _, c := range []struct {
		have []string
		want string
		ok   bool
	}{
		{[]string{"admin"}, "plugins:write", true},
		{[]string{"admin"}, "live:x", true},
		{[]string{"live:*"}, "live:x", true},
		{[]string{"live:*"}, "deployments:read", false},
		{[]string{"live:x"}, "live:y", false},
		{[]string{"deployments:write"}, "deployments:read", true},
		{[]string{"deployments:read"}, "deployments:write", false},
		{[]string{"plugins:write"}, "deployments:write", false},
		{nil, "live:x", false},
	} {
		if got := (&Token{Scopes: c.have}).Allows(c.want); got != c.ok {
			t.Errorf("%v allows %s = %v, want %v", c.have, c.want, got, c.ok)
		}
	}
}

func TestMint_RoundTripAndRefusals(t *testing.T) {
	p := writeFile(t, "k1.key", []byte(testSecret))
	secret, kid, err := LoadHMACKey(p)
	if err != nil || kid != "k1" {
		t.Fatal(kid, err)
	}
	v, err := New(Options{HMACKeyFiles: []string{p}, Issuer: "i", Audience: "a"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Mint(secret, kid, Claims{Subject: "dash", Issuer: "i", Audience: "a", Scopes: []string{"live:votes"}, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := v.Verify(s)
	if err != nil || !tok.Allows("live:votes") || tok.Subject != "dash" {
		t.Fatal(tok, err)
	}
	if _, err := Mint(secret, kid, Claims{Scopes: []string{"live:votes"}}); err == nil {
		t.Error("minted a token without expiry")
	}
	if _, err := Mint(secret, kid, Claims{Scopes: []string{"live"}, TTL: time.Minute}); err == nil {
		t.Error("minted an unknown scope")
	}
	if _, _, err := LoadHMACKey(writeFile(t, "short.key", []byte("short"))); err == nil {
		t.Error("loaded a short HMAC key")
	}
}

func TestVerifier_ReloadsRotatedKeys(t *testing.T) {
	p := writeFile(t, "k.key", []byte(testSecret))
	v, err := New(Options{HMACKeyFiles: []string{p}, ReloadEvery: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	next := testSecret + "-next"
	if err := os.WriteFile(p, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	// A different mtime, whatever the file system's resolution.
	later := time.Now().Add(time.Minute)
	os.Chtimes(p, later, later)
	s, _ := Mint([]byte(next), "k", Claims{Scopes: []string{"admin"}, TTL: time.Minute})
	if _, err := v.Verify(s); err != nil {
		t.Fatalf("rotated key not picked up: %v", err)
	}
	// A broken file keeps the keys that were good.
	os.WriteFile(p, []byte("short"), 0o600)
	later = later.Add(time.Minute)
	os.Chtimes(p, later, later)
	if _, err := v.Verify(s); err != nil {
		t.Fatalf("a broken key file locked everyone out: %v", err)
	}
}

// A key file removed, or emptied, revokes the tokens its key signed at the
// next check, and the other files' keys go on; so does a JWKS without its
// key. A file that changes and does not load keeps its keys.
func TestVerifier_RemovingAKeyRevokesItsTokens(t *testing.T) {
	jwks := func(secret string) []byte {
		b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "oct", "kid": "set", "k": b64u([]byte(secret))}}})
		return b
	}
	for _, c := range []struct {
		name    string
		jwks    bool
		remove  []byte // the file's new content; nil: deleted
		revokes bool
	}{
		{"deleted", false, nil, true},
		{"emptied", false, []byte{}, true},
		{"left a newline", false, []byte(" \t\n"), true},
		{"the JWKS's key removed", true, []byte(`{"keys":[]}`), true},
		{"the JWKS half-written", true, []byte(`{"keys":[{"kty":"oc`), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			secret := testSecret + "-gone"
			o := Options{HMACKeyFiles: []string{writeFile(t, "stays.key", []byte(testSecret))}, ReloadEvery: time.Nanosecond}
			var gone string
			if c.jwks {
				gone = writeFile(t, "gone.json", jwks(secret))
				o.JWKSFiles = []string{gone}
			} else {
				gone = writeFile(t, "gone.key", []byte(secret))
				o.HMACKeyFiles = append(o.HMACKeyFiles, gone)
			}
			v, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			tok, _ := Mint([]byte(secret), "", Claims{Scopes: []string{"admin"}, TTL: time.Minute})
			kept, _ := Mint([]byte(testSecret), "", Claims{Scopes: []string{"admin"}, TTL: time.Minute})
			if _, err := v.Verify(tok); err != nil {
				t.Fatal(err)
			}
			if c.remove == nil {
				err = os.Remove(gone)
			} else {
				err = os.WriteFile(gone, c.remove, 0o600)
				later := time.Now().Add(time.Minute) // a new mtime, whatever the file system's resolution
				os.Chtimes(gone, later, later)
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Verify(tok)
			if c.revokes && !errors.Is(err, ErrInvalid) {
				t.Fatalf("the token of a key %s: %v, want it refused", c.name, err)
			}
			if !c.revokes && err != nil {
				t.Fatalf("the token of a key whose file does not load: %v, want it kept", err)
			}
			if _, err := v.Verify(kept); err != nil {
				t.Fatalf("the other file's token: %v", err)
			}
			// the key back, the token is good again
			content := []byte(secret)
			if c.jwks {
				content = jwks(secret)
			}
			if err := os.WriteFile(gone, content, 0o600); err != nil {
				t.Fatal(err)
			}
			later := time.Now().Add(2 * time.Minute)
			os.Chtimes(gone, later, later)
			if _, err := v.Verify(tok); err != nil {
				t.Fatalf("the key back: %v", err)
			}
		})
	}
}
