package cdc

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Warnings inspects the database for what works but is unsafe, changing
// nothing, and returns a sentence for each: today, whether any role can
// forge what snorky.publish sends.
func Warnings(ctx context.Context, cfg Config) []string {
	conn, err := connectSQL(ctx, cfg.withDefaults())
	if err != nil {
		return nil // Check reports the connection
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if w := forgeryWarning(ctx, conn); w != "" {
		return []string{w}
	}
	return nil
}

// forgeryWarning warns when the snorky schema is installed and every role
// may call pg_logical_emit_message: then any role that can connect can forge
// what snorky.publish sends (PostgreSQL 15 grants it to PUBLIC).
func forgeryWarning(ctx context.Context, conn *pgx.Conn) string {
	var installed, public bool
	err := conn.QueryRow(ctx, `SELECT to_regprocedure('snorky.publish(jsonb,jsonb)') IS NOT NULL,
		has_function_privilege('public', 'pg_logical_emit_message(boolean,text,text)', 'EXECUTE')`).Scan(&installed, &public)
	if err != nil || !installed || !public {
		return ""
	}
	return "every role may call pg_logical_emit_message, so any role that can connect can forge a message of snorky.publish; " +
		"as a superuser run: REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text), pg_logical_emit_message(boolean, text, bytea) FROM PUBLIC; " +
		"and GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO the server's role (see README, Publishing from SQL)"
}
