package dealers

import (
	"encoding/json"
	"testing"
)

func TestNewRowInvalid(t *testing.T) {
	for _, s := range []string{``, ` `, `{`, `[1,]`, `{"a" 1}`, `01`, `1 2`, `"\x"`, `nul`, `{"a":1}}`, "\"\x01\""} {
		if r, err := NewRow(json.RawMessage(s)); err == nil {
			t.Errorf("NewRow(%q): got %+v, want error", s, r.root)
		}
	}
}
