package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServe_ConfigErrorStopsAtStartNamingTheField(t *testing.T) {
	cases := []struct {
		name  string
		yaml  string
		flags []string
		field string
	}{
		{"unknown field in the file", "kafka:\n  brokres: [a:1]\n", nil, "brokres"},
		{"bad value in the file", "clickhouse:\n  addr: nowhere\n", nil, "clickhouse.addr"},
		{"bad flag overrides a good file", "listen: 127.0.0.1:0\n", []string{"-kafka", "a:1,b"}, "kafka.brokers[1]"},
		{"bad log level flag", "", []string{"-log-level", "chatty"}, "log_level"},
		{"every interface without keys", "", []string{"-listen", ":8080"}, "auth.hmac_key_files"},
		{"a LAN address without keys", "listen: 10.0.0.1:8080\n", nil, "config field listen"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "wagg.yaml")
			if err := os.WriteFile(p, []byte(c.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // a config that passes would start serving: it must not get that far
			err := serve(ctx, append([]string{"-config", p}, c.flags...))
			if err == nil || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("serve: %v, want an error naming %s", err, c.field)
			}
		})
	}
}
