// Command snorky is the Snorky server: a real-time sync server for
// PostgreSQL speaking the Snorky wire protocol over WebSocket.
//
// Usage:
//
//	snorky demo                    run the TodoMVC demo on a throwaway PostgreSQL
//	snorky serve --config FILE     run the server
//	snorky check --config FILE     check the PostgreSQL prerequisites
//	snorky migrate --config FILE   apply the snorky schema's migrations
//	snorky version                 print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ownProcess = true
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "snorky:", err)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// ownProcess is true when the server is the process (not a test that
// runs it in-process): it may then set process-wide settings such as the
// memory limit.
var ownProcess bool

const usage = `Snorky: a real-time sync server for PostgreSQL.

Usage:
  snorky demo [--port 8080] [--host 127.0.0.1]
                                      run the TodoMVC example on a throwaway PostgreSQL
                                      (--host 0.0.0.0 in a container or on a remote machine)
  snorky serve --config FILE          run the server
  snorky check --config FILE          check the whole configuration and the PostgreSQL
                                      prerequisites, each problem with its fix
  snorky migrate --config FILE [--down N]
                                      apply (or revert) the snorky schema's migrations
  snorky version                      print the version

Configuration: a YAML file (see README), overridden by SNORKY_<SECTION>__<KEY>
environment variables, e.g. SNORKY_BACKEND__API_KEY.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", "", "path of the YAML configuration file")
		if err := fs.Parse(args[1:]); err != nil {
			return errUsage
		}
		return runServe(ctx, *path, os.Environ(), stderr, nil)
	case "check":
		fs := flag.NewFlagSet("check", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", "", "path of the YAML configuration file")
		if err := fs.Parse(args[1:]); err != nil {
			return errUsage
		}
		return check(ctx, *path, os.Environ(), stdout)
	case "migrate":
		fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", "", "path of the YAML configuration file")
		down := fs.Int("down", 0, "revert the N most recent migrations instead")
		if err := fs.Parse(args[1:]); err != nil {
			return errUsage
		}
		return migrateCommand(ctx, *path, os.Environ(), *down, stdout)
	case "demo":
		return demo(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "snorky", versionString())
		return nil
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "snorky: unknown command %q\n\n%s", args[0], usage)
	return errUsage
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		return v + " " + bi.GoVersion
	}
	return "(devel)"
}
