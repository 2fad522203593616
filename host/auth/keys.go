package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
)

// MinHMACKeySize is the shortest HMAC secret accepted: RFC 7518 asks for a
// key at least as long as the hash (HS256: 32 bytes).
const MinHMACKeySize = 32

// key is one verification key. family is the algorithm family it serves
// (HS, RS, ES, EdDSA), so that a public key can never be used as an HMAC
// secret (the classic algorithm confusion).
type key struct {
	kid    string
	family string
	key    any
}

// kidOf is the key id of a key read from a file: its base name without
// extension (keys/2026-01.pem has kid "2026-01").
func kidOf(path string) string {
	b := filepath.Base(path)
	return strings.TrimSuffix(b, filepath.Ext(b))
}

// errNoKeys is a key file that holds no key: on a reload, its keys were
// removed.
var errNoKeys = errors.New("no signing keys")

// LoadHMACKey reads an HMAC secret: the file's bytes, trailing newlines and
// spaces removed, at least MinHMACKeySize bytes. It returns the key id too.
func LoadHMACKey(path string) (secret []byte, kid string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	b = []byte(strings.TrimRight(string(b), "\r\n\t "))
	if len(b) == 0 {
		return nil, "", fmt.Errorf("%s: %w", path, errNoKeys)
	}
	if len(b) < MinHMACKeySize {
		return nil, "", fmt.Errorf("%s: HMAC key of %d bytes, want at least %d (e.g. head -c 32 /dev/urandom | base64 > %s)", path, len(b), MinHMACKeySize, path)
	}
	return b, kidOf(path), nil
}

// loadPublicKey reads a PEM public key (PKIX "PUBLIC KEY", PKCS#1 "RSA
// PUBLIC KEY" or a certificate): RSA, ECDSA P-256/384/521 or Ed25519.
func loadPublicKey(path string) (key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return key{}, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return key{}, fmt.Errorf("%s: not PEM", path)
	}
	var pub any
	switch blk.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(blk.Bytes)
	case "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
			pub = c.PublicKey
		}
	default:
		return key{}, fmt.Errorf("%s: PEM block %q: want a PUBLIC KEY (a private key does not belong on the host)", path, blk.Type)
	}
	if err != nil {
		return key{}, fmt.Errorf("%s: %w", path, err)
	}
	k, err := publicKey(kidOf(path), pub)
	if err != nil {
		return key{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func publicKey(kid string, pub any) (key, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < 2048 {
			return key{}, fmt.Errorf("RSA key of %d bits, want at least 2048", p.N.BitLen())
		}
		return key{kid, "RS", p}, nil
	case *ecdsa.PublicKey:
		return key{kid, "ES", p}, nil
	case ed25519.PublicKey:
		return key{kid, "EdDSA", p}, nil
	}
	return key{}, fmt.Errorf("unsupported key type %T: want RSA, ECDSA or Ed25519", pub)
}

// jwk is the part of RFC 7517 keys wagg reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
	K   string `json:"k"`
}

// loadJWKS reads a JSON Web Key Set: RSA, EC (P-256/384/521), OKP
// (Ed25519) and oct (HMAC) keys. Keys with "use" other than "sig" are
// skipped.
func loadJWKS(path string) ([]key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("%s: not a JWKS: %w", path, err)
	}
	var out []key
	for i, j := range set.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		k, err := j.key()
		if err != nil {
			return nil, fmt.Errorf("%s: keys[%d] (kid %q): %w", path, i, j.Kid, err)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", path, errNoKeys)
	}
	return out, nil
}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func (j jwk) key() (key, error) {
	switch j.Kty {
	case "oct":
		k, err := b64(j.K)
		if err != nil {
			return key{}, fmt.Errorf("k: %w", err)
		}
		if len(k) < MinHMACKeySize {
			return key{}, fmt.Errorf("HMAC key of %d bytes, want at least %d", len(k), MinHMACKeySize)
		}
		return key{j.Kid, "HS", k}, nil
	case "RSA":
		n, err1 := b64(j.N)
		e, err2 := b64(j.E)
		if err := errors.Join(err1, err2); err != nil || len(e) == 0 || len(e) > 4 {
			return key{}, fmt.Errorf("bad n or e")
		}
		ev := 0
		for _, c := range e {
			ev = ev<<8 | int(c)
		}
		return publicKey(j.Kid, &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ev})
	case "EC":
		var c elliptic.Curve
		switch j.Crv {
		case "P-256":
			c = elliptic.P256()
		case "P-384":
			c = elliptic.P384()
		case "P-521":
			c = elliptic.P521()
		default:
			return key{}, fmt.Errorf("curve %q: want P-256, P-384 or P-521", j.Crv)
		}
		x, err1 := b64(j.X)
		y, err2 := b64(j.Y)
		if errors.Join(err1, err2) != nil {
			return key{}, fmt.Errorf("bad x or y")
		}
		// Uncompressed point, checked to be on the curve by ecdsa.ParseUncompressedPublicKey.
		size := (c.Params().BitSize + 7) / 8
		if len(x) > size || len(y) > size {
			return key{}, fmt.Errorf("x or y longer than the curve")
		}
		pt := make([]byte, 1+2*size)
		pt[0] = 4
		copy(pt[1+size-len(x):1+size], x)
		copy(pt[1+2*size-len(y):], y)
		p, err := ecdsa.ParseUncompressedPublicKey(c, pt)
		if err != nil {
			return key{}, err
		}
		return publicKey(j.Kid, p)
	case "OKP":
		if j.Crv != "Ed25519" {
			return key{}, fmt.Errorf("curve %q: want Ed25519", j.Crv)
		}
		x, err := b64(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return key{}, fmt.Errorf("bad x")
		}
		return publicKey(j.Kid, ed25519.PublicKey(x))
	}
	return key{}, fmt.Errorf("kty %q: want RSA, EC, OKP or oct", j.Kty)
}
