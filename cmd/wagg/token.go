package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/wagg/wagg/host/auth"
	"github.com/wagg/wagg/host/config"
)

// mintToken prints a token signed with an HMAC key: the first of the
// config's auth.hmac_key_files, or -key.
func mintToken(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	path := fs.String("config", "", "YAML config whose auth section names the key, issuer and audience")
	keyFile := fs.String("key", "", "HMAC key file (default: the config's first auth.hmac_key_files)")
	scopes := fs.String("scopes", "", "comma- or space-separated scopes: plugins:write, deployments:write, deployments:read, live:<aggregator>, live:*, sql:read, admin")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is good for")
	sub := fs.String("sub", "", "subject: who the token is for (shows in logs)")
	issuer := fs.String("issuer", "", "iss claim (default: the config's auth.issuer)")
	audience := fs.String("audience", "", "aud claim (default: the config's auth.audience)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cfg config.Config
	if *path != "" {
		var err error
		if cfg, err = config.Load(*path); err != nil {
			return err
		}
	}
	if *keyFile == "" {
		if len(cfg.Auth.HMACKeyFiles) == 0 {
			return fmt.Errorf("token: want -key FILE, or -config with auth.hmac_key_files")
		}
		*keyFile = cfg.Auth.HMACKeyFiles[0]
	}
	if *issuer == "" {
		*issuer = cfg.Auth.Issuer
	}
	if *audience == "" {
		*audience = cfg.Auth.Audience
	}
	secret, kid, err := auth.LoadHMACKey(*keyFile)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	s, err := auth.Mint(secret, kid, auth.Claims{
		Subject: *sub, Issuer: *issuer, Audience: *audience, TTL: *ttl,
		Scopes: strings.FieldsFunc(*scopes, func(r rune) bool { return r == ',' || r == ' ' }),
	})
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	fmt.Println(s)
	return nil
}
