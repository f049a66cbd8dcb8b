package main

import (
	"log/slog"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
	snorky "github.com/snorkyhq/snorky/cmd/snorky/internal/server"
)

// validateConfig checks everything `serve` checks before it listens (every
// section, the dealers against the models, keys and secrets), by building
// the server without starting it: `check` never says ok for a
// configuration that `serve` refuses.
func validateConfig(cfg *config.Config) error {
	s, err := snorky.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	// Stop what the parts started (the WebSocket ping timer).
	return s.Close()
}
