// Package deploy owns the lifecycle of a host's deployments: it starts a
// deployment (plugin, topics, table, pipeline), replaces it with a new spec,
// stops it, keeps the status of each (running, or failed and why) and starts
// the stored ones when the host starts, with the host's share of a
// deployment's fresh start (a backfill, backfill.go: recorded in the catalog
// and switched over in stages any host may record). One Manager per host;
// nothing else starts or stops a pipeline.
//
// It is not the HTTP API (host/api) nor the assembly of a host
// (host/server), and it does not decide where partitions run: each
// deployment's consumer group does.
package deploy
