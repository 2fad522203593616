package hub

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/wagg/wagg/host/auth"
)

const (
	testKey      = "0123456789abcdef0123456789abcdef"
	testIssuer   = "wagg-test"
	testAudience = "wagg"
)

func testVerifier(t *testing.T) *auth.Verifier {
	t.Helper()
	p := filepath.Join(t.TempDir(), "k.key")
	os.WriteFile(p, []byte(testKey), 0o600)
	v, err := auth.New(auth.Options{HMACKeyFiles: []string{p}, Issuer: testIssuer, Audience: testAudience, Leeway: -1})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func liveToken(t *testing.T, key, iss, aud string, exp time.Time, scopes ...string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": iss, "aud": aud, "exp": exp.Unix(), "scope": strings.Join(scopes, " "),
	}).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHub_SubscribeChecksTheToken(t *testing.T) {
	h, url := serve(t, &Options{Auth: testVerifier(t)})
	h.Register("votes", testSchema, testWindows)
	hour := time.Now().Add(time.Hour)
	for _, c := range []struct {
		name  string
		token string
		code  string // "" for a snapshot
	}{
		{"no token", "", CodeUnauthorized},
		{"expired", liveToken(t, testKey, testIssuer, testAudience, time.Now().Add(-time.Minute), "live:votes"), CodeTokenExpired},
		{"bad signature", liveToken(t, testKey+"x", testIssuer, testAudience, hour, "live:votes"), CodeUnauthorized},
		{"wrong issuer", liveToken(t, testKey, "evil", testAudience, hour, "live:votes"), CodeUnauthorized},
		{"wrong audience", liveToken(t, testKey, testIssuer, "other", hour, "live:votes"), CodeUnauthorized},
		{"missing scope", liveToken(t, testKey, testIssuer, testAudience, hour, "live:other", "deployments:write"), CodeForbidden},
		{"right scope", liveToken(t, testKey, testIssuer, testAudience, hour, "live:votes"), ""},
		{"wildcard", liveToken(t, testKey, testIssuer, testAudience, hour, "live:*"), ""},
		{"admin", liveToken(t, testKey, testIssuer, testAudience, hour, "admin"), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := dial(t, url, Subscribe{Aggregator: "votes", Token: c.token})
			f := next(t, conn)
			if c.code == "" {
				if f.Type != TypeSnapshot {
					t.Fatalf("got %+v, want a snapshot", f)
				}
				return
			}
			if f.Type != TypeError || f.Code != c.code {
				t.Fatalf("got %+v, want error %s", f, c.code)
			}
			if c.token != "" && strings.Contains(f.Message, c.token) {
				t.Fatal("the error frame echoes the token")
			}
			// The connection stays open: a good token subscribes.
			good := liveToken(t, testKey, testIssuer, testAudience, hour, "live:votes")
			b, _ := json.Marshal(clientFrame{Type: TypeSubscribe, Subscribe: Subscribe{Aggregator: "votes", Token: good}})
			conn.c.Write(testCtx(t), websocket.MessageText, b)
			if f := next(t, conn); f.Type != TypeSnapshot {
				t.Fatalf("after a refusal, a good token got %+v", f)
			}
		})
	}
}

func TestHub_TokenInTheHandshake(t *testing.T) {
	h, url := serve(t, &Options{Auth: testVerifier(t)})
	h.Register("votes", testSchema, testWindows)
	tok := liveToken(t, testKey, testIssuer, testAudience, time.Now().Add(time.Hour), "live:votes")
	for _, c := range []struct {
		name string
		opts *websocket.DialOptions
	}{
		{"subprotocol", &websocket.DialOptions{Subprotocols: []string{Subprotocol, BearerProtocolPrefix + tok}}},
		{"authorization header", &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, resp, err := websocket.Dial(testCtx(t), url, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); strings.Contains(got, tok) {
				t.Fatalf("the server echoed the token in %q", got)
			}
			conn.Write(testCtx(t), websocket.MessageText, []byte(`{"type":"subscribe","aggregator":"votes"}`))
			c := &Conn{c: conn}
			if f := next(t, c); f.Type != TypeSnapshot {
				t.Fatalf("got %+v, want a snapshot", f)
			}
		})
	}
}

func TestHub_TokenExpiringMidStreamClosesWithItsCode(t *testing.T) {
	h, url := serve(t, &Options{Auth: testVerifier(t)})
	h.Register("votes", testSchema, testWindows)
	// exp has a resolution of a second: this one ends in one to two.
	tok := liveToken(t, testKey, testIssuer, testAudience, time.Now().Add(2*time.Second), "live:votes")
	conn := dial(t, url, Subscribe{Aggregator: "votes", Token: tok})
	var v View
	follow(t, conn, &v, (*View).Live)
	h.Publish("votes", 0, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, err := conn.Next(ctx)
		if err == nil {
			continue
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatal("the subscription outlived its token")
		}
		if got := websocket.CloseStatus(err); got != StatusTokenExpired {
			t.Fatalf("closed with %v (%v), want %d", got, err, StatusTokenExpired)
		}
		return
	}
}

func TestHub_CrossOriginHandshakeRefused(t *testing.T) {
	_, url := serve(t, &Options{Auth: testVerifier(t)})
	_, resp, err := websocket.Dial(testCtx(t), url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a cross-origin handshake was not refused: %v %v", resp, err)
	}
}

func TestHub_ConnectionsPerAddressAreBounded(t *testing.T) {
	_, url := serve(t, &Options{Auth: testVerifier(t), MaxConnsPerIP: 2})
	first := dial(t, url, Subscribe{Aggregator: "votes"})
	dial(t, url, Subscribe{Aggregator: "votes"})
	_, resp, err := websocket.Dial(testCtx(t), url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a third connection from one address: %v %v", resp, err)
	}
	// Closing one makes room again.
	first.Close()
	eventually(t, "a free slot", func() bool {
		c, _, err := websocket.Dial(testCtx(t), url, nil)
		if err != nil {
			return false
		}
		c.CloseNow()
		return true
	})
}
