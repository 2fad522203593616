// Command statev2 counts votes per poll (internal/testwasm/polls) and
// declares state version 2 without accepting version 1: tests use it as an
// upgrade the host must refuse.
package main

import (
	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/internal/testwasm/polls"
)

func init() { polls.Register(abi.State{Version: 2}) }

func main() {}
