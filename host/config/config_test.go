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
