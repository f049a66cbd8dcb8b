package dealers

import (
	"encoding/json"
	"strings"
	"testing"
)

func mustRow(t testing.TB, data string) *Row {
	t.Helper()
	r, err := NewRow(json.RawMessage(data))
	if err != nil {
		t.Fatalf("NewRow(%s): %v", data, err)
	}
	return r
}

func TestFilterMatch(t *testing.T) {
	const big = `{"id": 9007199254740993, "neg": -9007199254740993, "huge": 123456789012345678901234567890}`
	tests := []struct {
		filter string
		row    string
		want   bool
	}{
		// ==
		{`["==", "a", 1]`, `{"a": 1}`, true},
		{`["==", "a", 1]`, `{"a": 2}`, false},
		{`["==", "a", 1]`, `{"a": 1.0}`, true},
		{`["==", "a", 1.0]`, `{"a": 1}`, true},
		{`["==", "a", 100]`, `{"a": 1e2}`, true},
		{`["==", "a", 0]`, `{"a": -0.0}`, true},
		{`["==", "a", 1]`, `{"a": "1"}`, false},
		{`["==", "a", 1]`, `{"a": true}`, false},
		{`["==", "a", true]`, `{"a": 1}`, false},
		{`["==", "a", true]`, `{"a": true}`, true},
		{`["==", "a", false]`, `{"a": true}`, false},
		{`["==", "a", null]`, `{"a": null}`, true},
		{`["==", "a", null]`, `{"a": 0}`, false},
		{`["==", "a", null]`, `{"a": false}`, false},
		{`["==", "a", null]`, `{}`, false},
		{`["==", "a", "x"]`, `{"a": "x"}`, true},
		{`["==", "a", "\u00e9"]`, `{"a": "é"}`, true},
		{`["==", "a", "é"]`, `{"a": "e\u0301"}`, false}, // no normalisation
		{`["==", "a", [1, "x"]]`, `{"a": [1.0, "x"]}`, true},
		{`["==", "a", [1, "x"]]`, `{"a": ["x", 1]}`, false},
		{`["==", "a", [1]]`, `{"a": [1, 1]}`, false},
		{`["==", "a", {"k": 1, "j": [2]}]`, `{"a": {"j": [2.0], "k": 1}}`, true},
		{`["==", "a", {"k": 1}]`, `{"a": {"k": 1, "j": 2}}`, false},
		{`["==", "a", {"k": 1}]`, `{"a": {"k": 2, "k": 1}}`, true}, // last duplicate wins
		{`["==", "a", {}]`, `{"a": []}`, false},
		// big numbers are exact
		{`["==", "id", 9007199254740993]`, big, true},
		{`["==", "id", 9007199254740992]`, big, false},
		{`["==", "id", 9007199254740993.0]`, big, true},
		{`["==", "neg", -9007199254740993]`, big, true},
		{`["==", "huge", 123456789012345678901234567890]`, big, true},
		{`["==", "huge", 123456789012345678901234567891]`, big, false},
		{`["==", "huge", 1.2345678901234567890123456789e29]`, big, true},
		{`[">", "id", 9007199254740992]`, big, true},
		{`["<", "id", 9007199254740994]`, big, true},
		{`[">", "huge", 123456789012345678901234567889]`, big, true},
		{`["<", "neg", -9007199254740992]`, big, true},
		{`["==", "a", 0.1]`, `{"a": 0.10}`, true},
		{`["<", "a", 0.30000000000000004]`, `{"a": 0.3}`, true},
		// !=
		{`["!=", "a", 1]`, `{"a": 2}`, true},
		{`["!=", "a", 1]`, `{"a": 1.0}`, false},
		{`["!=", "a", 1]`, `{"a": "1"}`, true},
		{`["!=", "a", 1]`, `{}`, false}, // absent: false
		{`["!=", "a", null]`, `{"a": null}`, false},
		// ordering
		{`["<", "a", 2]`, `{"a": 1}`, true},
		{`["<", "a", 2]`, `{"a": 2}`, false},
		{`["<=", "a", 2]`, `{"a": 2}`, true},
		{`["<=", "a", 2]`, `{"a": 2.5}`, false},
		{`[">", "a", 2]`, `{"a": 2.5}`, true},
		{`[">", "a", -1.5]`, `{"a": -2}`, false},
		{`[">=", "a", 2]`, `{"a": 2.0}`, true},
		{`[">=", "a", 2]`, `{"a": 1.99}`, false},
		{`["<", "a", 1e100]`, `{"a": 99999999999999999999}`, true},
		{`["<", "a", "b"]`, `{"a": "a"}`, true},
		{`["<", "a", "b"]`, `{"a": "ba"}`, false},
		{`["<", "a", "ab"]`, `{"a": "a"}`, true},
		{`["<", "a", "Z"]`, `{"a": "a"}`, false},                 // code point order
		{`["<", "a", "\uffff"]`, `{"a": "\ud83d\ude00"}`, false}, // U+1F600 > U+FFFF
		{`[">=", "a", ""]`, `{"a": ""}`, true},
		// ordering across types and of other types is false
		{`["<", "age", 21]`, `{"age": "20"}`, false},
		{`[">", "age", 21]`, `{"age": "20"}`, false},
		{`[">=", "age", "20"]`, `{"age": 20}`, false},
		{`["<", "a", true]`, `{"a": false}`, false},
		{`[">", "a", false]`, `{"a": true}`, false},
		{`["<=", "a", null]`, `{"a": null}`, false},
		{`[">=", "a", null]`, `{"a": null}`, false},
		{`["<=", "a", [1]]`, `{"a": [1]}`, false},
		{`[">=", "a", {}]`, `{"a": {}}`, false},
		{`["<", "a", 1]`, `{"a": true}`, false},
		{`["<", "a", 1]`, `{}`, false},
		// in
		{`["in", "a", [1, 2, 3]]`, `{"a": 2}`, true},
		{`["in", "a", [1, 2, 3]]`, `{"a": 2.0}`, true},
		{`["in", "a", [1, 2, 3]]`, `{"a": 4}`, false},
		{`["in", "a", [1, 2, 3]]`, `{"a": "2"}`, false},
		{`["in", "a", []]`, `{"a": 1}`, false},
		{`["in", "a", [null]]`, `{"a": null}`, true},
		{`["in", "a", [null]]`, `{}`, false},
		{`["in", "a", [[1], {"b": 2}]]`, `{"a": {"b": 2}}`, true},
		{`["in", "owner.team", ["red", "blue"]]`, `{"owner": {"team": "blue"}}`, true},
		// dotted paths
		{`["==", "player.color", "red"]`, `{"player": {"color": "red"}}`, true},
		{`["==", "player.color", "red"]`, `{"player.color": "red"}`, false},
		{`["==", "player.color", "red"]`, `{"player": "red"}`, false},
		{`["==", "player.color", "red"]`, `{"player": [{"color": "red"}]}`, false},
		{`["==", "a.b.c", 1]`, `{"a": {"b": {"c": 1}}}`, true},
		{`["==", "a.b.c", 1]`, `{"a": {"b": null}}`, false},
		{`["==", "a.b", {"c": 1}]`, `{"a": {"b": {"c": 1}}}`, true},
		{`["!=", "a.b", 1]`, `{"a": 5}`, false},
		{`["==", "a", 1]`, `[1]`, false},
		{`["==", "a", 1]`, `null`, false},
		{`["==", "a", 1]`, `"a"`, false},
		{`["==", "", 1]`, `{"": 1}`, true},
		// and / or / not
		{`["and"]`, `{}`, true},
		{`["or"]`, `{}`, false},
		{`["and", ["==", "a", 1], ["==", "b", 2]]`, `{"a": 1, "b": 2}`, true},
		{`["and", ["==", "a", 1], ["==", "b", 2]]`, `{"a": 1, "b": 3}`, false},
		{`["or", ["==", "a", 1], ["==", "b", 2]]`, `{"a": 0, "b": 2}`, true},
		{`["or", ["==", "a", 1], ["==", "b", 2]]`, `{"a": 0, "b": 3}`, false},
		{`["not", ["==", "b", 2]]`, `{"a": 1}`, true}, // absent under not
		{`["not", ["==", "a", 1]]`, `{"a": 1}`, false},
		{`["not", ["not", ["==", "a", 1]]]`, `{"a": 1}`, true},
		{`["not", ["and"]]`, `{}`, false},
		{`["and", [">=", "a", 3], ["<=", "a", 7], ["in", "owner.team", ["red", "blue"]]]`, `{"a": 5, "owner": {"team": "red"}}`, true},
		{`["and", [">=", "a", 3], ["<=", "a", 7], ["in", "owner.team", ["red", "blue"]]]`, `{"a": 8, "owner": {"team": "red"}}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.filter+" "+tt.row, func(t *testing.T) {
			f, err := ParseFilter(json.RawMessage(tt.filter))
			if err != nil {
				t.Fatalf("ParseFilter: %v", err)
			}
			if got := f.Match(mustRow(t, tt.row)); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			// The reference evaluator agrees (it checks the tests too).
			if got := refMatch(t, tt.filter, tt.row); got != tt.want {
				t.Errorf("reference evaluator: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseFilterInvalid(t *testing.T) {
	tests := []struct {
		filter string
		want   string
	}{
		{`{"==": 1}`, `a filter must be an array, got object`},
		{`"=="`, `a filter must be an array, got string`},
		{`null`, `a filter must be an array, got null`},
		{`[]`, `a filter must not be an empty array`},
		{`[1, "a", 1]`, `the operator must be a string, got number`},
		{`["like", "a", "x"]`, `unknown operator "like"`},
		{`["AND"]`, `unknown operator "AND"`},
		{`["=="]`, `"==" takes a field and a value, got 0 operands`},
		{`["==", "a"]`, `"==" takes a field and a value, got 1 operands`},
		{`["<", "a", 1, 2]`, `"<" takes a field and a value, got 3 operands`},
		{`["==", 1, 1]`, `the field of "==" must be a string, got number`},
		{`[">=", ["a"], 1]`, `the field of ">=" must be a string, got array`},
		{`["in", "a", 1]`, `"in" takes an array of values, got number`},
		{`["in", "a", {"x": 1}]`, `"in" takes an array of values, got object`},
		{`["in", "a"]`, `"in" takes a field and an array of values, got 1 operands`},
		{`["in", null, [1]]`, `the field of "in" must be a string, got null`},
		{`["not"]`, `"not" takes exactly one operand, got 0`},
		{`["not", ["and"], ["and"]]`, `"not" takes exactly one operand, got 2`},
		{`["not", 1]`, `operand of "not": a filter must be an array, got number`},
		{`["and", ["==", "a", 1], "b"]`, `operand 2 of "and": a filter must be an array, got string`},
		{`["or", ["like", "a", 1]]`, `operand 1 of "or": unknown operator "like"`},
		{`["and", ["or", ["not", []]]]`, `operand 1 of "and": operand 1 of "or": operand of "not": a filter must not be an empty array`},
		{`["==", "a", 1`, `not valid JSON`},
		{`["==", "a", 1] x`, `not valid JSON`},
		{``, `not valid JSON`},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			f, err := ParseFilter(json.RawMessage(tt.filter))
			if err == nil {
				t.Fatalf("got filter %+v, want error %q", f, tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("got error %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseFilterLongOperator(t *testing.T) {
	op := strings.Repeat("é", 100)
	_, err := ParseFilter(json.RawMessage(`["` + op + `"]`))
	if err == nil {
		t.Fatal("got nil error, want unknown operator")
	}
	if got := err.Error(); !strings.HasPrefix(got, `unknown operator "éé`) || !strings.HasSuffix(got, `"…`) || len(got) > 100 {
		t.Errorf("got %q, want a shortened unknown operator message", got)
	}
}
