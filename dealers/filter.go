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
	field string   // comparisons and in: the dotted field as written
	path  []string // field split at dots
	val   value    // comparisons: the operand; in: the array of values
	num   *jsonval.Number
	kids  []node // and, or, not
}

// ParseFilter validates and compiles a filter expression. The error's text
// is the reason the filter is invalid, without a prefix; callers answer
// "Invalid filter: " + err.Error().
func ParseFilter(raw json.RawMessage) (*Filter, error) {
	v, err := parseValue(raw)
	if err != nil {
		return nil, errors.New("not valid JSON")
	}
	f := &Filter{}
	if err := compileNode(&f.root, &v); err != nil {
		return nil, err
	}
	return f, nil
}

func compileNode(n *node, v *value) error {
	if v.kind != kindArray {
		return fmt.Errorf("a filter must be an array, got %s", v.kind)
	}
	args := v.c.elems
	if len(args) == 0 {
		return errors.New("a filter must not be an empty array")
	}
	if args[0].kind != kindString {
		return fmt.Errorf("the operator must be a string, got %s", args[0].kind)
	}
	o, ok := ops[args[0].s]
	if !ok {
		return fmt.Errorf("unknown operator %s", quote(args[0].s))
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
	if args[0].kind != kindString {
		return fmt.Errorf("the field of %q must be a string, got %s", o.String(), args[0].kind)
	}
	n.field = args[0].s
	n.path = strings.Split(n.field, ".")
	if o == opIn {
		if args[1].kind != kindArray {
			return fmt.Errorf(`"in" takes an array of values, got %s`, args[1].kind)
		}
		n.val = args[1]
		return nil
	}
	n.val = args[1]
	if n.val.kind == kindNumber && !n.val.small {
		num, ok := n.val.parseNumber()
		if !ok {
			return fmt.Errorf("invalid number %s", n.val.s)
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

func (n *node) eval(root *value) bool {
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
	v := root.lookup(n.path)
	if v == nil {
		return false // absent: every comparison is false
	}
	switch n.op {
	case opEq:
		return n.equal(v)
	case opNe:
		return !n.equal(v)
	case opIn:
		for i := range n.val.c.elems {
			if equal(v, &n.val.c.elems[i]) {
				return true
			}
		}
		return false
	}
	var c int
	switch {
	case v.kind == kindNumber && n.val.kind == kindNumber:
		var ok bool
		if c, ok = compareNumbers(v, &n.val, n.num); !ok {
			return false
		}
	case v.kind == kindString && n.val.kind == kindString:
		c = strings.Compare(v.s, n.val.s)
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
func (n *node) equal(v *value) bool {
	if v.kind == kindNumber && n.val.kind == kindNumber {
		c, ok := compareNumbers(v, &n.val, n.num)
		return ok && c == 0
	}
	return equal(v, &n.val)
}
