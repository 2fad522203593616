package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/wagg/wagg/host/config"
	"github.com/wagg/wagg/host/server"
)

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := fs.String("config", "", "YAML config file (see host/config/testdata/wagg.yaml); flags override it")
	listen := fs.String("listen", "", "HTTP address (config listen)")
	dataDir := fs.String("data-dir", "", "plugin registry directory (config data_dir)")
	brokers := fs.String("kafka", "", "comma-separated Kafka brokers (config kafka.brokers)")
	chAddr := fs.String("clickhouse", "", "ClickHouse native address (config clickhouse.addr)")
	db := fs.String("database", "", "ClickHouse database (config clickhouse.database)")
	level := fs.String("log-level", "", "debug, info, warn or error (config log_level)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil && *path != "" {
		return err
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Listen, *listen)
	set(&cfg.DataDir, *dataDir)
	set(&cfg.ClickHouse.Addr, *chAddr)
	set(&cfg.ClickHouse.Database, *db)
	set(&cfg.LogLevel, *level)
	if *brokers != "" {
		cfg.Kafka.Brokers = strings.Split(*brokers, ",")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("config field listen: %w", err)
	}
	return server.Serve(ctx, cfg, log, ln)
}
