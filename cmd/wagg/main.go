// Command wagg is the wagg host and its client: serve runs the host; plugin
// push, deploy and tail talk to a running host; produce writes demo votes to
// Kafka.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `wagg turns Kafka topics into live dashboard numbers with WebAssembly aggregators.

Usage:
  wagg serve   [-config wagg.yaml] [flags]        run the host
  wagg plugin push -name N -version V FILE.wasm  upload a plugin
  wagg plugin list                               list uploaded plugins
  wagg plugin delete -name N -version V          delete a plugin no deployment runs, on every host
  wagg deploy  -f deployment.yaml [-start S]     run a plugin on a topic (-start earliest|OFFSET|TIME: fresh, backfilled)
  wagg deployments [-json]                       list deployments, their status and errors
  wagg query   "SELECT ..."                      read-only SQL over the history (JSON rows)
  wagg tail    -aggregator NAME                  print live deltas
  wagg produce -topic T [-count N | -rate R]     write demo votes to Kafka
  wagg token   -scopes S [-ttl D] [-config F]    mint a token from the configured HMAC key

Client commands take -server (WAGG_SERVER) and -token (WAGG_TOKEN).

Run "wagg COMMAND -h" for a command's flags.
`

var commands = map[string]func(ctx context.Context, args []string) error{
	"serve":       serve,
	"plugin":      plugin,
	"deploy":      deploy,
	"deployments": deployments,
	"query":       query,
	"tail":        tail,
	"produce":     produce,
	"token":       mintToken,
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "wagg: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		// line by line: a YAML error lists its fields on lines of their own
		for i, line := range strings.Split(err.Error(), "\n") {
			if i == 0 {
				fmt.Fprintln(os.Stderr, "wagg:", printable(line))
			} else {
				fmt.Fprintln(os.Stderr, "     ", printable(line))
			}
		}
		os.Exit(1)
	}
}

// serverFlag adds the -server flag shared by client commands.
func serverFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("WAGG_SERVER")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	return fs.String("server", def, "wagg host URL (env WAGG_SERVER)")
}

// tokenFlag adds the -token flag shared by client commands. WAGG_TOKEN is
// read when it is empty (not as the flag's default, which -h would print).
func tokenFlag(fs *flag.FlagSet) *string {
	return fs.String("token", "", "bearer token (default env WAGG_TOKEN; mint one with wagg token)")
}

func token(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return os.Getenv("WAGG_TOKEN")
}
