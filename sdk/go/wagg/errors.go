package wagg

import (
	"encoding/json"
	"errors"

	"github.com/wagg/wagg/abi"
)

var (
	errLength  = errors.New("wagg: length exceeds the input buffer")
	errNotInit = errors.New("wagg: wagg_init has not succeeded")
)

func marshalSchema(s *abi.Schema) []byte {
	b, err := json.Marshal(s)
	if err != nil { // a Schema always marshals
		panic(err)
	}
	return b
}
