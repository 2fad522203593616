package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoad_ExampleFileEqualsDefaults(t *testing.T) {
	c, err := Load("testdata/wagg.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	c.Live.AllowedOrigins, d.Live.AllowedOrigins = nil, nil
	c.Auth.HMACKeyFiles, c.Auth.PublicKeyFiles, c.Auth.JWKSFiles = nil, nil, nil
	if !reflect.DeepEqual(c, d) {
		t.Fatalf("example config %+v differs from defaults %+v", c, d)
	}
}

func TestLoad_ErrorsNameTheField(t *testing.T) {
	cases := []struct{ name, yaml, field string }{
		{"unknown field", "listne: x\n", "listne"},
		{"bad listen", "listen: nope\n", "listen"},
		{"bad broker", "kafka: {brokers: [\"a:1\", \"b\"]}\n", "kafka.brokers[1]"},
		{"bad clickhouse addr", "clickhouse: {addr: x}\n", "clickhouse.addr"},
		{"bad database", "clickhouse: {database: \"a-b\"}\n", "clickhouse.database"},
		{"bad level", "log_level: loud\n", "log_level"},
		{"bad pages", "sandbox: {memory_pages: 3}\n", "sandbox.memory_pages"},
		{"wrong type", "sandbox:\n  memory_pages: many\n", "sandbox.memory_pages"},
		{"call timeout too short", "sandbox: {call_timeout: 1ms}\n", "sandbox.call_timeout"},
		{"call timeout not a duration", "sandbox: {call_timeout: soon}\n", "sandbox.call_timeout"},
		{"budget under one instance", "sandbox: {memory_budget: 1000}\n", "sandbox.memory_budget"},
		{"no groups per pane", "sandbox: {max_groups_per_pane: -1}\n", "sandbox.max_groups_per_pane"},
		{"live state under a MiB", "live: {max_state_bytes: 1000}\n", "live.max_state_bytes"},
		{"no plugins", "sandbox: {max_plugins: -1}\n", "sandbox.max_plugins"},
		{"no deployments", "sandbox: {max_deployments: -1}\n", "sandbox.max_deployments"},
		{"deployments past the ceiling", "sandbox: {max_deployments: 20000}\n", "sandbox.max_deployments"},
		{"snapshot rate under a KiB", "sandbox: {snapshot_rate: 100}\n", "sandbox.snapshot_rate"},
		{"plugin storage under one upload", "sandbox: {max_plugin_storage: 4096}\n", "sandbox.max_plugin_storage"},
		{"open on every interface", "listen: \":8080\"\n", "auth.hmac_key_files"},
		{"open on a LAN address", "listen: 192.168.1.5:8080\n", "config field listen"},
		{"missing key file", "auth: {hmac_key_files: [/nonexistent/k]}\n", "auth.hmac_key_files[0]"},
		{"missing jwks", "auth: {jwks_files: [/nonexistent/k.json]}\n", "auth.jwks_files[0]"},
		{"tls half set", "tls: {cert_file: /etc/hostname}\n", "tls"},
		{"tls missing file", "tls: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}\n", "tls."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(p, []byte(c.yaml), 0o644)
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("error %v does not name %s", err, c.field)
			}
		})
	}
}

func TestValidate_WideAddressNeedsKeys(t *testing.T) {
	key := filepath.Join(t.TempDir(), "k.key")
	os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	for _, c := range []struct {
		listen string
		keys   bool
		ok     bool
	}{
		{"127.0.0.1:8080", false, true},
		{"127.1.2.3:0", false, true},
		{"localhost:8080", false, true},
		{"[::1]:8080", false, true},
		{"0.0.0.0:8080", false, false},
		{":8080", false, false},
		{"[::]:8080", false, false},
		{"0.0.0.0:8080", true, true},
		{":8080", true, true},
	} {
		cfg := Defaults()
		cfg.Listen = c.listen
		if c.keys {
			cfg.Auth.HMACKeyFiles = []string{key}
		}
		if err := cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("listen %s keys %v: %v", c.listen, c.keys, err)
		}
	}
}
