package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/wagg/wagg/abi"
)

var errBroken = errors.New("sandbox: instance trapped earlier")

const maxSchemaBytes = 1 << 20

func decodeSchema(raw []byte, s *abi.Schema) error {
	if len(raw) > maxSchemaBytes {
		return fmt.Errorf("wagg_describe returned %d bytes, at most %d", len(raw), maxSchemaBytes)
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(s); err != nil {
		return fmt.Errorf("wagg_describe returned a schema that does not decode: %v", err)
	}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("declared schema: %v", err)
	}
	return nil
}
