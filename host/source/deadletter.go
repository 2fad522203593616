package source

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// MaxDeadLetterMessage bounds the error message a dead letter carries.
const MaxDeadLetterMessage = 1024

// DeadLetter is the record that carries rec to topic: the same key, value
// and timestamp, with why and where it came from in headers (docs/guarantees.md).
func DeadLetter(topic, deployment string, rec *kgo.Record, reason, msg string) *kgo.Record {
	if len(msg) > MaxDeadLetterMessage {
		msg = msg[:MaxDeadLetterMessage]
	}
	return &kgo.Record{
		Topic:     topic,
		Key:       rec.Key,
		Value:     rec.Value,
		Timestamp: rec.Timestamp,
		Headers: []kgo.RecordHeader{
			{Key: "wagg.error", Value: []byte(msg)},
			{Key: "wagg.reason", Value: []byte(reason)},
			{Key: "wagg.deployment", Value: []byte(deployment)},
			{Key: "wagg.topic", Value: []byte(rec.Topic)},
			{Key: "wagg.partition", Value: []byte(strconv.Itoa(int(rec.Partition)))},
			{Key: "wagg.offset", Value: []byte(strconv.FormatInt(rec.Offset, 10))},
		},
	}
}
