package auth

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Errors of Verify. Every other failure wraps ErrInvalid with the reason.
var (
	ErrNoToken = errors.New("no token")
	ErrExpired = errors.New("token expired")
	ErrInvalid = errors.New("invalid token")
)

// MaxTokenSize bounds a token before it is parsed.
const MaxTokenSize = 8 << 10

// Options say where the keys are and what a token must claim.
type Options struct {
	HMACKeyFiles   []string // HMAC secrets (HS256/384/512), one per file
	PublicKeyFiles []string // PEM public keys (RS*/PS*, ES*, EdDSA), one per file
	JWKSFiles      []string // JSON Web Key Sets, for rotation
	Issuer         string   // when set, "iss" must equal it
	Audience       string   // when set, "aud" must contain it
	// Leeway forgives clock skew on exp and nbf (default 10s; negative: none).
	Leeway time.Duration
	// ReloadEvery is how often key files are checked for changes
	// (default 10s), so that rotating keys needs no restart.
	ReloadEvery time.Duration
	// Log says what a reload did (nil: nothing is logged).
	Log *slog.Logger
}

// Token is what a verified token says.
type Token struct {
	Subject string
	Scopes  []string
	// Expires is when the token stops being accepted (exp plus the leeway).
	Expires time.Time
}

// Allows reports whether the token grants scope (admin grants everything,
// live:* every live:<aggregator>, deployments:write deployments:read).
func (t *Token) Allows(scope string) bool {
	for _, s := range t.Scopes {
		if grants(s, scope) {
			return true
		}
	}
	return false
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	opts   Options
	parser *jwt.Parser

	mu      sync.Mutex
	files   []keyFile
	keys    []key // every file's, together
	checked time.Time
}

// keyFile is one key file, its reader, and the keys it held when it last
// loaded.
type keyFile struct {
	path  string
	read  func(path string) ([]key, error)
	mtime time.Time
	keys  []key
}

// validMethods are the algorithms accepted; "none" never is.
var validMethods = []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// New reads the keys. It fails, naming the file, when one does not load or
// when there are none.
func New(o Options) (*Verifier, error) {
	if o.Leeway == 0 {
		o.Leeway = 10 * time.Second
	}
	if o.Leeway < 0 {
		o.Leeway = 0
	}
	if o.ReloadEvery <= 0 {
		o.ReloadEvery = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(validMethods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(o.Leeway),
	}
	if o.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		popts = append(popts, jwt.WithAudience(o.Audience))
	}
	v := &Verifier{opts: o, parser: jwt.NewParser(popts...)}
	hmacKey := func(p string) ([]key, error) {
		s, kid, err := LoadHMACKey(p)
		return []key{{kid, "HS", s}}, err
	}
	publicKey := func(p string) ([]key, error) {
		k, err := loadPublicKey(p)
		return []key{k}, err
	}
	for _, list := range []struct {
		paths []string
		read  func(string) ([]key, error)
	}{{o.HMACKeyFiles, hmacKey}, {o.PublicKeyFiles, publicKey}, {o.JWKSFiles, loadJWKS}} {
		for _, p := range list.paths {
			f := keyFile{path: p, read: list.read}
			if st, err := os.Stat(p); err == nil {
				f.mtime = st.ModTime()
			}
			keys, err := f.read(p)
			if err != nil {
				return nil, err
			}
			f.keys = keys
			v.files = append(v.files, f)
		}
	}
	v.collect()
	if len(v.keys) == 0 {
		return nil, errors.New("auth: no keys")
	}
	v.checked = time.Now()
	return v, nil
}

// collect gathers the files' keys, in a new slice: callers of current
// read the last one without the lock.
func (v *Verifier) collect() {
	var keys []key
	for _, f := range v.files {
		keys = append(keys, f.keys...)
	}
	v.keys = keys
}

