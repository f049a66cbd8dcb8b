package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "snorky test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLSListeners: both listeners serve TLS when given a certificate.
func TestTLSListeners(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	tlsCfg := `tls: {cert_file: "` + certFile + `", key_file: "` + keyFile + `"}`
	s := startServer(t, `frontend: {listen: "127.0.0.1:0", path: /ws, `+tlsCfg+`}
backend: {listen: "127.0.0.1:0", path: /backend, api_key: "`+testKey+`", `+tlsCfg+`}`)

	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	wsURL := "wss://" + s.frontLn.Addr().String() + "/ws"
	ws, _, err := d.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte(`{"service":"pubsub","message":{"command":"subscribe","params":{"channel":"c"},"callId":1}}`))
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, m, err := ws.ReadMessage(); err != nil || !strings.Contains(string(m), `"type":"response"`) {
		t.Fatalf("over TLS: got %s, %v", m, err)
	}

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("POST", "https://"+s.backLn.Addr().String()+"/backend",
		strings.NewReader(`{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":1}}}`))
	req.Header.Set("X-Backend-Key", testKey)
	resp, err := client.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("https backend: %v %v", resp, err)
	}
	resp.Body.Close()
	client.CloseIdleConnections()
	if _, m, err := ws.ReadMessage(); err != nil || !strings.Contains(string(m), `"type":"message"`) {
		t.Fatalf("publish over TLS: got %s, %v", m, err)
	}
	// Plain HTTP to a TLS listener fails.
	if _, _, err := websocket.DefaultDialer.Dial("ws://"+s.frontLn.Addr().String()+"/ws", nil); err == nil {
		t.Fatal("a plain WebSocket reached the TLS listener")
	}
}
