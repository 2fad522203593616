// Command statev2compat is internal/testwasm/statev2 declaring that it
// accepts state version 1 as it is: tests use it as an upgrade the host
// restores the checkpoints of version 1 into.
package main

import (
	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/internal/testwasm/polls"
)

func init() { polls.Register(abi.State{Version: 2, Accepts: []int{1}}) }

func main() {}
