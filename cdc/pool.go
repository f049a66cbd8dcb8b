package cdc

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pool is a small pool of ordinary SQL connections to the source database,
// for what the server writes or asks besides replication: publishDeltas
// batches written to the WAL, and pg_current_snapshot(). It connects
// lazily, so a server starts while PostgreSQL is down.
type Pool struct {
	url  string
	once sync.Once
	pool *pgxpool.Pool
	err  error
}

// NewPool returns a pool for url; nothing is opened yet.
func NewPool(url string) *Pool { return &Pool{url: url} }

func (p *Pool) get() (*pgxpool.Pool, error) {
	p.once.Do(func() {
		cfg, err := pgxpool.ParseConfig(p.url)
		if err != nil {
			p.err = fmt.Errorf("database.url: %w", err)
			return
		}
		cfg.MaxConns = 4
		if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
			cfg.ConnConfig.RuntimeParams["application_name"] = "snorky"
		}
		p.pool, p.err = pgxpool.NewWithConfig(context.Background(), cfg)
	})
	return p.pool, p.err
}

// Emit writes a transactional logical message with prefix and payload in a
// transaction of its own, and returns the message's LSN once committed:
// the reader hands its transaction on with an end LSN above it.
func (p *Pool) Emit(ctx context.Context, prefix string, payload []byte) (LSN, error) {
	pool, err := p.get()
	if err != nil {
		return 0, err
	}
	var lsn string
	if err := pool.QueryRow(ctx, `SELECT pg_logical_emit_message(true, $1, $2::bytea)::text`, prefix, payload).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("writing a logical message: %w", err)
	}
	return pglogrepl.ParseLSN(lsn)
}

// CurrentSnapshot returns pg_current_snapshot() as text.
func (p *Pool) CurrentSnapshot(ctx context.Context) (string, error) {
	pool, err := p.get()
	if err != nil {
		return "", err
	}
	var s string
	err = pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&s)
	return s, err
}

// Close closes the pool's connections.
func (p *Pool) Close() {
	if p.pool != nil {
		p.pool.Close()
	}
}
