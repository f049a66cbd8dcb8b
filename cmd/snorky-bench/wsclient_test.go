package main

import (
	"encoding/json"
	"testing"
)

func TestFindInt(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   int64
		wantOK bool
	}{
		{"compact", `{"service":"pubsub","message":{"type":"message","channel":"bench","message":{"seq":42,"ts":7}}}`, 42, true},
		{"spaced", `{"message": {"seq" :  42 , "ts": 7}}`, 42, true},
		{"newlines", "{\"seq\":\n\t42}", 42, true},
		{"absent", `{"type":"response","callId":1,"data":null}`, 0, false},
		{"not a number", `{"seq":"42"}`, 0, false},
		{"no colon", `{"seq" 42}`, 0, false},
		{"escaped key in a string", `{"channel":"\"seq\": 5"}`, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := findInt([]byte(tt.in), keySeq)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("findInt(%s) = %d, %v, want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestAppendBenchMessage(t *testing.T) {
	tests := []struct {
		seq, ts int64
		size    int
	}{
		{1, 0, 100},
		{123456789, 987654321012, 100},
		{7, 7, 40},
		{1 << 40, 1 << 50, 1000},
	}
	for _, tt := range tests {
		b := appendBenchMessage([]byte("prefix"), tt.seq, tt.ts, tt.size)[len("prefix"):]
		if len(b) != tt.size {
			t.Errorf("appendBenchMessage(%d, %d, %d) is %d bytes, want %d: %s", tt.seq, tt.ts, tt.size, len(b), tt.size, b)
		}
		var m struct {
			Seq int64  `json:"seq"`
			TS  int64  `json:"ts"`
			Pad string `json:"pad"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("appendBenchMessage gave invalid JSON %s: %v", b, err)
		}
		if m.Seq != tt.seq || m.TS != tt.ts {
			t.Errorf("decoded seq, ts = %d, %d, want %d, %d", m.Seq, m.TS, tt.seq, tt.ts)
		}
		if seq, _ := findInt(b, keySeq); seq != tt.seq {
			t.Errorf("findInt(seq) = %d, want %d", seq, tt.seq)
		}
		if ts, _ := findInt(b, keyTS); ts != tt.ts {
			t.Errorf("findInt(ts) = %d, want %d", ts, tt.ts)
		}
	}
}

func BenchmarkFindInt(b *testing.B) {
	b.ReportAllocs()
	msg := appendBenchMessage([]byte(`{"service":"pubsub","message":{"type":"message","channel":"bench","message":`), 123456, 987654321, 100)
	msg = append(msg, "}}"...)
	for b.Loop() {
		if _, ok := findInt(msg, keySeq); !ok {
			b.Fatal("seq not found")
		}
		if _, ok := findInt(msg, keyTS); !ok {
			b.Fatal("ts not found")
		}
	}
}
