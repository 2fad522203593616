package decode_test

import (
	"fmt"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/decode"
)

func Example() {
	// The votes aggregator reads two of the four keys of a vote.
	s := &abi.Schema{ABI: abi.Version, Input: []abi.Field{
		{Name: "poll_id", Type: abi.Int64},
		{Name: "option", Type: abi.String},
	}}
	d := decode.New(s)
	for i, v := range []string{
		`{"poll_id":1234,"option":"opt3","user_id":"u-8812771","ts":1764212345678}`,
		`{"poll_id":"abc","option":"opt1"}`,
		`{"poll_id":77,"option":"opt\u0031"}`,
		`{"poll_id":78}`,
	} {
		if err := d.Add([]byte(v), int64(1000+i)); err != nil {
			fmt.Println("dead letter:", err) // the host sends the record there
		}
	}
	b := d.Batch()
	for i := range b.Len() {
		fmt.Println(b.Times[i], b.Columns[0].Ints[i], string(b.Columns[1].Str(i)))
	}
	// Output:
	// dead letter: field "poll_id": want an integer, got "abc"
	// dead letter: field "option": missing
	// 1000 1234 opt3
	// 1002 77 opt1
}
