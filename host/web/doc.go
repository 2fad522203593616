// Package web holds the built-in live dashboard: a page that lists the
// deployed aggregators, subscribes to one over the hub's WebSocket endpoint
// and shows its top groups moving, with wagg.js, the small browser client of
// the live protocol (docs/protocol.md), which dashboards may reuse as is.
//
// The assets are plain files embedded in the binary: no build step, no
// framework, no external URL. The page expects the hub at /v1/live and the
// deployment list at /v1/deployments on the same origin; it works without
// the list (the user types a name, or passes ?aggregator=NAME).
//
// It is not an API: it only serves files.
package web
