package main

import (
	"flag"
	"strings"
	"testing"
)

func TestPubsubModes(t *testing.T) {
	tests := []struct {
		name         string
		args         []string
		wantErr      string
		wantSaturate bool
		wantWindowed bool
		wantWindow   int
	}{
		{"rate", []string{"--rate", "15"}, "", false, false, 32},
		{"saturate", []string{"--saturate"}, "", true, false, 32},
		{"saturate with a window", []string{"--saturate", "--window", "8"}, "", true, false, 8},
		{"window alone", []string{"--window", "16"}, "", true, true, 16},
		{"nothing", nil, "exactly one", false, false, 0},
		{"rate and saturate", []string{"--rate", "1", "--saturate"}, "exactly one", false, false, 0},
		{"window too large", []string{"--window", "1000000"}, "--window", false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c pubsubConfig
			fs := flag.NewFlagSet("pubsub", flag.ContinueOnError)
			c.register(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if c.Saturate != tt.wantSaturate || c.Windowed != tt.wantWindowed || c.Window != tt.wantWindow {
				t.Errorf("got saturate %v windowed %v window %d, want %v %v %d",
					c.Saturate, c.Windowed, c.Window, tt.wantSaturate, tt.wantWindowed, tt.wantWindow)
			}
		})
	}
}
