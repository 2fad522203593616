package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/wagg/wagg/abi"
)

// Frame types. docs/protocol.md describes each frame with an example.
const (
	TypeSubscribe = "subscribe" // client: start the one subscription of a connection
	TypePing      = "ping"      // client: ask for a pong (browsers cannot send WebSocket pings)
	TypeSnapshot  = "snapshot"  // server: the whole (filtered) state at seq
	TypeResumed   = "resumed"   // server: the client's state at (epoch, seq) is still valid; deltas follow
	TypeDelta     = "delta"     // server: the rows that changed from prev to seq
	TypeError     = "error"     // server: a request was refused; the connection stays open
	TypePong      = "pong"      // server: the answer to ping
)

// Error codes carried by error frames. They are stable: clients may switch on
// them.
const (
	CodeBadFrame          = "bad_frame"          // not a JSON object, or a field of the wrong JSON type
	CodeUnknownType       = "unknown_type"       // "type" missing or not one the server knows
	CodeBadRequest        = "bad_request"        // a field's value is out of range (empty aggregator, too many keys, ...)
	CodeUnknownAggregator = "unknown_aggregator" // no aggregator of that name is registered on this host (yet)
	CodeUnknownWindow     = "unknown_window"     // the aggregator has no window of that name
	CodeUnknownKey        = "unknown_key"        // the aggregator has no key column of that name
	CodeBadKey            = "bad_key"            // a key filter value does not have its column's type
	CodeAlreadySubscribed = "already_subscribed" // a connection carries one subscription
	CodeUnauthorized      = "unauthorized"       // no token, or one that does not verify (signature, issuer, audience)
	CodeTokenExpired      = "token_expired"      // the token expired: get a new one and subscribe again
	CodeForbidden         = "forbidden"          // the token has no live:<aggregator> (nor live:*) for this aggregator
	CodeCrossOrigin       = "cross_origin"       // SSE: a page of an origin the hub does not allow (OriginPatterns)
)

// Close codes the hub uses besides the standard ones (1001 going away on
// shutdown, 1003 for binary frames, 1008 for abuse, 1009 for frames over the
// read limit).
const (
	// StatusSlowConsumer closes a subscriber that fell so far behind that the
	// deltas it misses are no longer kept (more than History deltas). It may
	// reconnect and resume; it will get a fresh snapshot.
	StatusSlowConsumer websocket.StatusCode = 4008
	// StatusRedeployed closes the subscribers of an aggregator that was
	// registered again with another schema or other windows: their state no
	// longer means anything. Resubscribing gets a snapshot of the new epoch.
	StatusRedeployed websocket.StatusCode = 4009
	// StatusTokenExpired closes a subscription whose token expired. The
	// client gets a fresh token, reconnects and resumes with its (epoch,
	// seq): no gap.
	StatusTokenExpired websocket.StatusCode = 4010
)

// Subprotocol is the WebSocket subprotocol the hub selects. A browser
// that wants to pass its token in the handshake offers it together with
// BearerProtocolPrefix+token (Sec-WebSocket-Protocol: wagg,
// wagg.bearer.<jwt>); the server answers with Subprotocol only, so the token
// is never echoed.
const (
	Subprotocol          = "wagg"
	BearerProtocolPrefix = "wagg.bearer."
)

// Limits on what a client may ask for, so that one frame cannot make the hub
// do unbounded work.
const (
	ReadLimit        = 64 << 10 // bytes per client frame
	MaxFilterValues  = 1024     // key values over all columns of one subscribe
	MaxIntervalMs    = 60_000   // the largest interval_ms honoured
	maxFilterWindows = 256
)

// Subscribe is the body of a subscribe frame, and what Dial sends.
type Subscribe struct {
	// Aggregator names the deployment to follow.
	Aggregator string `json:"aggregator"`
	// Windows restricts the subscription to these windows; empty means all.
	Windows []string `json:"windows,omitempty"`
	// Keys restricts it to rows whose key columns take one of the listed
	// values: columns are ANDed, the values of one column ORed. Values are
	// JSON numbers for int64 and float64 columns and strings for string ones.
	Keys map[string][]any `json:"keys,omitempty"`
	// Panes bounds the snapshot to the latest Panes panes of each tumbling or
	// hopping window (0: all the hub keeps). Deltas are not affected.
	Panes int `json:"panes,omitempty"`
	// IntervalMs asks for at most one delta per interval: the changes in
	// between are coalesced to the latest value per row. 0 sends every delta.
	IntervalMs int `json:"interval_ms,omitempty"`
	// Resume, when set, is the (epoch, seq) of the state the client holds for
	// this same subscription; the hub answers with "resumed" and the missed
	// deltas when it still has them, and with a snapshot otherwise.
	Resume *Resume `json:"resume,omitempty"`
	// Token is the bearer token (a JWT with live:<aggregator> or live:*),
	// for clients that cannot set headers. It overrides a token of the
	// handshake. Needed only when the host has auth keys.
	Token string `json:"token,omitempty"`
}

