// Package server assembles one Snorky server from its configuration: the
// service registries, the DataSync engine, the WAL reader, the WebSocket
// and backend listeners, and the order in which they shut down. The snorky
// command's serve and demo and the in-process tests all run this one
// assembly.
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/snorkyhq/snorky/backendapi"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
	"github.com/snorkyhq/snorky/dealers"
	"github.com/snorkyhq/snorky/sync/chat"
	"github.com/snorkyhq/snorky/sync/cursors"
	"github.com/snorkyhq/snorky/sync/datasync"
	"github.com/snorkyhq/snorky/sync/identity"
	"github.com/snorkyhq/snorky/sync/messaging"
	"github.com/snorkyhq/snorky/sync/pubsub"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/token"
	"github.com/snorkyhq/snorky/wsapi"
)

// Server is one Snorky server: its listeners, registries and services.
type Server struct {
	// Version is logged when the server starts serving.
	Version string

	cfg     *config.Config
	log     *slog.Logger
	metrics *prometheus.Registry

	front, back       *rpc.Registry
	datasync          *datasync.Engine
	reader            *cdc.Reader // nil without a database
	pool              *cdc.Pool   // nil without a database
	ws                *wsapi.Handler
	sockjs            *wsapi.SockJS // nil unless frontend.sockjs_path is set
	backend           *backendapi.Handler
	frontLn, backLn   net.Listener
	frontSrv, backSrv *http.Server

	// In a cluster (cluster section): the connection to the other nodes,
	// the consumer of the stream that feeds the engine, and the context
	// of the publisher's retries.
	cluster     *cluster.Cluster
	feed        *cluster.Feed
	direct      *cluster.DirectPublisher // without a database
	publisher   *cluster.Publisher       // with a database
	clusterStop context.CancelFunc
	bridges     []func()
	svcs        services
}

// services are the services a cluster bridges across nodes.
type services struct {
	pubsub    *pubsub.Service
	messaging *messaging.Service
	identity  *identity.Directory
	chat      *chat.Service
	cursors   *cursors.Service
}

