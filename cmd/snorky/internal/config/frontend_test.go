package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFrontendExtrasValidate(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  FrontendConfig
		want string // substring of the error; "" for valid
	}{
		{"off", FrontendConfig{Path: "/ws"}, ""},
		{"sockjs", FrontendConfig{Path: "/ws", SockJSPath: "/sockjs"}, ""},
		{"relative sockjs", FrontendConfig{Path: "/ws", SockJSPath: "sockjs"}, "frontend.sockjs_path"},
		{"root sockjs", FrontendConfig{Path: "/ws", SockJSPath: "/"}, "frontend.sockjs_path"},
		{"sockjs on the WebSocket path", FrontendConfig{Path: "/ws", SockJSPath: "/ws/"}, "frontend.sockjs_path"},
		{"missing static dir", FrontendConfig{Path: "/ws", StaticDir: filepath.Join(file, "nope")}, "frontend.static_dir"},
		{"static dir is a file", FrontendConfig{Path: "/ws", StaticDir: file}, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.validateExtras()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
