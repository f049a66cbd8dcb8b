package django_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// TestPythonHelpers runs the unit tests of snorky_django
// (snorky_django/tests) with Debian's Python: the envelope of every call,
// the settings, errors, the JSON encoder, and the list view's snapshot,
// its fallbacks and the original import paths.
func TestPythonHelpers(t *testing.T) {
	needPython(t)
	url := pgtest.NewDatabase(t)
	cmd := exec.Command(python, "-m", "unittest", "discover", "-v", "-s", filepath.Join("snorky_django", "tests"))
	cmd.Env = pythonEnv(t, url, nil)
	out, err := cmd.CombinedOutput()
	t.Logf("python3 -m unittest:\n%s", out)
	if err != nil {
		t.Fatalf("python3 -m unittest: %v", err)
	}
	if !strings.Contains(string(out), "\nOK") {
		t.Fatal("the Python tests did not report OK")
	}
}
