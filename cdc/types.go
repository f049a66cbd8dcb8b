package cdc

import (
	"context"
	"fmt"
)

// valueKind is how a column's text (as pgoutput sends it, in a session with
// the pinned display settings) becomes the JSON that to_jsonb renders.
type valueKind uint8

const (
	kindString      valueKind = iota // JSON string of the text
	kindNumber                       // verbatim when a JSON number, else a string (NaN, Infinity)
	kindBool                         // t/f
	kindJSON                         // json/jsonb text, verbatim
	kindDate                         // verbatim string (ISO)
	kindTimestamp                    // ISO → XSD: 'T' separator
	kindTimestamptz                  // ISO → XSD: 'T' separator, ±hh:mm offset
	kindArray                        // {…} → JSON array of elem
	kindVector                       // int2vector/oidvector: space-separated elem
	kindComposite                    // (a,b,…) → JSON object of the fields
)

// pgType is how values of one PostgreSQL type are decoded.
type pgType struct {
	kind   valueKind
	elem   *pgType // kindArray, kindVector
	delim  byte    // kindArray: element delimiter
	fields []field // kindComposite, in attribute order
}

// field is an attribute of a composite type.
type field struct {
	name []byte // as a JSON string
	typ  *pgType
}

// Built-in type OIDs with a fixed rendering.
const (
	oidBool        = 16
	oidInt8        = 20
	oidInt2        = 21
	oidInt2Vector  = 22
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidOIDVector   = 30
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
	oidJSONB       = 3802
)

var (
	typeString = &pgType{kind: kindString}
	typeNumber = &pgType{kind: kindNumber}
)

func builtinType(oid uint32) *pgType {
	switch oid {
	case oidBool:
		return &pgType{kind: kindBool}
	case oidInt2, oidInt4, oidInt8, oidFloat4, oidFloat8, oidNumeric:
		return typeNumber
	case oidJSON, oidJSONB:
		return &pgType{kind: kindJSON}
	case oidDate:
		return &pgType{kind: kindDate}
	case oidTimestamp:
		return &pgType{kind: kindTimestamp}
	case oidTimestamptz:
		return &pgType{kind: kindTimestamptz}
	case oidInt2Vector:
		return &pgType{kind: kindVector, elem: typeNumber}
	case oidOIDVector:
		return &pgType{kind: kindVector, elem: typeString}
	case oidText, oidOID, 18, 19, 1042, 1043, 2950, 17, 1083, 1266, 1186:
		return typeString
	}
	return nil
}

// typeRow is the catalog description of a type (pg_type).
type typeRow struct {
	OID      uint32
	Type     byte       // typtype: b, c, d, e, p, r, m
	Elem     uint32     // typelem of a true array
	BaseType uint32     // typbasetype of a domain
	Delim    byte       // typdelim
	IsArray  bool       // a true array (array_subscript_handler)
	Attrs    []typeAttr // attributes of a composite type, in order
}

// typeAttr is an attribute of a composite type (pg_attribute).
type typeAttr struct {
	Name string
	Type uint32
}

// typeLookup fetches the catalog rows of the given type OIDs. Missing OIDs
// are simply absent from the result.
type typeLookup func(ctx context.Context, oids []uint32) ([]typeRow, error)

// typeCache resolves type OIDs to decoders, asking the catalog once per OID.
type typeCache struct {
	types map[uint32]*pgType
	rows  map[uint32]typeRow
}

func newTypeCache() *typeCache {
	return &typeCache{types: make(map[uint32]*pgType), rows: make(map[uint32]typeRow)}
}

// forget drops every type read from the catalog, so that the next resolve
// reads them again.
func (c *typeCache) forget() {
	clear(c.types)
	clear(c.rows)
}

// resolve returns the decoders of oids, looking up unknown ones.
func (c *typeCache) resolve(ctx context.Context, lookup typeLookup, oids []uint32) ([]*pgType, error) {
	// Fetch the catalog rows of every OID reachable from oids (element
	// types, domain base types), a level at a time.
	want := oids
	for depth := 0; len(want) > 0; depth++ {
		if depth > 16 {
			return nil, fmt.Errorf("resolving types: nesting too deep")
		}
		var missing []uint32
		seen := make(map[uint32]bool)
		for _, oid := range want {
			if c.types[oid] != nil || builtinType(oid) != nil || seen[oid] {
				continue
			}
			if _, ok := c.rows[oid]; !ok {
				missing = append(missing, oid)
				seen[oid] = true
			}
		}
		if len(missing) == 0 {
			break
		}
		if lookup == nil {
			break
		}
		rows, err := lookup(ctx, missing)
		if err != nil {
			return nil, fmt.Errorf("looking up column types: %w", err)
		}
		want = want[:0:0]
		for _, r := range rows {
			c.rows[r.OID] = r
			if r.Type == 'd' && r.BaseType != 0 {
				want = append(want, r.BaseType)
			}
			if r.IsArray && r.Elem != 0 {
				want = append(want, r.Elem)
			}
			for _, a := range r.Attrs {
				want = append(want, a.Type)
			}
		}
		for _, oid := range missing {
			if _, ok := c.rows[oid]; !ok {
				// Unknown to the catalog (dropped type): render as text.
				c.rows[oid] = typeRow{OID: oid, Type: 'b'}
			}
		}
	}
	out := make([]*pgType, len(oids))
	for i, oid := range oids {
		out[i] = c.build(oid, 0)
	}
	return out, nil
}

func (c *typeCache) build(oid uint32, depth int) *pgType {
	if t := c.types[oid]; t != nil {
		return t
	}
	t := builtinType(oid)
	if t == nil {
		r := c.rows[oid]
		switch {
		case depth > 16:
			t = typeString
		case r.Type == 'd' && r.BaseType != 0:
			t = c.build(r.BaseType, depth+1)
		case r.IsArray && r.Elem != 0:
			elemDelim := c.rows[r.Elem].Delim
			if builtinType(r.Elem) != nil || elemDelim == 0 {
				elemDelim = ','
			}
			t = &pgType{kind: kindArray, elem: c.build(r.Elem, depth+1), delim: elemDelim}
		case r.Type == 'c' && len(r.Attrs) > 0:
			t = &pgType{kind: kindComposite}
			for _, a := range r.Attrs {
				t.fields = append(t.fields, field{name: appendString(nil, []byte(a.Name)), typ: c.build(a.Type, depth+1)})
			}
		default:
			// Enums, ranges, other base types: to_jsonb renders the text.
			t = typeString
		}
	}
	c.types[oid] = t
	return t
}
