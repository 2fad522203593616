package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Stats is the answer of GET /v1/deployments/{name}/stats: where each
// partition stands in the consumer group and this host's counters. A
// dashboard that polls it gets records/s from two answers (Records over
// At).
type Stats struct {
	Name string    `json:"name"`
	Host string    `json:"host"` // the host that answered: the counters are its own
	At   time.Time `json:"at"`
	// Partitions are those of the input topic, from the deployment's
	// consumer group: the member that owns each (its host's instance id, or
	// its address) and how far its committed offset is behind the end.
	Partitions []PartitionStats `json:"partitions"`
	// Records counts the records this host handled since it started, by
	// outcome: processed, dead_letter.
	Records map[string]float64 `json:"records"`
	// DeadLetters counts this host's dead letters by reason (malformed,
	// late, future, plugin_error, ...).
	DeadLetters map[string]float64 `json:"dead_letters"`
	// Error says why Partitions are missing (Kafka did not answer).
	Error string `json:"error,omitempty"`
}

// PartitionStats is one partition of a deployment's input.
type PartitionStats struct {
	Partition int32  `json:"partition"`
	Owner     string `json:"owner,omitempty"` // empty: no member owns it (the group is empty or rebalancing)
	Committed int64  `json:"committed"`       // the group's committed offset; -1 before the first commit
	End       int64  `json:"end"`             // the partition's end offset
	Lag       int64  `json:"lag"`             // End - Committed (-1 when either is unknown)
}

// DeadLetter is one record of a deployment's dead-letter topic, as
// GET /v1/deployments/{name}/dead-letters?n=50 shows it: the deployment's
// records among the last n of each partition of the topic (deployments on
// one input topic share its dead-letter topic), newest first, at most n.
type DeadLetter struct {
	Partition int32     `json:"partition"` // in the dead-letter topic
	Offset    int64     `json:"offset"`    // in the dead-letter topic
	Time      time.Time `json:"time"`
	Reason    string    `json:"reason"` // malformed, late, future, plugin_error, ...
	Error     string    `json:"error"`  // what was wrong, in words
	Source    struct {
		Topic     string `json:"topic"`
		Partition int32  `json:"partition"`
		Offset    int64  `json:"offset"`
	} `json:"source"`
	Key   string `json:"key,omitempty"`
	Value string `json:"value"` // the record's value as text (invalid UTF-8 replaced), at most MaxDeadLetterValue bytes
	// Truncated says the value was longer than MaxDeadLetterValue.
	Truncated bool `json:"truncated,omitempty"`
}

// Bounds of GET /v1/deployments/{name}/dead-letters.
const (
	DefaultDeadLetters = 50
	MaxDeadLetters     = 500
	MaxDeadLetterValue = 4096
)

func (a *handler) stats(w http.ResponseWriter, r *http.Request) {
	st, err := a.b.Stats(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err, CodeBadRequest)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *handler) deadLetters(w http.ResponseWriter, r *http.Request) {
	n := DefaultDeadLetters
	if v := r.URL.Query().Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > MaxDeadLetters {
			writeError(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("n=%.32q: want 1 to %d", v, MaxDeadLetters))
			return
		}
	}
	dls, err := a.b.DeadLetters(r.Context(), r.PathValue("name"), n)
	if err != nil {
		writeErr(w, err, CodeBadRequest)
		return
	}
	writeJSON(w, http.StatusOK, dls)
}