// New validates cfg and builds every part, without listening. A server
// that is never run is released with Close.
func New(cfg *config.Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.ValidateDatabase(); err != nil {
		return nil, err
	}
	if err := cfg.ValidateCluster(); err != nil {
		return nil, err
	}
	policy, _ := cfg.PubSubPolicy()
	s := &Server{
		cfg:     cfg,
		log:     log,
		metrics: prometheus.NewRegistry(),
		front:   rpc.NewRegistry(log),
		back:    rpc.NewRegistry(log),
	}
	s.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	in := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "snorky_messages_in_total",
		Help: "Requests received, by endpoint and service.",
	}, []string{"endpoint", "service"})
	s.metrics.MustRegister(in)
	s.front.SetObserver(rpc.Observer{In: func(svc string) { in.WithLabelValues("frontend", svc).Inc() }})
	s.back.SetObserver(rpc.Observer{In: func(svc string) { in.WithLabelValues("backend", svc).Inc() }})

	names := cfg.Services
	signer, err := token.New([]byte(cfg.Tokens.Secret))
	if err != nil {
		return nil, fmt.Errorf("tokens.secret: %w", err)
	}
	dsCfg := datasync.Config{
		Service:        names.DataSync,
		Models:         map[string]datasync.Model{},
		Dealers:        map[string]dealers.Config{},
		AcquireTimeout: cfg.Tokens.AcquireTimeout,
		PendingBytes:   noCap(int(cfg.Limits.PendingBytes)),
		Signer:         signer,
		Database:       cfg.Database != nil,
	}
	for name, m := range cfg.Models {
		table, err := config.NormalTable("models."+name+".table", m.Table)
		if err != nil {
			return nil, err
		}
		dsCfg.Models[name] = datasync.Model{Table: table, Key: m.Key, Columns: m.Columns}
	}
	dsCfg.PositionInterval = cfg.DataSync.PositionInterval
	dsCfg.ResumeWait = cfg.DataSync.ResumeWait
	dsCfg.ResumeTTL = cfg.Tokens.ResumeTTL
	if cfg.Database != nil {
		dsCfg.HistoryMaxAge = cfg.Database.History.MaxAge
		dsCfg.HistoryMaxBytes = int(cfg.Database.History.MaxBytes)
		dsCfg.MaxTxBytes = int(cfg.Database.MaxTxBytes)
		s.pool = cdc.NewPool(cfg.Database.URL)
		dsCfg.PublishWAL = func(ctx context.Context, payload []byte) (cdc.LSN, error) {
			return s.pool.Emit(ctx, datasync.MessagePrefix, payload)
		}
		dsCfg.CurrentSnapshot = s.pool.CurrentSnapshot
	}
	for name, d := range cfg.Dealers {
		dsCfg.Dealers[name] = dealers.Config{Model: d.Model, Kind: dealers.Kind(d.Kind), Key: d.Key}
	}
	lim := cfg.Limits
	dir, err := identity.New(signer, identity.Config{DefaultTTL: cfg.Tokens.IdentityTTL, MaxIdentityBytes: int(lim.IdentityBytes), MaxTokenBytes: int(lim.TokenBytes)})
	if err != nil {
		return nil, identityKeys.wrap(err)
	}
	chatSvc, err := chat.New(names.Chat, chat.Config{MaxChannels: noCap(lim.ChannelsPerConnection), MaxBodyBytes: noCap(int(lim.MessageBodyBytes)),
		MaxChannelBytes: noCap(int(lim.ChannelBytes)), MaxMembers: noCap(lim.MembersPerReply)})
	if err != nil {
		return nil, chatKeys.wrap(err)
	}
	cursorSvc, err := cursors.New(names.Cursors, cursors.Config{MaxDocuments: noCap(lim.DocumentsPerConn),
		MaxDocumentBytes: noCap(int(lim.DocumentBytes)), MaxHandleBytes: noCap(int(lim.CursorHandleBytes)), MaxListed: noCap(lim.MembersPerReply)})
	if err != nil {
		return nil, cursorsKeys.wrap(err)
	}
	ps := pubsub.New(names.PubSub, pubsub.Config{Policy: policy, MaxChannelsPerConn: lim.ChannelsPerConnection, MaxChannelBytes: int(lim.ChannelBytes)})
	dsCfg.Publish = func(ch, msg json.RawMessage) error { return ps.Publish(ch, msg) }
	if cfg.Cluster != nil {
		s.cluster, err = cluster.Connect(cfg.Cluster, cfg.Tokens.AcquireTimeout, log.With("component", "cluster"), s.metrics)
		if err != nil {
			return nil, err
		}
		// A publishDeltas batch travels in one NATS message.
		if limit := s.cluster.MaxPayload() - 16<<10; dsCfg.MaxTxBytes == 0 || dsCfg.MaxTxBytes > limit {
			dsCfg.MaxTxBytes = limit
		}
		dsCfg.StreamFed = true
		dsCfg.Claim = s.cluster.Claim
		dsCfg.Rebind = s.cluster.Rebind
		dsCfg.Resumed = s.cluster.Resumed
		if cfg.Database == nil {
			s.direct = s.cluster.NewDirectPublisher(datasync.MessagePrefix)
			dsCfg.PublishWAL = s.direct.Publish
		}
	}
	s.datasync, err = datasync.New(dsCfg, log.With("service", "datasync"), s.metrics)
	if err != nil {
		s.closeCluster()
		return nil, datasyncKeys.wrap(err)
	}
	ready := map[string]backendapi.ReadyFunc{}
	if cfg.Database != nil {
		cc, err := cfg.CDCConfig()
		if err != nil {
			s.closeCluster()
			return nil, err
		}
		var sink cdc.Sink = s.datasync
		if s.cluster != nil {
			// The owner of the slot publishes to the stream; every node
			// (the owner too) feeds its engine from the stream.
			var ctx context.Context
			ctx, s.clusterStop = context.WithCancel(context.Background())
			pub := s.cluster.Publisher(ctx)
			s.publisher = pub
			pub.SetActive(func() bool { return s.reader.State() == cdc.StateStreaming })
			sink = pub
			s.feed = s.cluster.Feed(s.datasync, s.pool.CurrentSnapshot)
		}
		s.reader = cdc.NewReader(cc, sink, log.With("component", "cdc"), cdc.NewMetrics(s.metrics))
		if s.cluster == nil {
			ready["database"] = s.reader.Health // connecting, standby, stopped
		}
	} else if s.cluster != nil {
		// No database: publishDeltas batches go to the stream directly.
		s.feed = s.cluster.Feed(s.datasync, nil)
	}
	if s.cluster != nil {
		// A standby (another node owns the slot) serves from the stream:
		// the node is ready once it has caught up with it.
		ready["cluster"] = func() error {
			if err := s.cluster.Health(); err != nil {
				return err
			}
			return s.feed.Health()
		}
	}
	s.svcs = services{
		pubsub:    ps,
		messaging: messaging.New(names.Messaging, messaging.Config{MaxNamesPerConn: lim.NamesPerConnection, MaxNameBytes: int(lim.NameBytes), MaxListed: lim.ParticipantsPerReply}),
		identity:  dir,
		chat:      chatSvc,
		cursors:   cursorSvc,
	}
	register := func(r *rpc.Registry, name string, svc rpc.Service) error {
		if err := r.Register(name, svc); err != nil {
			return fmt.Errorf("services: %w", err)
		}
		return nil
	}
	for _, e := range []struct {
		reg  *rpc.Registry
		name string
		svc  rpc.Service
	}{
		{s.front, names.PubSub, ps},
		{s.front, names.Messaging, s.svcs.messaging},
		{s.back, names.PubSubBackend, pubsub.NewBackend(ps)},
		{s.front, names.DataSync, s.datasync.Frontend().Limited(datasync.Limits{MaxSubscriptions: lim.SubscriptionsPerConn, MaxTokenBytes: int(lim.TokenBytes)})},
		{s.back, names.DataSyncBackend, s.datasync.Backend().Limited(int(lim.TokenBytes))},
		{s.front, names.Identity, dir.Frontend()},
		{s.back, names.IdentityBackend, dir.Backend()},
		{s.front, names.Chat, chatSvc},
		{s.front, names.Cursors, cursorSvc},
	} {
		if err := register(e.reg, e.name, e.svc); err != nil {
			return nil, err
		}
	}

	s.ws, err = wsapi.NewHandler(wsapi.Config{
		AllowedOrigins:    cfg.Frontend.AllowedOrigins,
		MaxMessageBytes:   int64(cfg.Frontend.MaxMessageBytes),
		SendQueueBytes:    int(cfg.Frontend.SendQueueBytes),
		PingInterval:      zeroDisables(cfg.Frontend.PingInterval),
		WriteTimeout:      cfg.Frontend.WriteTimeout,
		MaxLag:            cfg.Frontend.MaxLag,
		CommandsPerSecond: cfg.Limits.CommandsPerSecond,
		RateLimitGrace:    cfg.Limits.RateLimitGrace,
		IdleTimeout:       zeroDisables(lim.IdleTimeout),
		RequireIdentity:   cfg.Frontend.RequireIdentity,
		AuthTimeout:       lim.AuthTimeout,
		IdentityService:   names.Identity,
		MaxConnections:    lim.MaxConnections,
		ConnectionsPerIP:  lim.ConnectionsPerIP,
		TrustedProxies:    lim.TrustedProxies,
	}, s.front, dir.AuthenticateToken, log.With("endpoint", "frontend"), s.metrics)
	if err != nil {
		return nil, wsapiKeys.wrap(err)
	}
	s.backend, err = backendapi.New(backendapi.Config{
		Path:         cfg.Backend.Path,
		APIKey:       cfg.Backend.APIKey,
		MaxBodyBytes: int64(cfg.Backend.MaxBodyBytes),
		Pprof:        cfg.Backend.Pprof,
		MetricsAuth:  cfg.MetricsAuth(),
		BodyTimeout:  cfg.Limits.HTTPReadTimeout,
	}, s.back, log.With("endpoint", "backend"), s.metrics, s.metrics, ready)
	if err != nil {
		return nil, backendKeys.wrap(err)
	}
	if s.reader != nil {
		s.backend.SetDetail("slot", func() any { return s.reader.Status() }) // state, wal_status, a slot about to be lost
	}
	if s.cluster != nil {
		s.backend.SetDetail("cluster", func() any {
			role := "standby"
			switch {
			case s.reader == nil:
				role = "no database"
			case s.reader.State() == cdc.StateStreaming:
				role = "owner"
			}
			nats := "connected"
			if err := s.cluster.Health(); err != nil {
				nats = err.Error()
			}
			return map[string]any{"node": s.cluster.ID, "role": role, "nats": nats, "stream_lag": s.feed.Lag()}
		})
	}
	s.backend.SetDetail("window", func() any {
		w := s.datasync.Window()
		return map[string]any{"epoch": w.Epoch, "transactions": w.Transactions, "bytes": w.Bytes, "floor": w.Floor, "newest": w.Newest}
	})
	return s, nil
}

