// Package web holds the built-in dashboard and wagg.js, the browser client
// of the live protocol and of the history (docs/protocol.md), which other
// dashboards may import as it is (an ES module, with wagg.d.ts).
//
// The page (src/app.js) follows an aggregator in a Web Worker
// (src/worker.js), draws a window over the last minutes from ClickHouse
// history continued by live deltas, ranks the running totals, runs SQL
// through POST /v1/query, uploads plugins, deploys and undeploys. build.mjs
// bundles it with uPlot into assets/ (make web); the bundle is committed so
// that a fresh clone builds without node, and TestBundle_IsWhatTheSourcesBuild
// fails when it is stale. Everything is embedded in the binary and served
// from its origin: no external URL.
//
// It is not an API: it only serves files; the page calls the API with the
// token it was opened with (#token=).
package web
