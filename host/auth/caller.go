package auth

import "context"

// Caller is who made a request, as the API saw it: for the audit log.
type Caller struct {
	Subject string // the token's sub; empty in open mode or for a token without one
	Remote  string // the client's address
	Open    bool   // open mode: no token was needed
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller of ctx, and false when ctx does not come
// from a request (a deployment restarted from its stored spec).
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}
