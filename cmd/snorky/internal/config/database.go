package config

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/dealers"
)

// CDCConfig turns the database section and the models into the reader's
// configuration. Table names are normalised to pgoutput's "schema.table".
func (c *Config) CDCConfig() (cdc.Config, error) {
	d := c.Database
	out := cdc.Config{URL: d.URL, Slot: d.Slot, Publication: d.Publication, TimeZone: d.TimeZone,
		StatusInterval: d.StatusInterval, HeartbeatInterval: d.HeartbeatInterval, MaxTxBytes: int(d.MaxTxBytes),
		ReceiveTimeout: d.DeadLinkTimeout}
	for _, name := range slices.Sorted(maps.Keys(c.Models)) {
		m := c.Models[name]
		if m.Table == "" {
			continue
		}
		ri := m.ReplicaIdentity
		if ri == "" {
			ri = d.ReplicaIdentity
		}
		out.Tables = append(out.Tables, cdc.TableConfig{Name: m.Table, ReplicaIdentity: ri})
	}
	if err := out.Validate(); err != nil {
		return out, RenamedError{Msg: TableKeys(c).Replace(err.Error()), Err: err}
	}
	return out, nil
}

// NormalTable returns a model's table as pgoutput names it ("schema.table").
func NormalTable(key, table string) (string, error) {
	if table == "" {
		return "", nil
	}
	schema, name, err := cdc.SplitTableName(table)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	return schema + "." + name, nil
}

// ValidateDatabase checks the rules that need both the models and the
// database section (reliability.md R5).
func (c *Config) ValidateDatabase() error {
	for _, name := range slices.Sorted(maps.Keys(c.Models)) {
		m := c.Models[name]
		if m.Table != "" && c.Database == nil {
			return fmt.Errorf("models.%s.table: a model with a table needs the database section (database.url)", name)
		}
		switch m.ReplicaIdentity {
		case "", cdc.IdentityFull, cdc.IdentityDefault:
		default:
			return fmt.Errorf("models.%s.replica_identity: %q is not full or default", name, m.ReplicaIdentity)
		}
	}
	if c.Database == nil {
		return nil
	}
	switch c.Database.ReplicaIdentity {
	case cdc.IdentityFull, cdc.IdentityDefault:
	default:
		return fmt.Errorf("database.replica_identity: %q is not full or default", c.Database.ReplicaIdentity)
	}
	if c.Database.History.MaxAge <= 0 {
		return errors.New("database.history.max_age: must be positive")
	}
	if c.Database.History.MaxBytes <= 0 {
		return errors.New("database.history.max_bytes: must be positive")
	}
	// Under REPLICA IDENTITY DEFAULT the old row of an update or delete
	// holds only the key: a dealer that routes on anything else cannot
	// tell who saw the row.
	for _, name := range slices.Sorted(maps.Keys(c.Dealers)) {
		dl := c.Dealers[name]
		m, ok := c.Models[dl.Model]
		if !ok || m.Table == "" {
			continue
		}
		ri := m.ReplicaIdentity
		if ri == "" {
			ri = c.Database.ReplicaIdentity
		}
		if ri != cdc.IdentityDefault {
			continue
		}
		switch dealers.Kind(dl.Kind) {
		case dealers.KindFilter:
			return fmt.Errorf("dealers.%s: a filter dealer needs every column of the old row, but model %s uses replica_identity: default (old rows carry only the key); set models.%s.replica_identity: full", name, dl.Model, dl.Model)
		case dealers.KindSimple:
			col, _, _ := strings.Cut(dl.Key, ".")
			if len(m.Key) == 0 || !slices.Contains(m.Key, col) {
				return fmt.Errorf("dealers.%s.key: %q is not a key column of model %s, and under replica_identity: default old rows carry only the key; set models.%s.replica_identity: full (or models.%s.key if %q is the key)", name, dl.Key, dl.Model, dl.Model, dl.Model, col)
			}
		}
	}
	return nil
}

