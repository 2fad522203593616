package decode

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/wagg/wagg/abi"
)

// batchSize is how many records a benchmark decodes between Resets, like the
// host does between calls into the guest.
const batchSize = 1024

// votes returns n varied vote records, about 75 bytes each, so that the
// numbers reflect different keys and values rather than one record the
// branch predictor has learnt by heart.
func votes(n int) [][]byte {
	out := make([][]byte, n)
	x := uint64(88172645463325252)
	for i := range out {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		out[i] = fmt.Appendf(nil, `{"poll_id":%d,"option":"opt%d","user_id":"u-%d","ts":%d}`,
			x%10000, x%8, x%10000000, 1764212345678+int64(i))
	}
	return out
}

var (
	// votesSchema is what examples/votes declares: two of the four keys.
	votesSchema = &abi.Schema{ABI: abi.Version, Input: []abi.Field{
		{Name: "poll_id", Type: abi.Int64},
		{Name: "option", Type: abi.String},
	}}
	// allSchema declares every key of a vote.
	allSchema = &abi.Schema{ABI: abi.Version, Input: []abi.Field{
		{Name: "poll_id", Type: abi.Int64},
		{Name: "option", Type: abi.String},
		{Name: "user_id", Type: abi.String},
		{Name: "ts", Type: abi.Int64},
	}}
)

func benchDecoder(b *testing.B, s *abi.Schema) {
	recs := votes(batchSize)
	size := 0
	for _, r := range recs {
		size += len(r)
	}
	d := New(s)
	for _, r := range recs { // grow the batch once, as the steady state has
		if err := d.Add(r, 1); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(size / len(recs)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%batchSize == 0 {
			d.Reset()
		}
		if err := d.Add(recs[i%batchSize], int64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecoder_Votes decodes vote records for the votes aggregator's
// schema (poll_id and option; user_id and ts are checked and skipped), and
// for a schema that declares all four keys.
func BenchmarkDecoder_Votes(b *testing.B) {
	b.Run("schema=votes", func(b *testing.B) { benchDecoder(b, votesSchema) })
	b.Run("schema=all", func(b *testing.B) { benchDecoder(b, allSchema) })
}

// BenchmarkEncodingJSON_Votes is the baseline: encoding/json decoding the
// same records into a struct and appending the fields to the same kind of
// columns, as a guest or host using the standard library would.
func BenchmarkEncodingJSON_Votes(b *testing.B) {
	recs := votes(batchSize)
	size := 0
	for _, r := range recs {
		size += len(r)
	}
	type vote struct {
		PollID int64  `json:"poll_id"`
		Option string `json:"option"`
		UserID string `json:"user_id"`
		TS     int64  `json:"ts"`
	}
	var polls, tss []int64
	var options, users []byte
	b.SetBytes(int64(size / len(recs)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%batchSize == 0 {
			polls, tss, options, users = polls[:0], tss[:0], options[:0], users[:0]
		}
		var v vote
		if err := json.Unmarshal(recs[i%batchSize], &v); err != nil {
			b.Fatal(err)
		}
		polls = append(polls, v.PollID)
		tss = append(tss, v.TS)
		options = append(options, v.Option...)
		users = append(users, v.UserID...)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecoder_Floats covers the number path: a reading with float and
// integer fields.
func BenchmarkDecoder_Floats(b *testing.B) {
	s := &abi.Schema{ABI: abi.Version, Input: []abi.Field{
		{Name: "sensor", Type: abi.String},
		{Name: "temp", Type: abi.Float64},
		{Name: "latency_ms", Type: abi.Float64},
	}}
	recs := make([][]byte, batchSize)
	for i := range recs {
		recs[i] = fmt.Appendf(nil, `{"sensor":"s-%d","temp":%d.%02d,"latency_ms":%d,"tags":["a","b"],"ok":true}`,
			i%97, i%40, i%100, i*7%1000)
	}
	d := New(s)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%batchSize == 0 {
			d.Reset()
		}
		if err := d.Add(recs[i%batchSize], int64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
