// Package dealers routes row data to DataSync subscription items (spec §3.2
// and §3.4): the three dealer kinds (broadcast, simple, filter), the filter
// expression language, and the match index. It knows nothing of PostgreSQL
// or sockets: the DataSync engine builds one Row per row image of a delta and
// asks each dealer of the delta's model which subscriptions match it.
//
// # What it owns
//
//   - Row: row data parsed once (NewRow) and shared by every dealer and
//     filter that evaluates it. Values keep their exact JSON meaning:
//     numbers are compared by exact value (jsonval, never through float64,
//     with a fast path for integers of up to 18 digits), strings by code
//     point, and equality is that of spec §1.8 (1 == 1.0, true != 1,
//     arrays and objects structurally).
//   - Filter: a compiled filter expression (ParseFilter). A filter that
//     parsed never fails to evaluate; a comparison on an absent field is
//     false, and ordering across types, or of booleans, null, arrays and
//     objects, is false (D3). Dotted fields traverse nested objects (D2).
//   - Dealer: the items (subscription, query) added to one configured dealer
//     and an index over them. A simple dealer maps the canonical text of
//     each query (the jsonval.Canonical form) to its subscriptions. A filter
//     dealer keeps each distinct filter once, listed under one equality or
//     "in" condition that the filter requires (see index.go); filters
//     without one are evaluated for every row. So the cost of Match grows
//     with the number of indexed fields and matching candidates, not with
//     the number of subscriptions.
//
// # Invariants
//
//   - Len is the number of items added and not yet removed; All yields each
//     subscription that holds at least one item exactly once.
//   - Match yields every subscription with an item that matches the row, and
//     no other; a subscription holding several distinct matching filters may
//     be yielded once per filter, so the engine deduplicates per delta.
//   - Queries equal as JSON values (§1.8) are the same query: Remove with a
//     query compiled again from equal JSON removes the item.
//
// # Concurrency
//
// A Dealer is not safe for concurrent use: the DataSync engine serialises all
// calls under its lock, and Match uses a scratch buffer of the dealer. Rows
// and Filters are immutable and may be shared between goroutines. The
// package starts no goroutines.
package dealers
