package source

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// MaxDeadLetterMessage bounds the error message a dead letter carries.
const MaxDeadLetterMessage = 1024

// DeadLetter is the record that carries rec to topic: the same key, value,
// timestamp and headers (but those named wagg.*), with why and where it came
// from in headers of its own (docs/guarantees.md).
func DeadLetter(topic, deployment string, rec *kgo.Record, reason, msg string) *kgo.Record {
	if len(msg) > MaxDeadLetterMessage {
		msg = msg[:MaxDeadLetterMessage]
	}
	var headers []kgo.RecordHeader
	for _, h := range rec.Headers {
		if !strings.HasPrefix(h.Key, wagg) {
			headers = append(headers, h)
		}
	}
	return &kgo.Record{
		Topic:     topic,
		Key:       rec.Key,
		Value:     rec.Value,
		Timestamp: rec.Timestamp,
		Headers: append(headers,
			kgo.RecordHeader{Key: "wagg.error", Value: []byte(msg)},
			kgo.RecordHeader{Key: "wagg.reason", Value: []byte(reason)},
			kgo.RecordHeader{Key: "wagg.deployment", Value: []byte(deployment)},
			kgo.RecordHeader{Key: "wagg.topic", Value: []byte(rec.Topic)},
			kgo.RecordHeader{Key: "wagg.partition", Value: []byte(strconv.Itoa(int(rec.Partition)))},
			kgo.RecordHeader{Key: "wagg.offset", Value: []byte(strconv.FormatInt(rec.Offset, 10))},
		),
	}
}

// wagg prefixes the headers a dead letter carries of its own.
const wagg = "wagg."

// Unwritable reports whether Kafka refuses the dead letter dl for good, as
// it is: its key and value past the topic's max.message.bytes (or the
// client's batch size), or its timestamp outside the topic's
// message.timestamp.* bounds. Such a dead letter is written Stripped.
func Unwritable(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) || errors.Is(err, kerr.InvalidTimestamp)
}

// Stripped is dl without the source record's key, value and headers,
// dated now, for a dead letter Kafka refused as it was (Unwritable): its
// own headers still say why the record was not counted and where it is in
// the source topic, and wagg.stripped why it is not whole.
func Stripped(dl *kgo.Record, err error) *kgo.Record {
	msg := fmt.Sprintf("Kafka refused this dead letter whole (%v): the source record's key (%d bytes) and value (%d bytes) are left out and its timestamp (%d ms) replaced; read it at wagg.topic, wagg.partition, wagg.offset",
		err, len(dl.Key), len(dl.Value), dl.Timestamp.UnixMilli())
	if len(msg) > MaxDeadLetterMessage {
		msg = msg[:MaxDeadLetterMessage]
	}
	var headers []kgo.RecordHeader
	for _, h := range dl.Headers {
		if strings.HasPrefix(h.Key, wagg) {
			headers = append(headers, h)
		}
	}
	return &kgo.Record{
		Topic:     dl.Topic,
		Timestamp: time.Now(),
		Headers:   append(headers, kgo.RecordHeader{Key: "wagg.stripped", Value: []byte(msg)}),
	}
}
