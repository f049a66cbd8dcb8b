package dealers

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
)

var benchSizes = []int{10, 1000, 100000, 1000000}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// benchRows returns pre-parsed task rows whose owner_id is spread over
// [0, keys), so with many keys each Match looks up a different key (cache
// misses included).
func benchRows(b *testing.B, keys int) []*Row {
	r := rand.New(rand.NewPCG(1, uint64(keys)))
	rows := make([]*Row, 4096)
	for i := range rows {
		data := fmt.Sprintf(`{"id": %d, "title": "Buy milk and eggs", "completed": false, "owner_id": %d, "prio": %d, "created_at": "2024-05-01T12:00:00+00:00"}`,
			i, r.IntN(keys), r.IntN(5))
		rows[i] = mustRow(b, data)
	}
	return rows
}

// buildDealer fills a dealer with n subscriptions, one item each, and
// returns the heap it holds per subscription.
func buildDealer(b *testing.B, cfg Config, n int, query func(i int) string) (*Dealer, float64) {
	before := heapInUse()
	d := mustDealer(b, cfg)
	for i := range n {
		d.Add(uint64(i), mustCompile(b, d, query(i)))
	}
	after := heapInUse()
	runtime.KeepAlive(d)
	return d, float64(int64(after)-int64(before)) / float64(n)
}

// benchRoute measures one Match call on a pre-parsed row (row parsing is
// BenchmarkNewRow). subs=N routes rows whose keys are spread over all N
// subscriptions; subs=N-hot routes rows whose keys are among 64, so the
// touched part of the index stays in the CPU cache: the difference between
// the two is memory latency, not work.
func benchRoute(b *testing.B, cfg Config, query func(i int) string) {
	for _, n := range benchSizes {
		benchRouteN(b, "subs="+strconv.Itoa(n), cfg, n, n, query)
	}
	for _, n := range benchSizes[2:] {
		benchRouteN(b, "subs="+strconv.Itoa(n)+"-hot", cfg, n, 64, query)
	}
}

func benchRouteN(b *testing.B, name string, cfg Config, n, keys int, query func(i int) string) {
	b.Run(name, func(b *testing.B) {
		rows := benchRows(b, keys)
		d, perSub := buildDealer(b, cfg, n, query)
		matched := 0
		yield := func(uint64) { matched++ }
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			d.Match(rows[i&4095], yield)
			i++
		}
		b.ReportMetric(perSub, "bytes/sub")
		b.ReportMetric(float64(matched)/float64(i), "subs/op")
	})
}

func BenchmarkRouteSimple(b *testing.B) {
	benchRoute(b, Config{Model: "Task", Kind: KindSimple, Key: "owner_id"}, strconv.Itoa)
}

// BenchmarkRouteFilter: every subscription has its own filter, indexed by
// an equality on owner_id; half of them also test prio.
func BenchmarkRouteFilter(b *testing.B) {
	benchRoute(b, Config{Model: "Task", Kind: KindFilter}, func(i int) string {
		if i%2 == 0 {
			return `["==", "owner_id", ` + strconv.Itoa(i) + `]`
		}
		return `["and", ["==", "owner_id", ` + strconv.Itoa(i) + `], [">=", "prio", 2]]`
	})
}

// BenchmarkRouteBroadcast yields every subscription: the cost is per match.
func BenchmarkRouteBroadcast(b *testing.B) {
	for _, n := range benchSizes {
		benchRouteN(b, "subs="+strconv.Itoa(n), Config{Model: "Task", Kind: KindBroadcast}, n, n,
			func(int) string { return "null" })
	}
}

func BenchmarkNewRow(b *testing.B) {
	data := json.RawMessage(`{"id": 123456, "title": "Buy milk and eggs", "completed": false, "owner_id": 42, "prio": 3, "created_at": "2024-05-01T12:00:00+00:00", "tags": ["home", "shop"], "meta": {"color": "red", "size": 1.5}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := NewRow(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFilterMatch(b *testing.B) {
	f, err := ParseFilter(json.RawMessage(`["and", [">=", "prio", 3], ["<=", "prio", 7], ["in", "meta.color", ["red", "blue"]], ["!=", "title", "x"]]`))
	if err != nil {
		b.Fatal(err)
	}
	r := mustRow(b, `{"id": 123456, "title": "Buy milk", "owner_id": 42, "prio": 3, "meta": {"color": "blue"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if !f.Match(r) {
			b.Fatal("no match")
		}
	}
}

func BenchmarkParseFilter(b *testing.B) {
	raw := json.RawMessage(`["and", [">=", "prio", 3], ["<=", "prio", 7], ["in", "meta.color", ["red", "blue"]]]`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseFilter(raw); err != nil {
			b.Fatal(err)
		}
	}
}
