package cdc

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pinnedParams are the session settings of the replication connection, so
// that decoded values do not depend on the cluster's defaults (D6).
func pinnedParams(tz string) map[string]string {
	return map[string]string{
		"DateStyle":          "ISO",
		"IntervalStyle":      "postgres",
		"bytea_output":       "hex",
		"extra_float_digits": "1",
		"TimeZone":           tz,
		"client_encoding":    "UTF8",
	}
}

func connConfig(cfg Config, replication bool) (*pgconn.Config, error) {
	pc, err := pgconn.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	if pc.RuntimeParams["application_name"] == "" {
		pc.RuntimeParams["application_name"] = "snorky"
	}
	boundLink(pc, cfg)
	if replication {
		pc.RuntimeParams["replication"] = "database"
		pc.DialFunc = rawDial(pc.DialFunc)
		for k, v := range pinnedParams(cfg.TimeZone) {
			pc.RuntimeParams[k] = v
		}
	}
	return pc, nil
}

// boundLink bounds how long a dead network keeps the reader's connections
// hanging: connecting gives up after the dead-link timeout (unless the URL
// sets connect_timeout), and TCP keepalives probe an idle socket so that a
// peer that vanished is noticed within about that timeout too.
func boundLink(pc *pgconn.Config, cfg Config) {
	t := cfg.withDefaults().ReceiveTimeout
	if t <= 0 {
		return
	}
	if pc.ConnectTimeout == 0 {
		pc.ConnectTimeout = t
	}
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable:   true,
		Idle:     max(t/2, time.Second),
		Interval: max(t/6, time.Second),
		Count:    3,
	}}
	pc.DialFunc = d.DialContext
}

// connectSQL opens a normal (non-replication) connection.
func connectSQL(ctx context.Context, cfg Config) (*pgx.Conn, error) {
	pcfg, err := pgx.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	if pcfg.RuntimeParams["application_name"] == "" {
		pcfg.RuntimeParams["application_name"] = "snorky"
	}
	boundLink(&pcfg.Config, cfg)
	conn, err := pgx.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	return conn, nil
}

// connectReplication opens a logical replication connection with the
// pinned session settings.
func connectReplication(ctx context.Context, cfg Config) (*pgconn.PgConn, error) {
	pc, err := connConfig(cfg, true)
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("opening replication connection: %w", err)
	}
	return conn, nil
}
