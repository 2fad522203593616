package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/auth"
	"github.com/wagg/wagg/host/hub"
	"github.com/wagg/wagg/internal/gen"
	"github.com/wagg/wagg/internal/testwasm"
)

// TestAuth_HostWithKeysChecksScopesAndAuditsChanges runs a host with an
// HMAC key: calls without the right scope are refused, and every push,
// deploy and delete is in the audit table with the token's subject.
func TestAuth_HostWithKeysChecksScopesAndAuditsChanges(t *testing.T) {
	e := services(t)
	cfg := hostConfig(t, e)
	key := filepath.Join(t.TempDir(), "it.key")
	os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	cfg.Auth.HMACKeyFiles = []string{key}
	cfg.Auth.Issuer, cfg.Auth.Audience = "wagg-it", "wagg"
	h := runHost(t, e, cfg)
	topic, cl := newTopic(t, e, 2)
	secret, kid, _ := auth.LoadHMACKey(key)
	mint := func(sub string, scopes ...string) string {
		s, err := auth.Mint(secret, kid, auth.Claims{Subject: sub, Issuer: "wagg-it", Audience: "wagg", Scopes: scopes, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	call := func(method, path, ctype, token string, body []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, h.url+path, strings.NewReader(string(body)))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	wasm := testwasm.Build(t, "examples/votes")
	if code, body := call("POST", "/v1/plugins/votes/1", "application/wasm", "", wasm); code != 401 {
		t.Fatalf("push without a token: %d %s", code, body)
	}
	if code, body := call("POST", "/v1/plugins/votes/1", "application/wasm", mint("viewer", "live:*"), wasm); code != 403 {
		t.Fatalf("push with live:*: %d %s", code, body)
	}
	if code, body := call("POST", "/v1/plugins/votes/1", "application/wasm", mint("ann", "plugins:write"), wasm); code != 201 {
		t.Fatalf("push: %d %s", code, body)
	}
	spec := fmt.Sprintf(`{"name":"votes","plugin":"votes@1","topic":%q,"windows":[{"name":"total","kind":"global"}]}`, topic)
	if code, body := call("POST", "/v1/deployments", "application/json", mint("ann", "plugins:write"), []byte(spec)); code != 403 {
		t.Fatalf("deploy with plugins:write: %d %s", code, body)
	}
	if code, body := call("POST", "/v1/deployments", "application/json", mint("bob", "deployments:write"), []byte(spec)); code != 201 {
		t.Fatalf("deploy: %d %s", code, body)
	}

	// Live: the subscription needs live:votes.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wsURL := strings.Replace(h.url, "http", "ws", 1) + "/v1/live"
	for _, c := range []struct {
		token, want string
	}{{"", hub.CodeUnauthorized}, {mint("v", "live:other"), hub.CodeForbidden}, {mint("v", "live:votes"), hub.TypeSnapshot}} {
		conn, err := hub.Dial(ctx, wsURL, hub.Subscribe{Aggregator: "votes", Token: c.token})
		if err != nil {
			t.Fatal(err)
		}
		f, err := conn.Next(ctx)
		conn.Close()
		if err != nil || (f.Type != c.want && f.Code != c.want) {
			t.Fatalf("subscribe: %+v %v, want %s", f, err, c.want)
		}
	}

	// The page, in headless Chromium, with a read-only token in its
	// fragment: it goes live and shows the count.
	const votes = 40
	var recs []*kgo.Record
	now := time.Now()
	for i := range votes {
		v := gen.Vote{PollID: 1, Option: "option-1", UserID: fmt.Sprint("u", i), TS: now.UnixMilli()}
		recs = append(recs, &kgo.Record{Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: now})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	t.Run("browser", func(t *testing.T) {
		browser(t, h.url+"/?aggregator=votes#token="+mint("viewer", "live:votes"), "poll_id=1,option=option-1", votes)
	})

	if code, body := call("DELETE", "/v1/deployments/votes", "", mint("bob", "deployments:write"), nil); code != 204 {
		t.Fatalf("undeploy: %d %s", code, body)
	}
	rows, err := h.ch.Query(ctx, "SELECT subject, action, target FROM "+h.db+".`_wagg_audit` ORDER BY at, action")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var sub, action, target string
		if err := rows.Scan(&sub, &action, &target); err != nil {
			t.Fatal(err)
		}
		got = append(got, sub+" "+action+" "+target)
	}
	// Rows of one second sort by action; these are all there, with who.
	for _, want := range []string{"ann plugin_push votes@1", "bob deploy votes", "bob undeploy votes"} {
		found := false
		for _, g := range got {
			found = found || g == want
		}
		if !found {
			t.Errorf("audit has %q, missing %q", got, want)
		}
	}
	if len(got) != 3 {
		t.Errorf("audit rows %q, want 3", got)
	}
}
