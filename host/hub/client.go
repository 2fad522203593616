package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/coder/websocket"
)

// clientReadLimit bounds one server frame as the Go client reads it. A
// snapshot of a large aggregator is big, but not this big.
const clientReadLimit = 256 << 20

// Conn is a client connection to a hub, carrying one subscription.
type Conn struct {
	c *websocket.Conn
}

// Dial connects to a hub's WebSocket endpoint (ws://host/v1/live) and sends
// the subscription. The first frame Next returns is the snapshot, a
// "resumed" frame, or an error frame saying why the subscription was refused.
// ctx bounds the handshake only.
func Dial(ctx context.Context, url string, sub Subscribe) (*Conn, error) {
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("hub: dial %s: %w", url, err)
	}
	c.SetReadLimit(clientReadLimit)
	b, err := json.Marshal(clientFrame{Type: TypeSubscribe, Subscribe: sub})
	if err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("hub: encode subscribe: %w", err)
	}
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("hub: subscribe: %w", err)
	}
	return &Conn{c: c}, nil
}

// Next returns the next frame from the server. A closed connection returns
// an error that websocket.CloseStatus maps to the close code (see
// docs/protocol.md). Cancelling ctx closes the connection.
func (c *Conn) Next(ctx context.Context) (Frame, error) {
	_, b, err := c.c.Read(ctx)
	if err != nil {
		return Frame{}, err
	}
	var f Frame
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&f); err != nil {
		return Frame{}, fmt.Errorf("hub: undecodable frame from server: %w", err)
	}
	return f, nil
}

// Ping sends an application-level ping; the server answers with a pong
// frame, which Next returns.
func (c *Conn) Ping(ctx context.Context) error {
	return c.c.Write(ctx, websocket.MessageText, []byte(`{"type":"ping"}`))
}

// Close closes the connection normally.
func (c *Conn) Close() error {
	return c.c.Close(websocket.StatusNormalClosure, "")
}
