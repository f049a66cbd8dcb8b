//go:build race

package e2e

// raceEnabled: the server binary is built with -race too, and its log is
// checked for data race reports.
const raceEnabled = true
