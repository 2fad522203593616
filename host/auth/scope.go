package auth

import "strings"

// Scopes a token may carry, in its "scope" claim (space-separated, as in
// OAuth 2.0). docs/security.md says which endpoint needs which.
const (
	ScopePluginsWrite     = "plugins:write"     // upload plugins (and list them)
	ScopeDeploymentsWrite = "deployments:write" // deploy and delete deployments; implies deployments:read
	ScopeDeploymentsRead  = "deployments:read"  // list deployments and plugins
	ScopeLiveAll          = "live:*"            // subscribe to every aggregator
	ScopeSQLRead          = "sql:read"          // read-only SQL over the history
	ScopeAdmin            = "admin"             // everything: metrics, profiles, /healthz reasons, and every other scope
	liveprefix            = "live:"
)

// Live is the scope that lets a bearer subscribe to one aggregator.
func Live(aggregator string) string { return liveprefix + aggregator }

// knownScope reports whether s is a scope wagg understands, so that a typo
// in `wagg token -scopes` is refused instead of minting a useless token.
func knownScope(s string) bool {
	switch s {
	case ScopePluginsWrite, ScopeDeploymentsWrite, ScopeDeploymentsRead, ScopeSQLRead, ScopeAdmin:
		return true
	}
	return strings.HasPrefix(s, liveprefix) && len(s) > len(liveprefix)
}

// grants reports whether holding scope have grants want.
func grants(have, want string) bool {
	switch {
	case have == want, have == ScopeAdmin:
		return true
	case have == ScopeDeploymentsWrite && want == ScopeDeploymentsRead:
		return true
	case have == ScopeLiveAll && strings.HasPrefix(want, liveprefix):
		return true
	}
	return false
}
