package dealers

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/snorkyhq/snorky/sync/jsonval"
)

// op is a filter operator.
type op uint8

const (
	opEq op = iota + 1
	opNe
	opLt
	opLe
	opGt
	opGe
	opIn
	opAnd
	opOr
	opNot
)

var ops = map[string]op{
	"==": opEq, "!=": opNe, "<": opLt, "<=": opLe, ">": opGt, ">=": opGe,
	"in": opIn, "and": opAnd, "or": opOr, "not": opNot,
}

var opNames = [...]string{opEq: "==", opNe: "!=", opLt: "<", opLe: "<=", opGt: ">", opGe: ">=",
	opIn: "in", opAnd: "and", opOr: "or", opNot: "not"}

func (o op) String() string { return opNames[o] }

// Filter is a compiled filter expression (spec §3.4 and D3). A Filter is
// immutable; Match may be called from several goroutines at once.
type Filter struct {
	root node
}

// node is one operator of a filter.
type node struct {
	op    op
	field string        // comparisons and in: the dotted field as written
	path  []string      // field split at dots
	val   jsonval.Value // comparisons: the operand; in: the array of values
	num   *jsonval.Number
	kids  []node // and, or, not
}

// ParseFilter validates and compiles a filter expression. The error's text
// is the reason the filter is invalid, without a prefix; callers answer
// "Invalid filter: " + err.Error().
func ParseFilter(raw json.RawMessage) (*Filter, error) {
	v, err := jsonval.Parse(raw)
	if err != nil {
		return nil, errors.New("not valid JSON")
	}
	f := &Filter{}
	if err := compileNode(&f.root, &v); err != nil {
		return nil, err
	}
	return f, nil
}

func compileNode(n *node, v *jsonval.Value) error {
	if v.Kind() != jsonval.KindArray {
		return fmt.Errorf("a filter must be an array, got %s", v.Kind())
	}
	args := v.Elems()
	if len(args) == 0 {
		return errors.New("a filter must not be an empty array")
	}
	if args[0].Kind() != jsonval.KindString {
		return fmt.Errorf("the operator must be a string, got %s", args[0].Kind())
	}
	o, ok := ops[args[0].Text()]
	if !ok {
		return fmt.Errorf("unknown operator %s", quote(args[0].Text()))
	}
	n.op = o
	args = args[1:]
	switch o {
	case opAnd, opOr, opNot:
		if o == opNot && len(args) != 1 {
			return fmt.Errorf(`"not" takes exactly one operand, got %d`, len(args))
		}
		n.kids = make([]node, len(args))
		for i := range args {
			if err := compileNode(&n.kids[i], &args[i]); err != nil {
				if o == opNot {
					return fmt.Errorf(`operand of "not": %w`, err)
				}
				return fmt.Errorf("operand %d of %q: %w", i+1, o.String(), err)
			}
		}
		return nil
	}
	if len(args) != 2 {
		if o == opIn {
			return fmt.Errorf(`"in" takes a field and an array of values, got %d operands`, len(args))
		}
		return fmt.Errorf("%q takes a field and a value, got %d operands", o.String(), len(args))
	}
	if args[0].Kind() != jsonval.KindString {
		return fmt.Errorf("the field of %q must be a string, got %s", o.String(), args[0].Kind())
	}
	n.field = args[0].Text()
	n.path = strings.Split(n.field, ".")
	if o == opIn {
		if args[1].Kind() != jsonval.KindArray {
			return fmt.Errorf(`"in" takes an array of values, got %s`, args[1].Kind())
		}
		n.val = args[1]
		return nil
	}
	n.val = args[1]
	if _, small := n.val.SmallInt(); n.val.Kind() == jsonval.KindNumber && !small {
		num, ok := n.val.Number()
		if !ok {
			return fmt.Errorf("invalid number %s", n.val.Text())
		}
		n.num = &num
	}
	return nil
}

// quote quotes s for an error message, shortened when long.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && s[cut]&0xC0 == 0x80 {
			cut--
		}
		return fmt.Sprintf("%q…", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}

// Match reports whether the filter is true for the row. It never fails.
func (f *Filter) Match(r *Row) bool {
	return f.root.eval(&r.root)
}

func (n *node) eval(root *jsonval.Value) bool {
	switch n.op {
	case opAnd:
		for i := range n.kids {
			if !n.kids[i].eval(root) {
				return false
			}
		}
		return true
	case opOr:
		for i := range n.kids {
			if n.kids[i].eval(root) {
				return true
			}
		}
		return false
	case opNot:
		return !n.kids[0].eval(root)
	}
	v := root.Lookup(n.path)
	if v == nil {
		return false // absent: every comparison is false
	}
	switch n.op {
	case opEq:
		return n.equal(v)
	case opNe:
		return !n.equal(v)
	case opIn:
		elems := n.val.Elems()
		for i := range elems {
			if v.Equal(&elems[i]) {
				return true
			}
		}
		return false
	}
	var c int
	switch {
	case v.Kind() == jsonval.KindNumber && n.val.Kind() == jsonval.KindNumber:
		var ok bool
		if c, ok = v.CompareNumber(&n.val, n.num); !ok {
			return false
		}
	case v.Kind() == jsonval.KindString && n.val.Kind() == jsonval.KindString:
		c = strings.Compare(v.Text(), n.val.Text())
	default:
		return false // no ordering across types, nor of bool, null, arrays, objects
	}
	switch n.op {
	case opLt:
		return c < 0
	case opLe:
		return c <= 0
	case opGt:
		return c > 0
	case opGe:
		return c >= 0
	}
	return false
}

// equal compares v with the node's operand, using the pre-parsed number.
func (n *node) equal(v *jsonval.Value) bool {
	if v.Kind() == jsonval.KindNumber && n.val.Kind() == jsonval.KindNumber {
		c, ok := v.CompareNumber(&n.val, n.num)
		return ok && c == 0
	}
	return v.Equal(&n.val)
}
