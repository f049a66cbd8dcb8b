package backendapi_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/snorkyhq/snorky/backendapi"
	"github.com/snorkyhq/snorky/sync/rpc"
)

const testKey = "test-backend-key-0123456789abcdef"

// publisher answers "publish" (with params channel and message) and
// refuses every other command.
type publisher struct{ published []string }

func (p *publisher) Handle(_ rpc.Conn, req *rpc.Request) (any, error) {
	if req.Command != "publish" {
		return nil, rpc.ErrUnknownCommand
	}
	if _, err := rpc.Params(req.Params, []string{"channel", "message"}, nil); err != nil {
		return nil, err
	}
	p.published = append(p.published, string(req.Params))
	return nil, nil
}

// newBackend serves a handler with the service "pubsub_backend" and
// returns the server's URL, the service and the metrics registry.
func newBackend(t *testing.T, cfg backendapi.Config, ready map[string]backendapi.ReadyFunc) (*backendapi.Handler, string, *publisher, *prometheus.Registry) {
	t.Helper()
	p := &publisher{}
	reg := rpc.NewRegistry(nil)
	if err := reg.Register("pubsub_backend", p); err != nil {
		t.Fatal(err)
	}
	mreg := prometheus.NewRegistry()
	h, err := backendapi.New(cfg, reg, slog.New(slog.DiscardHandler), mreg, mreg, ready)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv.URL, p, mreg
}

func request(t *testing.T, method, url, body string, headers map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestBackendEndpoint: the key, the method, the envelope and the body
// bound are checked before a command runs, each with its status and a JSON
// error; RPC errors are HTTP 200 with the error envelope.
func TestBackendEndpoint(t *testing.T) {
	_, base, p, mreg := newBackend(t, backendapi.Config{Path: "/backend", APIKey: testKey, MaxBodyBytes: 4 << 10}, nil)
	url := base + "/backend"
	key := map[string]string{"X-Backend-Key": testKey}
	valid := `{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":1}}}`
	cases := []struct {
		name    string
		method  string
		body    string
		headers map[string]string
		status  int
	}{
		{"missing key", "POST", valid, nil, 401},
		{"wrong key", "POST", valid, map[string]string{"X-Backend-Key": "nope"}, 401},
		{"key prefix", "POST", valid, map[string]string{"X-Backend-Key": testKey[:5]}, 401},
		{"Bearer is not enough here", "POST", valid, map[string]string{"Authorization": "Bearer " + testKey}, 401},
		{"GET", "GET", "", key, 405},
		{"bad JSON", "POST", `{"service":`, key, 400},
		{"not an object", "POST", `[]`, key, 400},
		{"missing message", "POST", `{"service":"pubsub_backend"}`, key, 400},
		{"unknown service", "POST", `{"service":"pubsub","message":{"command":"publish","params":{}}}`, key, 400},
		{"missing params", "POST", `{"service":"pubsub_backend","message":{"command":"publish"}}`, key, 400},
		{"oversize", "POST", `{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":"` + strings.Repeat("x", 5000) + `"}}}`, key, 413},
		{"valid", "POST", valid, key, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := request(t, tc.method, url, tc.body, tc.headers)
			if status != tc.status {
				t.Fatalf("got HTTP %d %s, want %d", status, body, tc.status)
			}
			var v map[string]any
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatalf("body %q is not JSON: %v", body, err)
			}
			if status != 200 {
				if e, _ := v["error"].(string); e == "" {
					t.Fatalf("body %s: want a JSON error", body)
				}
			}
		})
	}
	if len(p.published) != 1 {
		t.Fatalf("the service ran %d times (%q), want once: only the valid request reaches it", len(p.published), p.published)
	}
	// Spec §4: replies, RPC errors included, are JSON in UTF-8, and say so.
	for _, body := range []string{valid, `{"service":`} {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("X-Backend-Key", testKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=UTF-8" {
			t.Errorf("reply to %s: Content-Type %q, want application/json; charset=UTF-8", body, ct)
		}
	}
	if got := counter(t, mreg, "snorky_backend_auth_failures_total"); got != 4 {
		t.Errorf("auth failures: got %v, want 4", got)
	}
	// RPC errors are HTTP 200 with the error envelope, callId null.
	status, body := request(t, "POST", url, `{"service":"pubsub_backend","message":{"command":"subscribe","params":{}}}`, key)
	if status != 200 || string(body) != `{"service":"pubsub_backend","message":{"type":"error","callId":null,"message":"Unknown command"}}` {
		t.Fatalf("got %d %s, want 200 with Unknown command", status, body)
	}
	// Health, readiness and metrics need no key by default.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if status, body := request(t, "GET", base+path, "", nil); status != 200 {
			t.Fatalf("GET %s: HTTP %d %s", path, status, body)
		}
	}
}

