package dealers

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/snorkyhq/snorky/sync/jsonval"
)

// Kind is how a dealer decides which items match a row (spec §3.2).
type Kind string

const (
	// KindBroadcast: every item matches every row; queries are ignored.
	KindBroadcast Kind = "broadcast"
	// KindSimple: an item matches when its query equals the row's key field.
	KindSimple Kind = "simple"
	// KindFilter: the query is a filter expression (spec §3.4).
	KindFilter Kind = "filter"
)

// Config declares one dealer (the `dealers.<name>` section of the server
// configuration).
type Config struct {
	// Model is the model whose deltas the dealer routes. Required.
	Model string `koanf:"model"`
	// Kind is broadcast, simple or filter. Required.
	Kind Kind `koanf:"kind"`
	// Key is, for a simple dealer only, the column or dotted path
	// ("owner.team") whose value is matched against queries. Required for
	// simple dealers, empty for the others.
	Key string `koanf:"key"`
}

// Validate reports the first problem of the configuration. The message
// begins with the offending key ("kind: ..."); New prefixes the dealer.
func (c Config) Validate() error {
	if c.Model == "" {
		return errors.New("model: required")
	}
	switch c.Kind {
	case KindBroadcast, KindFilter:
		if c.Key != "" {
			return fmt.Errorf("key: only a simple dealer has a key (kind is %s)", c.Kind)
		}
	case KindSimple:
		if c.Key == "" {
			return errors.New("key: required for a simple dealer (a column or a dotted path)")
		}
	case "":
		return errors.New("kind: required (broadcast, simple or filter)")
	default:
		return fmt.Errorf("kind: unknown kind %q (want broadcast, simple or filter)", string(c.Kind))
	}
	return nil
}

// Query is a query compiled for one dealer by Compile. The zero Query is the
// query of a broadcast dealer.
type Query struct {
	kind Kind
	key  string  // simple: canonical key; filter: canonical filter text
	f    *Filter // filter dealers
}

// Dealer routes the rows of one model to subscription items. It holds the
// items added to it and an index, so that the cost of Match grows with the
// number of matching subscriptions, not with the number of subscriptions.
//
// A Dealer is not safe for concurrent use: the DataSync engine serialises
// every call (it holds its lock around routing and subscription changes).
type Dealer struct {
	name  string
	cfg   Config
	path  []string // simple: the key split at dots
	items int
	all   subSet // every subscription with an item, with its item count

	keys keyMap[subSet] // simple: canonical key → subscriptions

	filters map[string]*filterEntry // filter: canonical filter text → entry
	fields  []*fieldIndex           // filter: the indexed fields, in creation order
	byField map[string]*fieldIndex  // filter: dotted field → index
	linear  []*filterEntry          // filter: entries with nothing to index
	paths   map[string]*sharedPath  // filter: fields of all filters, split once

	scratch []byte // canonical text of the value being looked up
}

// New returns an empty dealer. Its errors name the configuration key:
// "dealers.TasksByOwner.key: required ...".
func New(name string, cfg Config) (*Dealer, error) {
	if name == "" {
		return nil, errors.New("dealers: a dealer needs a name")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dealers.%s.%w", name, err)
	}
	d := &Dealer{name: name, cfg: cfg}
	switch cfg.Kind {
	case KindSimple:
		d.path = strings.Split(cfg.Key, ".")
	case KindFilter:
		d.filters = make(map[string]*filterEntry)
		d.byField = make(map[string]*fieldIndex)
		d.paths = make(map[string]*sharedPath)
	}
	return d, nil
}

// Name returns the dealer's name (the subscription target).
func (d *Dealer) Name() string { return d.name }

// Model returns the model whose deltas the dealer routes.
func (d *Dealer) Model() string { return d.cfg.Model }

// Kind returns the dealer's kind.
func (d *Dealer) Kind() Kind { return d.cfg.Kind }

// Len returns the number of items the dealer holds.
func (d *Dealer) Len() int { return d.items }

// Compile validates a query for this dealer and compiles it. A filter
// dealer's errors are the reason of spec §3.4: the caller answers
// "Invalid filter: " + err.Error(). A simple dealer accepts any JSON value;
// a broadcast dealer ignores the query.
func (d *Dealer) Compile(query json.RawMessage) (Query, error) {
	switch d.cfg.Kind {
	case KindSimple:
		v, err := jsonval.Parse(query)
		if err != nil {
			return Query{}, errors.New("the query is not valid JSON")
		}
		return Query{kind: KindSimple, key: v.Canonical()}, nil
	case KindFilter:
		v, err := jsonval.Parse(query)
		if err != nil {
			return Query{}, errors.New("not valid JSON")
		}
		f := &Filter{}
		if err := compileNode(&f.root, &v); err != nil {
			return Query{}, err
		}
		return Query{kind: KindFilter, key: v.Canonical(), f: f}, nil
	}
	return Query{kind: KindBroadcast}, nil
}

func (d *Dealer) check(q Query) {
	if q.kind != d.cfg.Kind && !(q.kind == "" && d.cfg.Kind == KindBroadcast) {
		panic(fmt.Sprintf("dealers: %s query used on %s dealer %q", q.kind, d.cfg.Kind, d.name))
	}
}

// Add adds an item of subscription sub. A subscription may add several
// items, equal or not, to one dealer. q must come from this dealer's Compile
// (a query of another kind panics).
func (d *Dealer) Add(sub uint64, q Query) {
	d.check(q)
	switch d.cfg.Kind {
	case KindSimple:
		s, _ := d.keys.get(q.key)
		s.add(sub)
		d.keys.set(q.key, s)
	case KindFilter:
		e := d.filters[q.key]
		if e == nil {
			e = d.newEntry(q)
			d.filters[q.key] = e
		}
		e.subs.add(sub)
	}
	d.items++
	d.all.add(sub)
}

// Remove removes one item of subscription sub with a query equal to q (the
// same JSON value, compiled again or not). It does nothing when there is no
// such item.
func (d *Dealer) Remove(sub uint64, q Query) {
	d.check(q)
	switch d.cfg.Kind {
	case KindSimple:
		s, ok := d.keys.get(q.key)
		if !ok || !s.remove(sub) {
			return
		}
		if s.len() == 0 {
			d.keys.delete(q.key)
		} else {
			d.keys.set(q.key, s)
		}
	case KindFilter:
		e := d.filters[q.key]
		if e == nil || !e.subs.remove(sub) {
			return
		}
		if e.subs.len() == 0 {
			d.dropEntry(e)
			delete(d.filters, q.key)
		}
	case KindBroadcast:
		if d.all.find(sub) < 0 {
			return
		}
	}
	d.items--
	d.all.remove(sub)
}

// Match calls yield for each subscription with at least one item matching
// the row. A subscription is reported once per matching distinct query (so
// at most once unless it holds several different matching filters); callers
// that need each subscription once deduplicate. yield must not change the
// dealer.
func (d *Dealer) Match(row *Row, yield func(sub uint64)) {
	switch d.cfg.Kind {
	case KindBroadcast:
		d.all.each(yield)
	case KindSimple:
		v := row.root.Lookup(d.path)
		if v == nil {
			return // absent key: nothing matches
		}
		d.scratch = v.AppendCanonical(d.scratch[:0])
		if s, ok := d.keys.lookup(d.scratch); ok {
			s.each(yield)
		}
	case KindFilter:
		d.matchFilters(row, yield)
	}
}

// All calls yield once for each subscription with an item on the dealer
// (a truncate reaches them all). yield must not change the dealer.
func (d *Dealer) All(yield func(sub uint64)) {
	d.all.each(yield)
}
