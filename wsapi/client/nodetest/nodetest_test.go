package nodetest

import "testing"

func TestCheckSummary(t *testing.T) {
	for _, tc := range []struct {
		name, out  string
		allowSkips bool
		want       string
	}{
		{"all passed", "ok 1 - a\n# tests 1\n# pass 1\n# fail 0\n# skipped 0\n", false, ""},
		{"none ran", "# tests 0\n# pass 0\n# fail 0\n# skipped 0\n", false, "no test passed"},
		{"a failure", "# pass 3\n# fail 1\n# skipped 0\n", false, "1 tests failed"},
		{"a skip", "# pass 3\n# fail 0\n# skipped 2\n", false, "2 tests skipped"},
		{"a skip allowed", "# pass 3\n# fail 0\n# skipped 2\n", true, ""},
		{"no summary", "Error: cannot find module\n", false, "no TAP summary"},
		{"pass 0 is not pass 01", "# pass 10\n# fail 0\n", false, ""},
	} {
		if got := checkSummary(tc.out, tc.allowSkips); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestSkips: a missing npm package skips the test.
func TestSkips(t *testing.T) {
	ran := false
	t.Run("missing module", func(t *testing.T) {
		defer func() { ran = t.Skipped() }()
		Modules(t, t.TempDir(), "some/dir", "no-such-package")
	})
	if !ran {
		t.Fatal("Modules did not skip for a package that is not installed")
	}
}