// Listen opens both listeners, so that their addresses are known before
// Run. Run calls it when it was not called.
func (s *Server) Listen() error {
	if s.frontLn != nil {
		return nil
	}
	front, err := listen("frontend", s.cfg.Frontend.Listen, s.cfg.Frontend.TLS)
	if err != nil {
		return err
	}
	back, err := listen("backend", s.cfg.Backend.Listen, s.cfg.Backend.TLS)
	if err != nil {
		front.Close()
		return err
	}
	s.frontLn, s.backLn = front, back
	mux := http.NewServeMux()
	mux.Handle(s.cfg.Frontend.Path, s.ws)
	s.mountFrontend(mux)
	s.frontSrv = s.httpServer(mux) // hardening.go
	s.backSrv = s.httpServer(s.backend)
	return nil
}

func listen(what, addr string, t config.TLSConfig) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s.listen: %w", what, err)
	}
	if t.CertFile == "" {
		return ln, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s.tls: loading certificate: %w", what, err)
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), nil
}

// Run serves until ctx is done, then shuts down in the order of style.md
// point 13: stop accepting, close WebSockets with 1001, stop the WAL reader
// (which sends its final acknowledgement), close database connections.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		s.Close()
		return err
	}
	dsCtx, stopDS := context.WithCancel(context.Background())
	defer stopDS()
	feedDone := make(chan struct{})
	if s.cluster != nil {
		// Before serving: the services must be bridged before their first
		// request, and a node cut off from NATS cannot serve correctly.
		stopBridges, err := s.startCluster(ctx, dsCtx, feedDone)
		if err != nil {
			s.Close()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		defer stopBridges() // when Run fails before the shutdown below
	} else {
		close(feedDone)
	}
	errc := make(chan error, 3)
	go func() { errc <- serveHTTP(s.frontSrv, s.frontLn, "frontend") }()
	go func() { errc <- serveHTTP(s.backSrv, s.backLn, "backend") }()
	dbCtx, stopDB := context.WithCancel(context.Background())
	defer stopDB()
	go s.datasync.Run(dsCtx)
	if s.pool != nil {
		defer s.pool.Close()
	}
	dbDone := make(chan struct{})
	if s.reader != nil {
		go func() {
			defer close(dbDone)
			if err := s.runDatabase(dbCtx); err != nil {
				errc <- fmt.Errorf("database: %w", err)
			}
		}()
	} else {
		close(dbDone)
	}
	s.log.Info("snorky serving", "frontend", s.FrontendURL(), "backend", s.BackendURL(), "version", s.Version)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	s.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.Shutdown.Timeout)
	defer cancel()
	// 1. Stop accepting; in-flight backend calls finish.
	s.frontSrv.Shutdown(sctx)
	s.backSrv.Shutdown(sctx)
	// 2. Close every WebSocket with 1001 and wait for their goroutines.
	if err := s.ws.Shutdown(sctx); err != nil {
		s.log.Warn("closing WebSockets timed out", "err", err)
	}
	s.shutdownSockJS(sctx)
	// In a cluster: the other nodes learn at once that this node's
	// members, names and cursors are gone.
	for i := len(s.bridges) - 1; i >= 0; i-- {
		s.bridges[i]()
	}
	s.bridges = nil
	// 3. Stop reading the WAL: the reader finishes the transaction in hand,
	// sends its final status update and closes its connections.
	stopDB()
	if s.clusterStop != nil {
		s.publisher.Drain(2 * time.Second) // what is stored is not published again by the next owner
		s.clusterStop()                    // a publish still retrying gives up
	}
	select {
	case <-dbDone:
	case <-sctx.Done():
		s.log.Warn("stopping the WAL reader timed out")
	}
	stopDS()
	select {
	case <-feedDone:
	case <-sctx.Done():
	}
	s.closeCluster()
	s.log.Info("stopped")
	return runErr
}

