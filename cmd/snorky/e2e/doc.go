// Package e2e holds the reliability end-to-end tests of the CDC path
// (reliability.md T1, T3, T13 and R2; protocol.md D4–D8): the snorky binary
// runs as a subprocess against a throwaway PostgreSQL (cdc/pglocal), so that
// it can be killed with SIGKILL, and the tests talk to it as users do, over
// WebSocket and the backend HTTP API. The package has no non-test code.
package e2e
