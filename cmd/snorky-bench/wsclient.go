package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// sourceAddrs spreads client connections over loopback source addresses
// 127.A.B.C, perAddr connections each, so that no single source address runs
// out of ephemeral ports (about 28,000 each by default, fewer while earlier
// runs' sockets sit in TIME_WAIT). A and B identify the run and the worker
// process; C counts from 1.
type sourceAddrs struct {
	a, b    byte
	perAddr int
}

// newSourceAddrs picks a random second octet so that back-to-back runs do not
// collide with each other's TIME_WAIT sockets.
func newSourceAddrs(worker int, perAddr int) sourceAddrs {
	return sourceAddrs{a: byte(1 + rand.IntN(250)), b: byte(worker), perAddr: perAddr}
}

func (s sourceAddrs) addr(i int) *net.TCPAddr {
	c := 1 + i/s.perAddr
	if c > 254 {
		c = 1 + c%254
	}
	return &net.TCPAddr{IP: net.IPv4(127, s.a, s.b, byte(c))}
}

func (s sourceAddrs) String() string {
	return fmt.Sprintf("127.%d.%d.x (%d connections per address)", s.a, s.b, s.perAddr)
}

// wsDialer opens client WebSocket connections to the frontend.
type wsDialer struct {
	url      string
	src      sourceAddrs
	readBuf  int // gorilla read buffer, bytes
	writeBuf int // gorilla write buffer, bytes
	timeout  time.Duration
}

var sharedWriteBufs = &sync.Pool{}

// dial opens connection number i.
func (d *wsDialer) dial(ctx context.Context, i int) (*websocket.Conn, error) {
	nd := &net.Dialer{LocalAddr: d.src.addr(i), Timeout: d.timeout}
	wd := websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: d.timeout,
		ReadBufferSize:   d.readBuf,
		WriteBufferSize:  d.writeBuf,
		WriteBufferPool:  sharedWriteBufs,
	}
	c, resp, err := wd.DialContext(ctx, d.url, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s from %s: %w (HTTP %s)", d.url, nd.LocalAddr, err, resp.Status)
		}
		return nil, fmt.Errorf("dial %s from %s: %w", d.url, nd.LocalAddr, err)
	}
	return c, nil
}

// rpcReply is the part of an RPC reply envelope the runner looks at.
type rpcReply struct {
	Service json.RawMessage `json:"service"`
	Message struct {
		Type    string          `json:"type"`
		CallID  json.RawMessage `json:"callId"`
		Message json.RawMessage `json:"message"`
		Data    json.RawMessage `json:"data"`
	} `json:"message"`
}

// call sends one RPC request over c and reads until its reply, skipping
// notifications. It is for set-up, not for the measured path.
func call(c *websocket.Conn, timeout time.Duration, service, command string, params any, callID int) (json.RawMessage, error) {
	req, err := json.Marshal(map[string]any{
		"service": service,
		"message": map[string]any{"command": command, "params": params, "callId": callID},
	})
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	c.SetWriteDeadline(deadline)
	if err := c.WriteMessage(websocket.TextMessage, req); err != nil {
		return nil, fmt.Errorf("%s.%s: writing: %w", service, command, err)
	}
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	want := strconv.Itoa(callID)
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("%s.%s: waiting for the reply: %w", service, command, err)
		}
		var r rpcReply
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s.%s: reply is not a JSON envelope: %w: %.200s", service, command, err, b)
		}
		switch r.Message.Type {
		case "response":
			if string(r.Message.CallID) != want {
				return nil, fmt.Errorf("%s.%s: response callId %s, want %s", service, command, r.Message.CallID, want)
			}
			return r.Message.Data, nil
		case "error":
			return nil, fmt.Errorf("%s.%s: error reply: %s", service, command, r.Message.Message)
		}
	}
}

// closeCode returns the WebSocket close code carried by err, or 0.
func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// findInt returns the integer value of the first "key" member in b, found
// without parsing the rest: the measured path reads only seq and ts. It
// tolerates whitespace around the colon, as receivers must (§1.1).
func findInt(b []byte, quotedKey []byte) (int64, bool) {
	i := bytes.Index(b, quotedKey)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(quotedKey):]
	b = skipSpace(b)
	if len(b) == 0 || b[0] != ':' {
		return 0, false
	}
	b = skipSpace(b[1:])
	var v int64
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' && n < 19 {
		v = v*10 + int64(b[n]-'0')
		n++
	}
	return v, n > 0
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}
