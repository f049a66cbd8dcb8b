package relay

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
	"github.com/snorkyhq/snorky/sync/identity"
)

// revoker carries disconnectIdentity between the nodes.
type revoker struct {
	d       *identity.Directory
	nc      *nats.Conn
	id      string
	subject string // "<Prefix>.identity.revoke"
	cfg     Config
	log     *slog.Logger
	sub     *nats.Subscription
	stopped atomic.Bool
}

// Identity makes d's disconnectIdentity close the identity's connections
// on every node of n's cluster and answer the cluster's count (see the
// package comment). Call it before d is used; stop unsubscribes.
func Identity(d *identity.Directory, n *cluster.Node, cfg Config) (stop func(), err error) {
	cfg, err = check(n, cfg)
	if err != nil {
		return nil, err
	}
	r := &revoker{d: d, nc: n.NC, id: n.ID, subject: n.Prefix + ".identity.revoke", cfg: cfg, log: logger(n, "identity")}
	r.sub, err = n.NC.Subscribe(r.subject, r.receive)
	if err != nil {
		return nil, err
	}
	d.SetRemote(r.revoke)
	return r.stop, nil
}

// receive revokes an identity for another node and answers the count;
// this node's own request is answered at once with nothing, which tells
// the gathering that the request went round.
func (r *revoker) receive(m *nats.Msg) {
	n := 0
	if m.Header.Get(nodeHeader) != r.id {
		n = r.d.Revoke(m.Data)
	}
	if m.Reply == "" {
		return
	}
	if err := m.Respond(strconv.AppendInt(nil, int64(n), 10)); err != nil {
		r.log.Warn("identity: answering a revoke", "err", err)
	}
}

// revoke is the identity.RevokeRemote: it asks every node, then sums the
// counts that come until GatherQuiet passes without one, or Timeout.
// Without a NATS connection it sends what the client will buffer and
// returns 0 at once.
func (r *revoker) revoke(ident json.RawMessage) int {
	if r.stopped.Load() {
		return 0
	}
	m := &nats.Msg{
		Subject: r.subject,
		Header:  nats.Header{nodeHeader: []string{r.id}},
		Data:    append([]byte(nil), ident...),
	}
	if !r.nc.IsConnected() {
		if err := r.nc.PublishMsg(m); err != nil {
			r.log.Warn("identity: revoking on the other nodes", "err", err)
		}
		return 0
	}
	m.Reply = r.nc.NewRespInbox()
	replies := make(chan *nats.Msg, 256)
	sub, err := r.nc.ChanSubscribe(m.Reply, replies)
	if err != nil {
		r.log.Warn("identity: revoking on the other nodes", "err", err)
		return 0
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := r.nc.PublishMsg(m); err != nil {
		r.log.Warn("identity: revoking on the other nodes", "err", err)
		return 0
	}
	total := 0
	deadline := time.NewTimer(r.cfg.Timeout)
	defer deadline.Stop()
	var quiet <-chan time.Time // armed by the first answer
	for {
		select {
		case a := <-replies:
			if n, err := strconv.Atoi(string(a.Data)); err == nil && n > 0 {
				total += n
			}
			quiet = time.After(r.cfg.GatherQuiet)
		case <-quiet:
			return total
		case <-deadline.C:
			return total
		}
	}
}

func (r *revoker) stop() {
	if r.stopped.Swap(true) {
		return
	}
	if err := r.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		r.log.Warn("identity: unsubscribing", "err", err)
	}
}
