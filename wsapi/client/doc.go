// Package client is the home of Snorky's JavaScript client (snorky.js,
// snorky.mjs, snorky.d.ts, built from src/snorky.js by build.mjs) and of
// its tests. It has no Go API: package wsapi embeds and serves the files.
//
// The Go tests here run the JavaScript tests with node, so that `go test
// ./...` (make test) runs them too:
//   - TestNodeUnit: node --test test/*.test.mjs (no server);
//   - TestNodeIntegration: test/integration against the real server (built
//     from cmd/snorky) and a throwaway PostgreSQL;
//   - TestBrowser: test/browser in Debian's Chromium with playwright-core.
//
// They skip, saying why, when node, the npm packages (npm ci --prefix
// wsapi/client) or Chromium are missing.
package client
