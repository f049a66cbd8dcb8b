package cdc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func TestTransient(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"starting up", &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}, true},
		{"shutting down", fmt.Errorf("connecting: %w", &pgconn.PgError{Code: "57P01"}), true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"no database", &pgconn.PgError{Code: "3D000"}, false},
		{"bad password", &pgconn.PgError{Code: "28P01"}, false},
		{"something else", errors.New("tls: bad certificate"), false},
	}
	for _, tt := range tests {
		if got := Transient(tt.err); got != tt.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// TestConnectProblem: real connection failures get a fix naming the
// database and role; an error of a statement on an open connection, or a
// transient one, is not a connection problem.
func TestConnectProblem(t *testing.T) {
	ctx := context.Background()
	admin := pgtest.AdminURL(t)
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/no_such_database_x"
	missing := u.String()
	_, err = pgx.Connect(ctx, missing)
	p, ok := ConnectProblem(err, missing)
	if !ok || p.Key != "database.url" || !strings.Contains(p.What, "does not exist") || !strings.Contains(p.Fix, `CREATE DATABASE "no_such_database_x" OWNER `) {
		t.Errorf("database missing: got %+v, %v; want a fix with CREATE DATABASE", p, ok)
	}

	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SELECT * FROM no_such_table_x`)
	if _, ok := ConnectProblem(err, admin); ok {
		t.Errorf("a statement's error %v was taken for a connection problem", err)
	}
	if _, ok := ConnectProblem(&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, admin); ok {
		t.Error("connection refused was taken for a permanent problem")
	}
	if _, ok := ConnectProblem(nil, admin); ok {
		t.Error("nil was taken for a problem")
	}
}
