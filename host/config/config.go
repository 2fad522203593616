// Package config is the one configuration tree of `wagg serve`: a YAML file,
// overridden by flags, validated once at start so that a mistake stops the
// binary with a message naming the field. It does not start anything.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration. Zero values take the defaults below.
type Config struct {
	// Listen is the HTTP address of the API, the live WebSocket and the
	// dashboard. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// DataDir holds the plugin registry and deployment specs. Default ./data.
	DataDir string `yaml:"data_dir"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel   string     `yaml:"log_level"`
	Kafka      Kafka      `yaml:"kafka"`
	ClickHouse ClickHouse `yaml:"clickhouse"`
	Sandbox    Sandbox    `yaml:"sandbox"`
	Live       Live       `yaml:"live"`
	Auth       Auth       `yaml:"auth"`
	TLS        TLS        `yaml:"tls"`
}

// Auth says which keys verify bearer tokens (docs/security.md). With no
// keys wagg runs open, and only on a loopback listen address.
type Auth struct {
	HMACKeyFiles   []string `yaml:"hmac_key_files"`   // HMAC secrets, one per file (>= 32 bytes); wagg token signs with the first
	PublicKeyFiles []string `yaml:"public_key_files"` // PEM public keys: RSA, ECDSA, Ed25519
	JWKSFiles      []string `yaml:"jwks_files"`       // JSON Web Key Sets
	Issuer         string   `yaml:"issuer"`           // when set, tokens must carry this iss
	Audience       string   `yaml:"audience"`         // when set, tokens must carry this aud
}

// Enabled reports whether any key is configured.
func (a *Auth) Enabled() bool {
	return len(a.HMACKeyFiles)+len(a.PublicKeyFiles)+len(a.JWKSFiles) > 0
}

// TLS serves HTTPS (and wss://) when both files are set.
type TLS struct {
	CertFile string `yaml:"cert_file"` // PEM certificate chain
	KeyFile  string `yaml:"key_file"`  // PEM private key
}

// Enabled reports whether TLS is configured.
func (t *TLS) Enabled() bool { return t.CertFile != "" }

// Kafka is where topics are read and dead letters written.
type Kafka struct {
	// Brokers are seed brokers, host:port. Default [127.0.0.1:9092].
	Brokers []string `yaml:"brokers"`
	// CatalogTopic holds the plugins and deployment specs that the hosts of
	// one cluster share (host/catalog). Default _wagg_catalog_<database>:
	// hosts on one broker and one ClickHouse database are one cluster.
	CatalogTopic string `yaml:"catalog_topic"`
}

// CatalogTopic is the cluster's catalog topic (kafka.catalog_topic or its
// default, from the database).
func (c *Config) CatalogTopic() string {
	if c.Kafka.CatalogTopic != "" {
		return c.Kafka.CatalogTopic
	}
	return "_wagg_catalog_" + c.ClickHouse.Database
}

// ClickHouse is where rows and checkpoints are written (native protocol).
type ClickHouse struct {
	Addr     string `yaml:"addr"`     // default 127.0.0.1:9000
	Database string `yaml:"database"` // default wagg; created when missing
	Username string `yaml:"username"` // default "default"
	Password string `yaml:"password"`
}

// Sandbox limits each plugin instance.
type Sandbox struct {
	MemoryPages   uint32 `yaml:"memory_pages"`    // 64 KiB pages per instance, default 1024 (64 MiB)
	MaxUploadSize int    `yaml:"max_upload_size"` // bytes, default 32 MiB
	// MaxPlugins and MaxPluginStorage bound what pushes may store: plugin
	// versions (default 1,000) and the bytes of their distinct modules
	// (default 2 GiB). A push past either is refused (507); deleting
	// unused versions makes room.
	MaxPlugins       int   `yaml:"max_plugins"`
	MaxPluginStorage int64 `yaml:"max_plugin_storage"`
	// CallTimeout bounds every call into a plugin (default 1s); a call past
	// it fails like a trap and its instance is replaced.
	CallTimeout time.Duration `yaml:"call_timeout"`
	// MemoryBudget bounds the linear memory reserved by all instances on
	// this host, in bytes (default 4 GiB); an instance past it is refused.
	MemoryBudget uint64 `yaml:"memory_budget"`
	// MaxGroupsPerPane bounds the groups the host keeps for one pane of a
	// deployment, all partitions merged (default 1,000,000). Plugins are
	// told it and should refuse records past it (dead letters); rows past
	// it stop the deployment as failed.
	MaxGroupsPerPane int `yaml:"max_groups_per_pane"`
	// MaxDeployments bounds the deployments of the cluster (default 100):
	// each brings a Kafka client, topics, tables and partitions' instances
	// to every host. A deploy of a new name past it is refused (409
	// limit_reached); deploying onto an existing name is not.
	MaxDeployments int `yaml:"max_deployments"`
	// SnapshotRate is how many bytes of snapshots a partition's checkpoints
	// may write to ClickHouse per second, on average (default 1 MiB): after
	// a checkpoint of a snapshot of n bytes the next waits n/rate seconds,
	// while rows go on at checkpoint_every. A plugin may return 64 MiB at
	// every checkpoint, and a deployment checkpoint every 100 ms.
	SnapshotRate int64 `yaml:"snapshot_rate"`
}

// Live configures the WebSocket hub.
type Live struct {
	// AllowedOrigins are host patterns (as in coder/websocket) of pages
	// allowed to subscribe from other origins. Same-origin always works.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// MaxStateBytes bounds the memory the groups of one deployment's live
	// view take, every pane of every window together (default 2 GiB, as
	// hub.Options.MaxBytes counts it): closed panes are dropped first, and
	// rows past it in panes still open stop the deployment as failed.
	MaxStateBytes int64 `yaml:"max_state_bytes"`
}

// Defaults returns the configuration with every default filled in.
func Defaults() Config {
	var c Config
	c.applyDefaults()
	return c
}

func (c *Config) applyDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Listen, "127.0.0.1:8080")
	def(&c.DataDir, "data")
	def(&c.LogLevel, "info")
	if len(c.Kafka.Brokers) == 0 {
		c.Kafka.Brokers = []string{"127.0.0.1:9092"}
	}
	def(&c.ClickHouse.Addr, "127.0.0.1:9000")
	def(&c.ClickHouse.Database, "wagg")
	def(&c.ClickHouse.Username, "default")
	if c.Sandbox.MemoryPages == 0 {
		c.Sandbox.MemoryPages = 1024
	}
	if c.Sandbox.MaxUploadSize == 0 {
		c.Sandbox.MaxUploadSize = 32 << 20
	}
	if c.Sandbox.MaxPlugins == 0 {
		c.Sandbox.MaxPlugins = 1000
	}
	if c.Sandbox.MaxPluginStorage == 0 {
		c.Sandbox.MaxPluginStorage = 2 << 30
	}
	if c.Sandbox.CallTimeout == 0 {
		c.Sandbox.CallTimeout = time.Second
	}
	if c.Sandbox.MemoryBudget == 0 {
		c.Sandbox.MemoryBudget = 4 << 30
	}
	if c.Sandbox.MaxGroupsPerPane == 0 {
		c.Sandbox.MaxGroupsPerPane = 1_000_000
	}
	if c.Sandbox.MaxDeployments == 0 {
		c.Sandbox.MaxDeployments = 100
	}
	if c.Sandbox.SnapshotRate == 0 {
		c.Sandbox.SnapshotRate = 1 << 20
	}
	if c.Live.MaxStateBytes == 0 {
		c.Live.MaxStateBytes = 2 << 30
	}
}

// Load reads a YAML file (unknown fields are errors), applies the defaults
// and validates. An empty path means defaults only.
func Load(path string) (Config, error) {
	var c Config
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		if err := Parse(b, &c); err != nil {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	c.applyDefaults()
	return c, c.Validate()
}

// Parse decodes YAML into c, refusing unknown fields.
func Parse(b []byte, c *Config) error {
	d := yaml.NewDecoder(bytes.NewReader(b))
	d.KnownFields(true)
	err := d.Decode(c)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		// yaml reports type errors by line: name the field as well.
		var root yaml.Node
		if yaml.Unmarshal(b, &root) == nil {
			fields := map[int]string{}
			fieldLines(&root, "", fields)
			for i, msg := range te.Errors {
				var line int
				if _, e := fmt.Sscanf(msg, "line %d:", &line); e == nil && fields[line] != "" {
					te.Errors[i] = "field " + fields[line] + ": " + msg
				}
			}
		}
	}
	return err
}

// fieldLines maps the line of each scalar value to its dotted field path.
func fieldLines(n *yaml.Node, path string, out map[int]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			fieldLines(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			fieldLines(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			fieldLines(c, fmt.Sprintf("%s[%d]", path, i), out)
		}
	default:
		out[n.Line] = path
	}
}

var (
	dbRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	topicRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)
)

// Validate names the first field that is wrong. Call it after applying
// flags, so overrides are checked too.
func (c *Config) Validate() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("config field %s: %s", field, fmt.Sprintf(format, a...))
	}
	if err := hostPort(c.Listen); err != nil {
		return bad("listen", "%q: %v", c.Listen, err)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		return bad("data_dir", "empty")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("log_level", "%q: want debug, info, warn or error", c.LogLevel)
	}
	for i, b := range c.Kafka.Brokers {
		if err := hostPort(b); err != nil {
			return bad(fmt.Sprintf("kafka.brokers[%d]", i), "%q: %v", b, err)
		}
	}
	if c.Kafka.CatalogTopic != "" && !topicRE.MatchString(c.Kafka.CatalogTopic) {
		return bad("kafka.catalog_topic", "%q: want 1 to 249 letters, digits and . _ -", c.Kafka.CatalogTopic)
	}
	if err := hostPort(c.ClickHouse.Addr); err != nil {
		return bad("clickhouse.addr", "%q: %v", c.ClickHouse.Addr, err)
	}
	if !dbRE.MatchString(c.ClickHouse.Database) {
		return bad("clickhouse.database", "%q: want letters, digits and _", c.ClickHouse.Database)
	}
	if c.Sandbox.MemoryPages < 16 || c.Sandbox.MemoryPages > 65536 {
		return bad("sandbox.memory_pages", "%d: want 16 to 65536 (1 MiB to 4 GiB)", c.Sandbox.MemoryPages)
	}
	if c.Sandbox.MaxUploadSize < 1024 || c.Sandbox.MaxUploadSize > 256<<20 {
		return bad("sandbox.max_upload_size", "%d: want 1 KiB to 256 MiB", c.Sandbox.MaxUploadSize)
	}
	if c.Sandbox.MaxPlugins < 1 || c.Sandbox.MaxPlugins > 1_000_000 {
		return bad("sandbox.max_plugins", "%d: want 1 to 1000000", c.Sandbox.MaxPlugins)
	}
	if c.Sandbox.MaxPluginStorage < int64(c.Sandbox.MaxUploadSize) || c.Sandbox.MaxPluginStorage > 1<<40 {
		return bad("sandbox.max_plugin_storage", "%d: want sandbox.max_upload_size (%d) to 1 TiB", c.Sandbox.MaxPluginStorage, c.Sandbox.MaxUploadSize)
	}
	if c.Sandbox.CallTimeout < 10*time.Millisecond || c.Sandbox.CallTimeout > time.Minute {
		return bad("sandbox.call_timeout", "%v: want 10ms to 1m", c.Sandbox.CallTimeout)
	}
	if c.Sandbox.MaxGroupsPerPane < 1 || c.Sandbox.MaxGroupsPerPane > 1<<30 {
		return bad("sandbox.max_groups_per_pane", "%d: want 1 to %d", c.Sandbox.MaxGroupsPerPane, 1<<30)
	}
	if c.Sandbox.MaxDeployments < 1 || c.Sandbox.MaxDeployments > 10_000 {
		return bad("sandbox.max_deployments", "%d: want 1 to 10000", c.Sandbox.MaxDeployments)
	}
	if c.Sandbox.SnapshotRate < 1024 || c.Sandbox.SnapshotRate > 1<<30 {
		return bad("sandbox.snapshot_rate", "%d: want 1 KiB to 1 GiB (bytes a second)", c.Sandbox.SnapshotRate)
	}
	if c.Live.MaxStateBytes < 1<<20 || c.Live.MaxStateBytes > 1<<40 {
		return bad("live.max_state_bytes", "%d: want 1 MiB to 1 TiB", c.Live.MaxStateBytes)
	}
	if inst := uint64(c.Sandbox.MemoryPages) << 16; c.Sandbox.MemoryBudget < inst {
		return bad("sandbox.memory_budget", "%d: less than one instance's memory (sandbox.memory_pages = %d, %d bytes)", c.Sandbox.MemoryBudget, c.Sandbox.MemoryPages, inst)
	}
	for _, fs := range []struct {
		field string
		files []string
	}{{"auth.hmac_key_files", c.Auth.HMACKeyFiles}, {"auth.public_key_files", c.Auth.PublicKeyFiles}, {"auth.jwks_files", c.Auth.JWKSFiles}} {
		for i, f := range fs.files {
			if _, err := os.Stat(f); err != nil {
				return bad(fmt.Sprintf("%s[%d]", fs.field, i), "%v", err)
			}
		}
	}
	if !c.Auth.Enabled() && !Loopback(c.Listen) {
		return bad("listen", "%q is not a loopback address and auth has no keys: anyone on the network could upload and run code. "+
			"Set auth.hmac_key_files, auth.public_key_files or auth.jwks_files (docs/security.md), or listen on 127.0.0.1", c.Listen)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return bad("tls", "set both cert_file and key_file, or neither")
	}
	for field, f := range map[string]string{"tls.cert_file": c.TLS.CertFile, "tls.key_file": c.TLS.KeyFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				return bad(field, "%v", err)
			}
		}
	}
	return nil
}

// Loopback reports whether a listen address binds this machine's loopback
// only: 127.0.0.0/8, ::1 or localhost. An empty host (":8080") binds every
// interface.
func Loopback(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func hostPort(s string) error {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port")
	}
	_ = h
	if p == "" {
		return fmt.Errorf("missing port")
	}
	return nil
}
