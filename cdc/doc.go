// Package cdc tails PostgreSQL with logical replication (pgoutput) and hands
// whole committed transactions (Txn) in commit order to a Sink, confirming
// to PostgreSQL only what the Sink has taken.
package cdc
