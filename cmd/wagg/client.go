package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"

	"github.com/wagg/wagg/host/api"
)

func plugin(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "push" && args[0] != "list" && args[0] != "delete") {
		return fmt.Errorf("plugin: want push, list or delete")
	}
	fs := flag.NewFlagSet("plugin "+args[0], flag.ContinueOnError)
	srv := serverFlag(fs)
	tok := tokenFlag(fs)
	name := fs.String("name", "", "plugin name (default: the file name)")
	version := fs.String("version", "", "plugin version, e.g. 1 or 1.2.0")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if args[0] == "list" {
		return call(ctx, token(*tok), http.MethodGet, *srv+"/v1/plugins", "", nil)
	}
	if args[0] == "delete" {
		if *name == "" || *version == "" || fs.NArg() != 0 {
			return fmt.Errorf("plugin delete: want -name N -version V")
		}
		return call(ctx, token(*tok), http.MethodDelete, *srv+"/v1/plugins/"+*name+"/"+*version, "", nil)
	}
	if fs.NArg() != 1 || *version == "" {
		return fmt.Errorf("plugin push: want -version V and one .wasm file")
	}
	wasm, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	if *name == "" {
		*name = strings.TrimSuffix(filepath.Base(fs.Arg(0)), ".wasm")
	}
	return call(ctx, token(*tok), http.MethodPost, *srv+"/v1/plugins/"+*name+"/"+*version, "application/wasm", wasm)
}

func deploy(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("deploy", flag.ContinueOnError)
	srv := serverFlag(fs)
	tok := tokenFlag(fs)
	file := fs.String("f", "", "deployment spec, YAML or JSON (see examples/votes/deploy.yaml)")
	start := fs.String("start", "", "start fresh into a new generation of the deployment's tables from earliest, an offset or an RFC 3339 time; it takes over the view and the live subscribers once caught up")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("deploy: want -f FILE")
	}
	spec, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	u := *srv + "/v1/deployments"
	if *start != "" {
		u += "?start=" + url.QueryEscape(*start)
	}
	return call(ctx, token(*tok), http.MethodPost, u, "application/yaml", spec)
}

// query runs read-only SQL on the host's ClickHouse (POST /v1/query) and
// prints the JSON answer.
func query(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("query", flag.ContinueOnError)
	srv := serverFlag(fs)
	tok := tokenFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf(`query: want one SQL argument, e.g. wagg query "SELECT count() FROM wagg.votes"`)
	}
	body, err := json.Marshal(map[string]string{"sql": fs.Arg(0)})
	if err != nil {
		return err
	}
	return call(ctx, token(*tok), http.MethodPost, *srv+"/v1/query", "application/json", body)
}

// deployments prints the host's deployments, one per line, with the error
// of a failed one.
func deployments(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("deployments", flag.ContinueOnError)
	srv := serverFlag(fs)
	tok := tokenFlag(fs)
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := callTo(ctx, &buf, token(*tok), http.MethodGet, *srv+"/v1/deployments", "", nil); err != nil {
		return err
	}
	if *asJSON {
		_, err := io.Copy(os.Stdout, &buf)
		return err
	}
	var ds []api.Deployment
	if err := json.Unmarshal(buf.Bytes(), &ds); err != nil {
		return fmt.Errorf("deployments: %w", err)
	}
	return printDeployments(os.Stdout, ds)
}

func printDeployments(w io.Writer, ds []api.Deployment) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tPLUGIN\tTOPIC\tTABLE\tPROBLEM")
	for _, d := range ds {
		// a failed deployment's error, or what does not run of a running one
		problem := strings.Join(slices.DeleteFunc([]string{d.Error, d.NotStarted, d.Stalled}, func(s string) bool { return s == "" }), "; ")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", printable(d.Name), d.Status, printable(d.Plugin), printable(d.Topic), printable(d.Table), printable(problem))
	}
	return tw.Flush()
}

// printable escapes, Go style (\x1b, \n, \u202e), what a terminal would act
// on rather than show: control characters (an ESC starts a sequence that
// can clear the screen; a newline or carriage return can forge a line) and
// bidirectional overrides. Errors, keys and names come from plugins and
// producers.
func printable(s string) string {
	if !strings.ContainsFunc(s, hidden) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if hidden(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func hidden(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) }

// call sends a request and prints the JSON answer; an error answer becomes
// the command's error, with the server's message.
func call(ctx context.Context, token, method, url, ctype string, body []byte) error {
	return callTo(ctx, os.Stdout, token, method, url, ctype, body)
}

// callTo is call writing the answer to out. A token goes in the
// Authorization header.
func callTo(ctx context.Context, out io.Writer, token, method, url, ctype string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		var e api.ErrorBody
		if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
			return fmt.Errorf("%s (%d %s)", e.Error.Message, resp.StatusCode, e.Error.Code)
		}
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	_, err = out.Write(b)
	return err
}
