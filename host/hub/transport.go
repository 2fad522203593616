package hub

import (
	"context"

	"github.com/coder/websocket"
)

// transport is what a session's writer writes to: a WebSocket, or an SSE
// stream (sse.go). The frames are the same bytes on both.
type transport interface {
	// write sends one frame; at is the state it brings the client to
	// (snapshot, resumed, delta), nil for errors and pongs.
	write(ctx context.Context, frame []byte, at *state) error
	// ping checks that an idle peer is still there.
	ping(ctx context.Context) error
	// close ends the connection with a close code the client can act on.
	close(code websocket.StatusCode, reason string)
	// closeNow drops the connection; it may be called from any goroutine,
	// also while write blocks.
	closeNow()
}

// state names the state a client holds after a frame: what it sends back to
// resume (docs/protocol.md).
type state struct {
	epoch string
	seq   uint64
}

type wsTransport struct{ c *websocket.Conn }

func (t wsTransport) write(ctx context.Context, b []byte, _ *state) error {
	return t.c.Write(ctx, websocket.MessageText, b)
}

func (t wsTransport) ping(ctx context.Context) error { return t.c.Ping(ctx) }

func (t wsTransport) close(code websocket.StatusCode, reason string) { t.c.Close(code, reason) }

func (t wsTransport) closeNow() { t.c.CloseNow() }
