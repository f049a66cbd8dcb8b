package cdc

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"github.com/snorkyhq/snorky/sync/jsonval"
)

// typeColumn is a column of the type-fidelity table and a generator of
// random values for it, as text input (nil: NULL).
type typeColumn struct {
	name, typ string
	gen       func(r *rand.Rand) *string
}

func s(v string) *string { return &v }

func pick(r *rand.Rand, vs ...string) *string { return s(vs[r.IntN(len(vs))]) }

func sometimes(r *rand.Rand, special []string, f func() string) *string {
	switch n := r.IntN(10); {
	case n == 0:
		return nil
	case n <= 3 && len(special) > 0:
		return pick(r, special...)
	}
	return s(f())
}

func randDigits(r *rand.Rand, n int) string {
	var b strings.Builder
	b.WriteByte(byte('1' + r.IntN(9)))
	for i := 1; i < n; i++ {
		b.WriteByte(byte('0' + r.IntN(10)))
	}
	return b.String()
}

func randText(r *rand.Rand) string {
	alphabet := []string{"a", "Z", " ", "\"", "\\", "'", ",", "{", "}", "\n", "\t", "\x01", "é", "日本", "😀", "NULL", "null", ":", "  "}
	var b strings.Builder
	for n := r.IntN(12); n > 0; n-- {
		b.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

func randTimestamp(r *rand.Rand, tz bool) string {
	year := 1 + r.IntN(3000)
	bc := r.IntN(8) == 0
	if r.IntN(10) == 0 {
		year = 1700 + r.IntN(200) // local mean time offsets with seconds
	}
	s := fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d", year, 1+r.IntN(12), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60))
	if r.IntN(2) == 0 {
		s += fmt.Sprintf(".%06d", r.IntN(1000000))
	}
	if tz {
		s += fmt.Sprintf("%+03d:%02d", r.IntN(27)-13, []int{0, 30, 45}[r.IntN(3)])
	}
	if bc {
		s += " BC"
	}
	return s
}

func randJSON(r *rand.Rand, depth int) string {
	switch n := r.IntN(8); {
	case depth > 2 || n < 3:
		return []string{"1", "-0.5", "12345678901234567890123", "9007199254740993", "1e100", "true", "null", `"x\"y"`, `"é\n"`, "0.1"}[r.IntN(10)]
	case n < 5:
		var parts []string
		for i := r.IntN(4); i > 0; i-- {
			parts = append(parts, randJSON(r, depth+1))
		}
		return "[" + strings.Join(parts, ",") + "]"
	default:
		var parts []string
		for i := r.IntN(4); i > 0; i-- {
			parts = append(parts, fmt.Sprintf(`"k%d": %s`, i, randJSON(r, depth+1)))
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
}

// arrayLiteral quotes every non-null element.
func arrayLiteral(elems []*string) string {
	parts := make([]string, len(elems))
	for i, e := range elems {
		if e == nil {
			parts[i] = "NULL"
			continue
		}
		parts[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(*e) + `"`
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func arrayOf(gen func(r *rand.Rand) *string) func(r *rand.Rand) *string {
	return func(r *rand.Rand) *string {
		if r.IntN(10) == 0 {
			return nil
		}
		elems := make([]*string, r.IntN(5))
		for i := range elems {
			elems[i] = gen(r)
		}
		return s(arrayLiteral(elems))
	}
}

// recordOf generates a composite value as record_in reads it: every
// non-NULL field double-quoted, with '"' and '\' doubled; NULL is empty.
func recordOf(gens ...func(r *rand.Rand) *string) func(r *rand.Rand) *string {
	return func(r *rand.Rand) *string {
		if r.IntN(10) == 0 {
			return nil
		}
		parts := make([]string, len(gens))
		for i, g := range gens {
			if v := g(r); v != nil {
				parts[i] = `"` + strings.NewReplacer(`"`, `""`, `\`, `\\`).Replace(*v) + `"`
			}
		}
		return s("(" + strings.Join(parts, ",") + ")")
	}
}

func matrixOf(gen func(r *rand.Rand) *string) func(r *rand.Rand) *string {
	return func(r *rand.Rand) *string {
		rows, cols := 1+r.IntN(3), 1+r.IntN(3)
		var parts []string
		for i := 0; i < rows; i++ {
			elems := make([]*string, cols)
			for j := range elems {
				elems[j] = gen(r)
			}
			parts = append(parts, arrayLiteral(elems))
		}
		return s("{" + strings.Join(parts, ",") + "}")
	}
}

var (
	genInt8 = func(r *rand.Rand) *string {
		return sometimes(r, []string{"9223372036854775807", "-9223372036854775808", "0"}, func() string { return strconv.FormatInt(r.Int64()-r.Int64(), 10) })
	}
	genNumeric = func(r *rand.Rand) *string {
		return sometimes(r, []string{"NaN", "Infinity", "-Infinity", "0", "1.50", "-0.000000000000000000001", "12345678901234567890123456789012345678"}, func() string {
			return fmt.Sprintf("%s%s.%s", []string{"", "-"}[r.IntN(2)], randDigits(r, 1+r.IntN(30)), randDigits(r, 1+r.IntN(8)))
		})
	}
	genFloat8 = func(r *rand.Rand) *string {
		return sometimes(r, []string{"NaN", "Infinity", "-Infinity", "-0", "0.1", "1e308", "5e-324", "1.7976931348623157e+308"}, func() string {
			return strconv.FormatFloat(math.Float64frombits(r.Uint64()&^(0x7ff<<52)|uint64(900+r.IntN(250))<<52), 'g', -1, 64)
		})
	}
	genTimestamptz = func(r *rand.Rand) *string {
		return sometimes(r, []string{"infinity", "-infinity", "epoch"}, func() string { return randTimestamp(r, true) })
	}
	genText = func(r *rand.Rand) *string {
		return sometimes(r, []string{"", "NULL", `"`}, func() string { return randText(r) })
	}
	genJSONB = func(r *rand.Rand) *string { return sometimes(r, nil, func() string { return randJSON(r, 0) }) }
	genDate  = func(r *rand.Rand) *string {
		return sometimes(r, []string{"infinity", "-infinity", "0044-03-15 BC"}, func() string { return randTimestamp(r, false)[:10] })
	}
)

// genPair generates values of the composite type pair (see
// testTypesMatchToJSONB).
var genPair = recordOf(genNumeric, genText, genTimestamptz, arrayOf(genText), genJSONB)

var typeColumns = []typeColumn{
	{"comp", "pair", genPair},
	{"a_comp", "pair[]", arrayOf(genPair)},
	{"nested", "outer_pair", recordOf(genPair, func(r *rand.Rand) *string { return pick(r, "t", "f") })},
	{"i2", "int2", func(r *rand.Rand) *string {
		return sometimes(r, []string{"-32768", "32767"}, func() string { return strconv.Itoa(r.IntN(65536) - 32768) })
	}},
	{"i4", "int4", func(r *rand.Rand) *string {
		return sometimes(r, []string{"-2147483648", "2147483647"}, func() string { a, b := r.Int32(), r.Int32(); return strconv.Itoa(int(a) - int(b)) })
	}},
	{"i8", "int8", genInt8},
	{"num", "numeric", genNumeric},
	{"num38", "numeric(38,10)", func(r *rand.Rand) *string {
		return sometimes(r, []string{"NaN", "1234567890123456789012345678.0123456789"}, func() string { return randDigits(r, 1+r.IntN(27)) + "." + randDigits(r, 10) })
	}},
	{"f4", "float4", func(r *rand.Rand) *string {
		return sometimes(r, []string{"NaN", "Infinity", "-Infinity", "-0", "1e-45", "3.4028235e+38"}, func() string {
			return strconv.FormatFloat(float64(r.Float32()*float32(math.Pow(10, float64(r.IntN(20)-10)))), 'g', -1, 32)
		})
	}},
	{"f8", "float8", genFloat8},
	{"b", "bool", func(r *rand.Rand) *string {
		return sometimes(r, nil, func() string { return []string{"t", "f"}[r.IntN(2)] })
	}},
	{"txt", "text", genText},
	{"vc", "varchar(40)", genText},
	{"ch", "char(5)", func(r *rand.Rand) *string { return sometimes(r, []string{"", "ab"}, func() string { return "x" }) }},
	{"u", "uuid", func(r *rand.Rand) *string {
		return sometimes(r, nil, func() string {
			return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", r.Uint32(), r.IntN(1<<16), r.IntN(1<<16), r.IntN(1<<16), r.Int64N(1<<48))
		})
	}},
	{"by", "bytea", func(r *rand.Rand) *string {
		return sometimes(r, []string{`\x`}, func() string {
			b := make([]byte, r.IntN(20))
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			return fmt.Sprintf(`\x%x`, b)
		})
	}},
	{"d", "date", genDate},
	{"tm", "time", func(r *rand.Rand) *string {
		return sometimes(r, []string{"24:00:00"}, func() string { return randTimestamp(r, false)[11:] })
	}},
	{"tmtz", "timetz", func(r *rand.Rand) *string {
		return sometimes(r, nil, func() string { return randTimestamp(r, true)[11:] })
	}},
	{"ts", "timestamp", func(r *rand.Rand) *string {
		return sometimes(r, []string{"infinity", "-infinity"}, func() string { return randTimestamp(r, false) })
	}},
	{"tstz", "timestamptz", genTimestamptz},
	{"iv", "interval", func(r *rand.Rand) *string {
		return sometimes(r, []string{"0", "-1 year -2 mons +3 days -04:05:06.789", "178000000 years"}, func() string {
			return fmt.Sprintf("%d years %d mons %d days %d:%02d:%02d.%03d", r.IntN(100)-50, r.IntN(24)-12, r.IntN(60)-30, r.IntN(100)-50, r.IntN(60), r.IntN(60), r.IntN(1000))
		})
	}},
	{"js", "json", genJSONB},
	{"jsb", "jsonb", genJSONB},
	{"mood", "mood", func(r *rand.Rand) *string {
		return sometimes(r, nil, func() string { return []string{"sad", "ok", "happy \"quoted\""}[r.IntN(3)] })
	}},
	{"posnum", "posnum", func(r *rand.Rand) *string {
		return sometimes(r, nil, func() string { return randDigits(r, 1+r.IntN(25)) + ".5" })
	}},
	{"money", "money", func(r *rand.Rand) *string {
		return sometimes(r, nil, func() string { return fmt.Sprintf("%d.%02d", r.IntN(100000), r.IntN(100)) })
	}},
	{"oid", "oid", func(r *rand.Rand) *string {
		return sometimes(r, nil, func() string { return strconv.Itoa(int(r.Uint32() >> 1)) })
	}},
	{"i2v", "int2vector", func(r *rand.Rand) *string { return sometimes(r, []string{""}, func() string { return "1 -2 300" }) }},
	{"a_i4", "int4[]", arrayOf(func(r *rand.Rand) *string {
		return sometimes(r, nil, func() string { return strconv.Itoa(int(r.Int32())) })
	})},
	{"a_i8_2d", "int8[][]", matrixOf(genInt8)},
	{"a_txt", "text[]", arrayOf(genText)},
	{"a_num", "numeric[]", arrayOf(genNumeric)},
	{"a_f8", "float8[]", arrayOf(genFloat8)},
	{"a_tstz", "timestamptz[]", arrayOf(genTimestamptz)},
	{"a_d", "date[]", arrayOf(genDate)},
	{"a_jsb", "jsonb[]", arrayOf(genJSONB)},
	{"a_b", "bool[]", arrayOf(func(r *rand.Rand) *string { return pick(r, "t", "f") })},
	{"a_mood", "mood[]", arrayOf(func(r *rand.Rand) *string { return pick(r, "sad", "happy \"quoted\"") })},
	{"a_by", "bytea[]", arrayOf(func(r *rand.Rand) *string { return pick(r, `\x00ff`, `\x`) })},
	{"a_box", "box[]", func(r *rand.Rand) *string {
		return pick(r, `{"(1,2),(3,4)";"(0.5,-1),(2,2)"}`, `{NULL;"(1,2),(3,4)"}`, "{}")
	}},
	{"a_posnum", "posnum[]", arrayOf(func(r *rand.Rand) *string { return s(randDigits(r, 20)) })},
	{"a_lb", "int4[]", func(r *rand.Rand) *string { return pick(r, "[2:3]={1,2}", "[0:1][1:2]={{1,2},{3,NULL}}", "{}") }},
}

// TestTypesMatchToJSONB is the type-fidelity property test (D6, T14): random
// rows over many types, streamed through the reader from a database whose
// defaults are odd display settings, must equal SELECT to_jsonb(t) in a
// session with PostgreSQL's default display settings and the configured
// TimeZone.
func TestTypesMatchToJSONB(t *testing.T) {
	// Half-hour offsets and LMT with seconds; whole-hour offsets.
	for i, tz := range []string{"America/St_Johns", "Europe/Paris"} {
		t.Run(tz, func(t *testing.T) { testTypesMatchToJSONB(t, tz, uint64(i)) })
	}
}

func testTypesMatchToJSONB(t *testing.T, tz string, seed uint64) {
	const rows = 1000
	url := pgtest.NewDatabase(t)
	db := queryString(t, url, "SELECT current_database()")
	var cols []string
	for _, c := range typeColumns {
		cols = append(cols, c.name+" "+c.typ)
	}
	execSQL(t, url,
		`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy "quoted"')`,
		`CREATE DOMAIN posnum AS numeric CHECK (VALUE > 0)`,
		`CREATE TYPE pair AS (n numeric, "Label" text, at timestamptz, tags text[], doc jsonb)`,
		`CREATE TYPE outer_pair AS (p pair, ok bool)`,
		`CREATE TABLE typed (id int PRIMARY KEY, `+strings.Join(cols, ", ")+`)`,
		fmt.Sprintf(`ALTER DATABASE %s SET DateStyle = 'SQL, DMY'`, pgx.Identifier{db}.Sanitize()),
		fmt.Sprintf(`ALTER DATABASE %s SET IntervalStyle = 'postgres_verbose'`, pgx.Identifier{db}.Sanitize()),
		fmt.Sprintf(`ALTER DATABASE %s SET TimeZone = 'America/New_York'`, pgx.Identifier{db}.Sanitize()),
		fmt.Sprintf(`ALTER DATABASE %s SET bytea_output = 'escape'`, pgx.Identifier{db}.Sanitize()),
		fmt.Sprintf(`ALTER DATABASE %s SET extra_float_digits = -3`, pgx.Identifier{db}.Sanitize()),
	)
	cfg := testConfig(url, "typed")
	cfg.TimeZone = tz
	sink := &collector{}
	startReader(t, cfg, sink)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if got := queryString(t, url, "SHOW DateStyle"); got != "SQL, DMY" {
		t.Fatalf("database default DateStyle: got %q, want SQL, DMY", got)
	}

	var names, params []string
	for i, c := range typeColumns {
		names = append(names, c.name)
		params = append(params, fmt.Sprintf("$%d::text::%s", i+2, c.typ))
	}
	insert := `INSERT INTO typed (id, ` + strings.Join(names, ", ") + `) VALUES ($1, ` + strings.Join(params, ", ") + `)`
	rnd := rand.New(rand.NewPCG(1, seed))
	for start := 0; start < rows; start += 100 {
		batch := &pgx.Batch{}
		for id := start; id < start+100; id++ {
			args := []any{id}
			for _, c := range typeColumns {
				v := c.gen(rnd)
				if v == nil {
					args = append(args, nil)
				} else {
					args = append(args, *v)
				}
			}
			batch.Queue(insert, args...)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			t.Fatalf("inserting rows: %v", err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Also updates, so old rows (REPLICA IDENTITY FULL) are compared too.
	if _, err := conn.Exec(ctx, `UPDATE typed SET i2 = NULL WHERE id % 10 = 0`); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "all rows streamed", func() bool { return len(sink.changes()) == rows+rows/10 })

	// PostgreSQL's default display settings and the configured zone.
	for _, set := range []string{"SET DateStyle = ISO", "SET IntervalStyle = postgres", "SET bytea_output = hex", "SET extra_float_digits = 1", "SET TimeZone = '" + tz + "'"} {
		if _, err := conn.Exec(ctx, set); err != nil {
			t.Fatal(err)
		}
	}
	want := make(map[string]string)
	rs, err := conn.Query(ctx, `SELECT id, to_jsonb(t)::text FROM typed t`)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var id int
		var j string
		if err := rs.Scan(&id, &j); err != nil {
			t.Fatal(err)
		}
		want[strconv.Itoa(id)] = j
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}

	mismatches := 0
	check := func(kind string, row []Column, wantJSON string) {
		got := rowJSON(row)
		g, err := jsonval.Canonical([]byte(got))
		if err != nil {
			mismatches++
			t.Errorf("%s: invalid JSON %s: %v", kind, got, err)
			return
		}
		w, _ := jsonval.Canonical([]byte(wantJSON))
		if g != w {
			mismatches++
			if mismatches <= 10 {
				t.Errorf("%s mismatch:\ngot  %s\nwant %s\n%s", kind, got, wantJSON, diffColumns(got, wantJSON))
			}
		}
	}
	for _, c := range sink.changes() {
		id := string(c.New[0].Value)
		switch c.Op {
		case Insert:
			// The insert carried the original i2; compare with i2 restored
			// for updated rows.
			w := want[id]
			if n, _ := strconv.Atoi(id); n%10 == 0 {
				continue
			}
			check("insert "+id, c.New, w)
		case Update:
			check("update "+id, c.New, want[id])
		}
	}
	t.Logf("compared %d rows over %d columns: %d mismatches", len(want), len(typeColumns)+1, mismatches)
	if mismatches > 0 {
		t.Errorf("mismatches: got %d, want 0", mismatches)
	}
}

// diffColumns names the keys whose values differ between two JSON objects.
func diffColumns(got, want string) string {
	var g, w map[string]any
	if err := jsonUnmarshal(got, &g); err != nil {
		return ""
	}
	if err := jsonUnmarshal(want, &w); err != nil {
		return ""
	}
	var out []string
	for k, wv := range w {
		gv, _ := jsonMarshalCanonical(g[k])
		wvs, _ := jsonMarshalCanonical(wv)
		if gv != wvs {
			out = append(out, fmt.Sprintf("  %s: got %s, want %s", k, gv, wvs))
		}
	}
	return strings.Join(out, "\n")
}