func serveHTTP(srv *http.Server, ln net.Listener, what string) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Close releases what New and Listen started (the WebSocket ping timer,
// the listeners, the NATS connection) in a server that is not run; Run
// releases it itself.
func (s *Server) Close() error {
	if s.frontLn != nil {
		s.frontLn.Close()
		s.backLn.Close()
	}
	s.closeCluster()
	return s.ws.Shutdown(context.Background())
}

// FrontendURL is the WebSocket endpoint's URL (ws://host:port/path) once
// the server listens.
func (s *Server) FrontendURL() string {
	return "ws://" + s.frontLn.Addr().String() + s.cfg.Frontend.Path
}

// BackendURL is the backend API's URL (http://host:port/path) once the
// server listens.
func (s *Server) BackendURL() string {
	return "http://" + s.backLn.Addr().String() + s.cfg.Backend.Path
}

// FrontendAddr and BackendAddr are the listeners' addresses once the
// server listens.
func (s *Server) FrontendAddr() net.Addr { return s.frontLn.Addr() }
func (s *Server) BackendAddr() net.Addr  { return s.backLn.Addr() }

// Config is the configuration the server runs with.
func (s *Server) Config() *config.Config { return s.cfg }

// Engine is the DataSync engine.
func (s *Server) Engine() *datasync.Engine { return s.datasync }

// Reader is the WAL reader, nil without a database.
func (s *Server) Reader() *cdc.Reader { return s.reader }

// WebSockets is the WebSocket transport.
func (s *Server) WebSockets() *wsapi.Handler { return s.ws }

// Metrics is the server's Prometheus registry.
func (s *Server) Metrics() *prometheus.Registry { return s.metrics }

// NewLogger returns the logger that the log section describes, writing to
// out.
func NewLogger(c config.LogConfig, out io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}