// current returns the keys, reading a file again when it changed. A file
// removed or emptied holds no key any more: the tokens its keys signed are
// refused from then on. A file that is there but does not load keeps the
// keys that were good: a half-written JWKS must not lock everyone out.
func (v *Verifier) current() []key {
	v.mu.Lock()
	defer v.mu.Unlock()
	if time.Since(v.checked) < v.opts.ReloadEvery {
		return v.keys
	}
	v.checked = time.Now()
	changed := false
	for i := range v.files {
		f := &v.files[i]
		st, err := os.Stat(f.path)
		gone := err != nil && errors.Is(err, os.ErrNotExist) || err == nil && st.Size() == 0
		if err == nil && !gone && !st.ModTime().Equal(f.mtime) {
			keys, rerr := f.read(f.path)
			switch {
			case rerr == nil:
				f.keys, f.mtime, changed = keys, st.ModTime(), true
				v.opts.Log.Info("auth: key file read again", "file", f.path, "keys", len(keys))
			case errors.Is(rerr, errNoKeys):
				gone = true
			default:
				v.opts.Log.Warn("auth: key file changed but does not load; its keys stay as they were", "file", f.path, "err", rerr)
			}
		}
		if gone && f.keys != nil {
			v.opts.Log.Warn("auth: key file removed or holds no key: the tokens its keys signed are refused from now on", "file", f.path)
			f.keys, f.mtime, changed = nil, time.Time{}, true
		}
	}
	if changed {
		v.collect()
	}
	return v.keys
}

// scopeClaim is the "scope" claim: a space-separated string (OAuth 2.0), or
// an array of strings.
type scopeClaim []string

func (s *scopeClaim) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		*s = strings.Fields(str)
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return errors.New(`"scope" is neither a string nor an array of strings`)
	}
	*s = list
	return nil
}

type claims struct {
	jwt.RegisteredClaims
	Scope scopeClaim `json:"scope"`
}

func family(alg string) string {
	if alg == "EdDSA" {
		return alg
	}
	if strings.HasPrefix(alg, "PS") {
		return "RS"
	}
	if len(alg) >= 2 {
		return alg[:2]
	}
	return ""
}

// ecCurveFits reports whether an ECDSA key has the curve its algorithm needs.
func ecCurveFits(alg string, k *ecdsa.PublicKey) bool {
	want := map[string]int{"ES256": 256, "ES384": 384, "ES512": 521}[alg]
	return k.Curve.Params().BitSize == want
}

func (v *Verifier) keyfunc(t *jwt.Token) (any, error) {
	// RFC 7515: a token whose critical header parameters the verifier does
	// not understand must be refused, and wagg understands none.
	if _, ok := t.Header["crit"]; ok {
		return nil, errors.New(`"crit" header parameters are not supported`)
	}
	alg := t.Method.Alg()
	kid, ok := t.Header["kid"].(string)
	if _, present := t.Header["kid"]; present && !ok {
		return nil, errors.New(`"kid" is not a string`)
	}
	var set jwt.VerificationKeySet
	for _, k := range v.current() {
		if k.family != family(alg) || (kid != "" && k.kid != kid) {
			continue
		}
		if ek, ok := k.key.(*ecdsa.PublicKey); ok && !ecCurveFits(alg, ek) {
			continue
		}
		set.Keys = append(set.Keys, k.key)
	}
	if len(set.Keys) == 0 {
		if kid != "" {
			return nil, fmt.Errorf("no %s key with kid %q", alg, kid)
		}
		return nil, fmt.Errorf("no %s key", alg)
	}
	return set, nil
}

// Verify checks a token's signature and claims. It returns ErrNoToken for
// an empty one, ErrExpired for an expired one and an error wrapping
// ErrInvalid, with the reason, for everything else.
func (v *Verifier) Verify(raw string) (*Token, error) {
	if raw == "" {
		return nil, ErrNoToken
	}
	if len(raw) > MaxTokenSize {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxTokenSize)
	}
	var c claims
	_, err := v.parser.ParseWithClaims(raw, &c, v.keyfunc)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, ErrExpired
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, fmt.Errorf("%w: bad signature", ErrInvalid)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return nil, fmt.Errorf("%w: wrong issuer (want %q)", ErrInvalid, v.opts.Issuer)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return nil, fmt.Errorf("%w: wrong audience (want %q)", ErrInvalid, v.opts.Audience)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return &Token{Subject: c.Subject, Scopes: c.Scope, Expires: c.ExpiresAt.Add(v.opts.Leeway)}, nil
}