// counter returns the value of the registered counter name.
func counter(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

// TestReadyz: 503 naming each part that is not ready, 200 once all are;
// details are reported either way.
func TestReadyz(t *testing.T) {
	var dbErr error = errors.New("connecting")
	h, base, _, _ := newBackend(t, backendapi.Config{APIKey: testKey}, map[string]backendapi.ReadyFunc{
		"database": func() error { return dbErr },
		"other":    func() error { return nil },
	})
	h.SetDetail("window", func() any { return map[string]int{"transactions": 3} })
	status, body := request(t, "GET", base+"/readyz", "", nil)
	if status != 503 {
		t.Fatalf("database connecting: got HTTP %d %s, want 503", status, body)
	}
	var v struct {
		Status   string
		Problems map[string]string
		Detail   map[string]map[string]int
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	if v.Status != "not ready" || len(v.Problems) != 1 || v.Problems["database"] != "connecting" || v.Detail["window"]["transactions"] != 3 {
		t.Fatalf("got %s, want not ready with the database's problem and the window's detail", body)
	}
	dbErr = nil
	if status, body := request(t, "GET", base+"/readyz", "", nil); status != 200 || !strings.Contains(string(body), `"status":"ready"`) {
		t.Fatalf("all ready: got HTTP %d %s, want 200 ready", status, body)
	}
}

// TestMetricsAuth: with MetricsAuth, /metrics needs the key in
// X-Backend-Key or as a Bearer token, and a refusal says how to send it.
func TestMetricsAuth(t *testing.T) {
	_, base, _, _ := newBackend(t, backendapi.Config{APIKey: testKey, MetricsAuth: true}, nil)
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"no key", nil, 401},
		{"wrong key", map[string]string{"X-Backend-Key": "nope"}, 401},
		{"X-Backend-Key", map[string]string{"X-Backend-Key": testKey}, 200},
		{"Bearer", map[string]string{"Authorization": "Bearer " + testKey}, 200},
		{"bearer, any case", map[string]string{"Authorization": "bearer " + testKey}, 200},
		{"wrong Bearer", map[string]string{"Authorization": "Bearer " + testKey + "x"}, 401},
		{"Basic", map[string]string{"Authorization": "Basic " + testKey}, 401},
	} {
		status, body := request(t, "GET", base+"/metrics", "", tc.hdr)
		if status != tc.want {
			t.Errorf("%s: got HTTP %d, want %d", tc.name, status, tc.want)
		}
		if status == 401 && !strings.Contains(string(body), "backend.metrics_auth") {
			t.Errorf("%s: refusal %s does not name backend.metrics_auth", tc.name, body)
		}
	}
	// Health stays open: load balancers probe it without a key.
	if status, _ := request(t, "GET", base+"/healthz", "", nil); status != 200 {
		t.Fatalf("/healthz with metrics_auth: got HTTP %d, want 200", status)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg   backendapi.Config
		valid bool
	}{
		{backendapi.Config{APIKey: testKey}, true},
		{backendapi.Config{APIKey: testKey, Path: "/b", MaxBodyBytes: 10}, true},
		{backendapi.Config{}, false},
		{backendapi.Config{APIKey: testKey, Path: "backend"}, false},
		{backendapi.Config{APIKey: testKey, MaxBodyBytes: -1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.valid {
			t.Errorf("%+v: got %v, want valid %v", tc.cfg, err, tc.valid)
		}
	}
	if _, err := backendapi.New(backendapi.Config{}, rpc.NewRegistry(nil), slog.New(slog.DiscardHandler), nil, nil, nil); err == nil {
		t.Fatal("New without an API key: got no error")
	}
}
