package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are what Mint puts in a token.
type Claims struct {
	Subject  string
	Issuer   string
	Audience string
	Scopes   []string
	TTL      time.Duration
}

// Mint signs an HS256 token with an HMAC secret; kid names the key so that
// a verifier holding several picks the right one. Unknown scopes are
// refused, and so is a token that never expires.
func Mint(secret []byte, kid string, c Claims) (string, error) {
	if len(secret) < MinHMACKeySize {
		return "", fmt.Errorf("HMAC key of %d bytes, want at least %d", len(secret), MinHMACKeySize)
	}
	if c.TTL <= 0 {
		return "", errors.New("ttl must be positive: tokens always expire")
	}
	if len(c.Scopes) == 0 {
		return "", fmt.Errorf("no scopes: want some of %s, %s, %s, live:<aggregator>, %s, %s, %s",
			ScopePluginsWrite, ScopeDeploymentsWrite, ScopeDeploymentsRead, ScopeLiveAll, ScopeSQLRead, ScopeAdmin)
	}
	for _, s := range c.Scopes {
		if !knownScope(s) {
			return "", fmt.Errorf("unknown scope %q: want %s, %s, %s, live:<aggregator>, %s, %s or %s",
				s, ScopePluginsWrite, ScopeDeploymentsWrite, ScopeDeploymentsRead, ScopeLiveAll, ScopeSQLRead, ScopeAdmin)
		}
	}
	now := time.Now()
	rc := jwt.RegisteredClaims{
		Subject:   c.Subject,
		Issuer:    c.Issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(c.TTL)),
	}
	if c.Audience != "" {
		rc.Audience = jwt.ClaimStrings{c.Audience}
	}
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, struct {
		jwt.RegisteredClaims
		Scope string `json:"scope"`
	}{rc, strings.Join(c.Scopes, " ")})
	if kid != "" {
		t.Header["kid"] = kid
	}
	return t.SignedString(secret)
}

// FromHeader returns the token of an "Authorization: Bearer <token>"
// header value, or "" when there is none.
func FromHeader(h string) string {
	const p = "bearer "
	if len(h) > len(p) && strings.EqualFold(h[:len(p)], p) {
		return strings.TrimSpace(h[len(p):])
	}
	return ""
}
