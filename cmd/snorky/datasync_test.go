package main

import (
	"encoding/json"
	"regexp"
	"testing"
)

const dataSyncConfig = `
models:
  Task: {}
  Note: {}
dealers:
  AllTasks: {model: Task, kind: broadcast}
  TasksByColor: {model: Task, kind: simple, key: color}
  TasksByTeam: {model: Task, kind: simple, key: owner.team}
  TaskFilter: {model: Task, kind: filter}
`

func authorize(t testing.TB, s *server, items string) string {
	t.Helper()
	var its any
	if err := json.Unmarshal([]byte(items), &its); err != nil {
		t.Fatal(err)
	}
	var tok string
	if err := json.Unmarshal(backendOK(t, s, "datasync_backend", "authorizeSubscription", map[string]any{"items": its}), &tok); err != nil {
		t.Fatal(err)
	}
	return tok
}

func publishDeltas(t testing.TB, s *server, deltas string) {
	t.Helper()
	var ds any
	if err := json.Unmarshal([]byte(deltas), &ds); err != nil {
		t.Fatal(err)
	}
	backendOK(t, s, "datasync_backend", "publishDeltas", map[string]any{"deltas": ds})
}

// delta returns the next message, which must be a delta, as its inner delta.
func (c *wsClient) delta() map[string]any {
	c.t.Helper()
	m := c.next()
	msg := m["message"].(map[string]any)
	if m["service"] != "datasync" || msg["type"] != "delta" {
		c.t.Fatalf("got %v, want a delta", m)
	}
	return msg["delta"].(map[string]any)
}

var offsetRE = regexp.MustCompile(`^[0-9A-F]{32}$`)