// TableKeys names the reader's "database.tables[i]" by the model keys of
// the file ("models.Todo.table"), in the order CDCConfig lists the tables.
func TableKeys(cfg *Config) *strings.Replacer {
	var pairs []string
	i := 0
	for _, name := range slices.Sorted(maps.Keys(cfg.Models)) {
		if cfg.Models[name].Table == "" {
			continue
		}
		pairs = append(pairs, fmt.Sprintf("database.tables[%d]", i), "models."+name+".table")
		i++
	}
	// Longest first, so tables[1] never rewrites the start of tables[10].
	slices.Reverse(pairs)
	for j := 0; j+1 < len(pairs); j += 2 {
		pairs[j], pairs[j+1] = pairs[j+1], pairs[j]
	}
	return strings.NewReplacer(pairs...)
}

// RenameProblems rewrites the reader's keys in problems as the file's.
func RenameProblems(cfg *Config, problems []cdc.Problem) []cdc.Problem {
	r := TableKeys(cfg)
	out := make([]cdc.Problem, len(problems))
	for i, p := range problems {
		out[i] = cdc.Problem{Key: r.Replace(p.Key), What: r.Replace(p.What), Fix: r.Replace(p.Fix)}
	}
	return out
}

// RenamedError is Err with its text in the configuration's keys (Msg).
type RenamedError struct {
	Msg string
	Err error
}

func (e RenamedError) Error() string { return e.Msg }
func (e RenamedError) Unwrap() error { return e.Err }

// fileError reports an error reading the configuration file. For a
// YAML syntax error it names the line the problem is on: the YAML parser
// reports the line where the enclosing block began, or one too few, so
// find the first line whose inclusion makes the file unparseable with the
// same problem.
func fileError(path string, err error) error {
	msg := err.Error()
	i := strings.Index(msg, "yaml: line ")
	b, rerr := os.ReadFile(path)
	if i < 0 || rerr != nil {
		return fmt.Errorf("reading config file %s: %w", path, err)
	}
	problem := yamlProblem(msg[i:])
	lines := strings.SplitAfter(string(b), "\n")
	for n := 1; n <= len(lines); n++ {
		_, perr := yaml.Parser().Unmarshal([]byte(strings.Join(lines[:n], "")))
		if perr != nil && yamlProblem(perr.Error()) == problem {
			return fmt.Errorf("config file %s: line %d: %s: %s", path, n, problem, strings.TrimSpace(lines[n-1]))
		}
	}
	return fmt.Errorf("reading config file %s: %w", path, err)
}

// yamlProblem strips "yaml: line N: " from a YAML error.
func yamlProblem(msg string) string {
	msg = strings.TrimPrefix(msg, "yaml: ")
	if strings.HasPrefix(msg, "line ") {
		if _, rest, ok := strings.Cut(msg, ": "); ok {
			return rest
		}
	}
	return msg
}

// TableUses lists what the models and dealers need of their tables' columns
// (cdc.CheckUses): each model's key (or, without one, a primary key) and
// columns, and each simple dealer's key column.
func (c *Config) TableUses() []cdc.Use {
	var uses []cdc.Use
	for _, name := range slices.Sorted(maps.Keys(c.Models)) {
		m := c.Models[name]
		if m.Table == "" {
			continue
		}
		uses = append(uses,
			cdc.Use{Key: "models." + name + ".key", Table: m.Table, Columns: m.Key, NeedsPrimaryKey: len(m.Key) == 0},
			cdc.Use{Key: "models." + name + ".columns", Table: m.Table, Columns: m.Columns})
	}
	for _, name := range slices.Sorted(maps.Keys(c.Dealers)) {
		d := c.Dealers[name]
		m, ok := c.Models[d.Model]
		if !ok || m.Table == "" || d.Key == "" {
			continue
		}
		col, _, _ := strings.Cut(d.Key, ".")
		uses = append(uses, cdc.Use{Key: "dealers." + name + ".key", Table: m.Table, Columns: []string{col}})
	}
	return uses
}
