// Package netfault is a TCP proxy for fault-injection tests: placed between
// two endpoints on loopback (the server and PostgreSQL, a client and the
// server), it passes bytes, delays them, drops them silently while keeping
// both sockets open (a blackhole, as a NAT or firewall that forgot a flow
// does), or resets the connections. It is imported only by tests.
//
// Each accepted connection is a link with two pump goroutines (one per
// direction). A blackholed link stays dead for good, even after Heal: the
// bytes it dropped are lost, so only new connections pass again, which is
// what a peer sees after a NAT or firewall timeout. Close stops everything
// and waits for the goroutines.
package netfault

import (
	"net"
	"sync"
	"time"
)

// Proxy forwards TCP connections from its listener to a target address.
// Its methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	delay     time.Duration
	blackhole bool
	closed    bool
	links     map[*link]struct{}
	accepted  int

	wg sync.WaitGroup
}

// Start listens on a free port of 127.0.0.1 and forwards every connection
// to target.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listen address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's listen port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// SetDelay delays every chunk of bytes by d in each direction (0: none),
// keeping their order. It applies to bytes read from now on.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Blackhole drops every byte of the current links and of links accepted
// until Heal, silently: no socket is closed, no error reported, so each
// peer sees a connection that has gone quiet.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = true
	for l := range p.links {
		l.kill()
	}
}

// Heal ends the blackhole for new connections; links blackholed before
// stay dead (their dropped bytes are lost) until Reset or Close.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.blackhole = false
	p.mu.Unlock()
}

// Reset aborts every current link with a TCP reset on both sides (dead
// links too). New connections are forwarded as the mode says.
func (p *Proxy) Reset() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.abort()
	}
}

// Stats returns how many connections were accepted and how many links
// are open now (dead ones included).
func (p *Proxy) Stats() (accepted, open int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted, len(p.links)
}

// Close stops listening, closes every link and waits for its goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.accepted++
		l := &link{p: p, client: c, dead: p.blackhole}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go l.run()
	}
}

// link is one proxied connection.
type link struct {
	p      *Proxy
	client net.Conn

	mu       sync.Mutex
	upstream net.Conn
	dead     bool // blackholed: bytes dropped, sockets kept open
	closed   bool
}

func (l *link) kill() {
	l.mu.Lock()
	l.dead = true
	l.mu.Unlock()
}

func (l *link) isDead() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dead
}

// close closes both sockets (a FIN to each peer).
func (l *link) close() {
	l.mu.Lock()
	l.closed = true
	up := l.upstream
	l.mu.Unlock()
	l.client.Close()
	if up != nil {
		up.Close()
	}
}

// abort closes both sockets with a reset (SO_LINGER 0).
func (l *link) abort() {
	l.mu.Lock()
	up := l.upstream
	l.mu.Unlock()
	for _, c := range []net.Conn{l.client, up} {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	l.close()
}

func (l *link) run() {
	defer l.p.wg.Done()
	defer func() {
		l.p.mu.Lock()
		delete(l.p.links, l)
		l.p.mu.Unlock()
		l.close()
	}()
	if l.isDead() {
		// Accepted during a blackhole: never connected upstream, the
		// client's bytes vanish until the link is reset or closed.
		drain(l.client)
		return
	}
	up, err := net.DialTimeout("tcp", l.p.target, 10*time.Second)
	if err != nil {
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		up.Close()
		return
	}
	l.upstream = up
	l.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { l.pump(up, l.client); done <- struct{}{} }()
	go func() { l.pump(l.client, up); done <- struct{}{} }()
	<-done
	// One direction ended. A live link closes the other side too; a dead
	// one keeps both sockets open (the peers must find out by themselves)
	// until Reset or Close.
	if !l.isDead() {
		l.close()
	}
	<-done
}

// drain reads and discards from c until it fails.
func drain(c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

// pump copies src to dst, delaying chunks by the proxy's delay and
// dropping them while the link is dead. It returns when src fails, or,
// for a live link, when dst fails.
func (l *link) pump(dst, src net.Conn) {
	q := make(chan chunk, 64)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		failed := false
		for c := range q {
			if failed || l.isDead() {
				continue
			}
			if d := time.Until(c.at); d > 0 {
				time.Sleep(d)
			}
			if l.isDead() {
				continue
			}
			if _, err := dst.Write(c.b); err != nil {
				failed = true
				if !l.isDead() {
					src.Close()
				}
			}
		}
	}()
	defer func() {
		close(q)
		<-writerDone
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.isDead() {
			l.p.mu.Lock()
			d := l.p.delay
			l.p.mu.Unlock()
			q <- chunk{b: append([]byte(nil), buf[:n]...), at: time.Now().Add(d)}
		}
		if err != nil {
			// On a dead link the other side is not told (run keeps its
			// socket open).
			return
		}
	}
}
