package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection keeps the package map of design.md true: no
// (non-test) import of a package names what it must not know about.
func TestDependencyDirection(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not on PATH")
	}
	const mod = "github.com/snorkyhq/snorky/"
	rules := []struct {
		pkg       string
		forbidden []string
	}{
		{"cdc/...", []string{"github.com/gorilla/websocket", mod + "wsapi", mod + "dealers", mod + "sync/", "net/http"}},
		{"dealers", []string{"github.com/jackc/", "github.com/gorilla/websocket", "net/http", "net"}},
		{"sync/...", []string{"github.com/gorilla/websocket", "net/http", "github.com/jackc/", mod + "wsapi", mod + "backendapi"}},
		{"wsapi", []string{"github.com/jackc/", mod + "cdc", mod + "sync/datasync"}},
		{"backendapi", []string{"github.com/gorilla/websocket", "github.com/jackc/"}},
	}
	for _, r := range rules {
		out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./../../"+r.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", r.pkg, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			fields := strings.Fields(line)
			for _, dep := range fields[1:] {
				for _, f := range r.forbidden {
					if dep == f || strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f) {
						t.Errorf("%s imports %s, which it must not know about", fields[0], dep)
					}
				}
			}
		}
	}
}
