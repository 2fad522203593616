package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/wagg/wagg/host/hub"
)

func tail(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	srv := serverFlag(fs)
	tok := tokenFlag(fs)
	agg := fs.String("aggregator", "", "deployment to follow")
	windows := fs.String("windows", "", "comma-separated windows to follow (default all)")
	snapshot := fs.Bool("snapshot", false, "also print the snapshot rows")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *agg == "" {
		return fmt.Errorf("tail: want -aggregator NAME")
	}
	u, err := url.Parse(*srv)
	if err != nil {
		return fmt.Errorf("tail: -server: %w", err)
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	u.Path = "/v1/live"
	sub := hub.Subscribe{Aggregator: *agg, Token: token(*tok)}
	if *windows != "" {
		sub.Windows = strings.Split(*windows, ",")
	}
	c, err := hub.Dial(ctx, u.String(), sub)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		f, err := c.Next(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		switch f.Type {
		case "error":
			return fmt.Errorf("%s: %s", f.Code, f.Message)
		case "snapshot":
			fmt.Printf("snapshot epoch=%s seq=%d rows=%d\n", f.Epoch, f.Seq, len(f.Rows))
			if !*snapshot {
				continue
			}
		default:
			fmt.Printf("%s seq=%d rows=%d\n", f.Type, f.Seq, len(f.Rows))
		}
		for _, r := range f.Rows {
			fmt.Println(printable(fmt.Sprintf("  %s %s %s %s%s", r.Window, pane(r), kv(r.Key), values(r), final(r.Final))))
		}
	}
}

func pane(r hub.Row) string {
	if r.Start == 0 && r.End == 0 {
		return "-"
	}
	return fmt.Sprintf("[%d,%d)", r.Start, r.End)
}

func kv[V any](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%v", k, m[k])
	}
	return strings.Join(parts, " ")
}

func values(r hub.Row) string { return kv(r.Values) }

func final(f bool) string {
	if f {
		return " final"
	}
	return ""
}
