package datasync

import (
	"encoding/json"
	"testing"
)

// TestDeltaTypeJSON: the enum's JSON is the wire's strings, byte for byte,
// and reading accepts exactly those strings (escaped or not).
func TestDeltaTypeJSON(t *testing.T) {
	for _, tc := range []struct {
		typ  deltaType
		wire string
	}{
		{typeInsert, `"insert"`},
		{typeUpdate, `"update"`},
		{typeDelete, `"delete"`},
		{typeTruncate, `"truncate"`},
	} {
		t.Run(tc.wire, func(t *testing.T) {
			got, err := json.Marshal(tc.typ)
			if err != nil || string(got) != tc.wire {
				t.Fatalf("Marshal(%s): got %s, %v; want %s", tc.typ, got, err, tc.wire)
			}
			if tc.typ.String() != tc.wire[1:len(tc.wire)-1] {
				t.Fatalf("String: got %s, want %s", tc.typ, tc.wire)
			}
			var back deltaType
			if err := json.Unmarshal([]byte(tc.wire), &back); err != nil || back != tc.typ {
				t.Fatalf("Unmarshal(%s): got %s, %v; want %s", tc.wire, back, err, tc.typ)
			}
			// Inside a struct, as a delta object carries it.
			var d struct {
				Type deltaType `json:"type"`
			}
			if err := json.Unmarshal([]byte(`{"type": `+tc.wire+`}`), &d); err != nil || d.Type != tc.typ {
				t.Fatalf("in an object: got %s, %v; want %s", d.Type, err, tc.typ)
			}
			out, _ := json.Marshal(d)
			if want := `{"type":` + tc.wire + `}`; string(out) != want {
				t.Fatalf("object: got %s, want %s", out, want)
			}
		})
	}
	var escaped deltaType
	if err := escaped.UnmarshalJSON([]byte(`"\u0069nsert"`)); err != nil || escaped != typeInsert {
		t.Fatalf("escaped insert: got %s, %v", escaped, err)
	}
	for _, bad := range []string{`null`, `1`, `"Insert"`, `"create"`, `""`, `["insert"]`, `"insert `, ``} {
		d := typeUpdate
		if err := d.UnmarshalJSON([]byte(bad)); err == nil || d != 0 {
			t.Errorf("UnmarshalJSON(%s): got %s, %v; want zero and an error", bad, d, err)
		}
	}
	if b, err := json.Marshal(deltaType(0)); err == nil {
		t.Errorf("Marshal of no type: got %s, want an error", b)
	}
	if s := deltaType(9).String(); s != "invalid" {
		t.Errorf("String of an unknown type: got %s", s)
	}
}
