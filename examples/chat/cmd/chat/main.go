// Command chat serves the chat example next to a running `snorky serve`
// (see examples/chat/README.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/snorkyhq/snorky/examples/chat"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address of the page")
	backend := flag.String("backend", "http://127.0.0.1:5002/backend", "the Snorky backend endpoint")
	ws := flag.String("ws", "ws://127.0.0.1:5001/ws", "the Snorky WebSocket the page connects to")
	flag.Parse()
	key := os.Getenv("SNORKY_API_KEY")
	if key == "" {
		fmt.Fprintln(os.Stderr, "chat: set SNORKY_API_KEY to the server's backend.api_key")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	h, err := chat.New(chat.Config{BackendURL: *backend, APIKey: key, WebSocketURL: *ws, Log: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	fmt.Printf("chat example on http://%s (Snorky at %s)\n", *listen, *ws)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