// Resume names a state a client holds.
type Resume struct {
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

// clientFrame is any frame a client sends.
type clientFrame struct {
	Type string `json:"type"`
	Subscribe
}

// Frame is a server frame as the Go client decodes it. Which fields are set
// depends on Type; see docs/protocol.md.
type Frame struct {
	Type       string `json:"type"`
	Aggregator string `json:"aggregator,omitempty"`
	Epoch      string `json:"epoch,omitempty"`
	Seq        uint64 `json:"seq"`
	// Prev is the seq of the frame this subscriber got before this delta: a
	// client holding the state at Prev applies the delta and holds the state
	// at Seq. For an unfiltered subscriber Prev is always Seq-1.
	Prev    uint64       `json:"prev"`
	Windows []abi.Window `json:"windows,omitempty"` // snapshot: every window of the aggregator
	Keys    []abi.Column `json:"keys,omitempty"`    // snapshot: the key columns
	Metrics []abi.Metric `json:"metrics,omitempty"` // snapshot: the metrics
	Rows    []Row        `json:"rows,omitempty"`
	// Evicted lists panes the hub dropped (applied after Rows).
	Evicted []Pane `json:"evicted,omitempty"`
	Code    string `json:"code,omitempty"`    // error
	Message string `json:"message,omitempty"` // error
}

// Row is one merged row: the value of one group in one pane of a window.
type Row struct {
	Window string `json:"window"`
	Start  int64  `json:"start"` // Unix ms; 0 for a global window
	End    int64  `json:"end"`   // Unix ms, exclusive; 0 for a global window
	// Key holds the key columns: json.Number for int64 and float64 columns,
	// string for string ones.
	Key map[string]any `json:"key"`
	// Values holds the metrics. An empty json.Number stands for null (a
	// float metric that is NaN or infinite).
	Values map[string]json.Number `json:"values"`
	Final  bool                   `json:"final"`
}

// Pane names one pane of a window.
type Pane struct {
	Window string `json:"window"`
	Start  int64  `json:"start"`
}

// Error is an error frame, returned by View.Apply.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return "hub: " + e.Code + ": " + e.Message }

// protoError is a refusal of a client frame, sent back as an error frame.
type protoError struct {
	code string
	msg  string
}

func (e *protoError) Error() string { return e.code + ": " + e.msg }

func refuse(code, format string, args ...any) *protoError {
	return &protoError{code: code, msg: fmt.Sprintf(format, args...)}
}

// decodeClientFrame decodes one client text frame. It checks the shape only;
// compileFilter checks the subscription against the aggregator's schema.
func decodeClientFrame(b []byte) (*clientFrame, *protoError) {
	if !utf8.Valid(b) {
		return nil, refuse(CodeBadFrame, "frame is not UTF-8 text")
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var f clientFrame
	if err := d.Decode(&f); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, refuse(CodeBadFrame, "field %q: want a JSON %s", te.Field, jsonKind(te.Type.Kind().String()))
		}
		return nil, refuse(CodeBadFrame, "frame is not a JSON object: %v", err)
	}
	if d.More() {
		return nil, refuse(CodeBadFrame, "frame holds more than one JSON value")
	}
	if b = bytes.TrimSpace(b); len(b) == 0 || b[0] != '{' { // null decodes into a struct without a word
		return nil, refuse(CodeBadFrame, "frame is not a JSON object")
	}
	switch f.Type {
	case TypePing:
		return &f, nil
	case TypeSubscribe:
	case "":
		return nil, refuse(CodeUnknownType, `frame has no "type"`)
	default:
		return nil, refuse(CodeUnknownType, "unknown frame type %.64q: want subscribe or ping", f.Type)
	}
	if perr := checkSubscribe(&f.Subscribe); perr != nil {
		return nil, perr
	}
	return &f, nil
}

// checkSubscribe bounds what one subscription may ask for, however it came
// (a frame or an SSE query string).
func checkSubscribe(s *Subscribe) *protoError {
	switch {
	case s.Aggregator == "":
		return refuse(CodeBadRequest, `subscribe needs "aggregator"`)
	case len(s.Aggregator) > 256:
		return refuse(CodeBadRequest, "aggregator name longer than 256 bytes")
	case len(s.Windows) > maxFilterWindows:
		return refuse(CodeBadRequest, "%d windows, at most %d", len(s.Windows), maxFilterWindows)
	case s.Panes < 0:
		return refuse(CodeBadRequest, "panes %d: want 0 (all) or more", s.Panes)
	case s.IntervalMs < 0 || s.IntervalMs > MaxIntervalMs:
		return refuse(CodeBadRequest, "interval_ms %d: want 0 to %d", s.IntervalMs, MaxIntervalMs)
	}
	n := 0
	for _, vs := range s.Keys {
		n += len(vs)
	}
	if n > MaxFilterValues {
		return refuse(CodeBadRequest, "%d key values, at most %d", n, MaxFilterValues)
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "slice":
		return "array"
	case "map", "struct", "ptr":
		return "object"
	case "bool":
		return "boolean"
	}
	return "number"
}
