// Package auth verifies the bearer tokens of wagg's API and live endpoint:
// JWTs signed with HMAC keys or RS256/ES256/EdDSA public keys read from
// files (PEM or JWKS, several at once for rotation), with exp, nbf, iss and
// aud checked, carrying scopes that say what the bearer may do.
//
// It is not an identity provider: it mints tokens only from a configured
// HMAC key (wagg token, the demo), and it keeps no sessions, no users and
// no revocation list: a token is good until it expires. docs/security.md
// has the threat model and the scopes.
package auth
