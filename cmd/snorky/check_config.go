package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/snorkyhq/snorky/cdc"
)

// validateConfig checks everything `serve` checks before it listens (every
// section, the dealers against the models, keys and secrets), by building
// the server without starting it: `check` never says ok for a
// configuration that `serve` refuses.
func validateConfig(cfg *Config) error {
	s, err := newServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	// Stop what the parts started (the WebSocket ping timer).
	return s.ws.Shutdown(context.Background())
}

// tableKeys names the reader's "database.tables[i]" by the model keys of
// the file ("models.Todo.table"), in the order cdcConfig lists the tables.
func tableKeys(cfg *Config) *strings.Replacer {
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

// renameProblems rewrites the reader's keys in problems as the file's.
func renameProblems(cfg *Config, problems []cdc.Problem) []cdc.Problem {
	r := tableKeys(cfg)
	out := make([]cdc.Problem, len(problems))
	for i, p := range problems {
		out[i] = cdc.Problem{Key: r.Replace(p.Key), What: r.Replace(p.What), Fix: r.Replace(p.Fix)}
	}
	return out
}

// formatProblems writes problems as `check` prints them.
func formatProblems(problems []cdc.Problem) string {
	var b strings.Builder
	for _, p := range problems {
		fmt.Fprintf(&b, "problem: %s: %s\n  fix: %s\n", p.Key, p.What, p.Fix)
	}
	return b.String()
}

// permanentError is a database error that retrying cannot cure: serve
// exits with it.
type permanentError struct{ msg string }

func (e permanentError) Error() string { return e.msg }

// renamedError is err with its text in the configuration's keys.
type renamedError struct {
	msg string
	err error
}

func (e renamedError) Error() string { return e.msg }
func (e renamedError) Unwrap() error { return e.err }

// problemsError is the error of serve for problems, in check's words.
func problemsError(problems []cdc.Problem) error {
	return permanentError{strings.TrimRight(formatProblems(problems), "\n")}
}

// configFileError reports an error reading the configuration file. For a
// YAML syntax error it names the line the problem is on: the YAML parser
// reports the line where the enclosing block began, or one too few, so
// find the first line whose inclusion makes the file unparseable with the
// same problem.
func configFileError(path string, err error) error {
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
