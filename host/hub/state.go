package hub

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"

	"github.com/coder/websocket"
	"github.com/wagg/wagg/abi"
)

// aggState is everything the hub holds for one registered aggregator in one
// epoch. Registering another schema replaces it with a new one. Its concerns
// have a file each: the merge of the partitions' values (merge.go), the
// delta history that lagging subscribers and resumes replay (history.go) and
// snapshots (snapshot.go); this file holds what they share.
type aggState struct {
	name    string
	epoch   string
	schema  *abi.Schema
	windows []abi.Window
	log     *slog.Logger
	// distinct lists the distinct metrics, whose rows carry sketches.
	distinct []int

	keepClosed   int
	history      int
	historyBytes int   // maxHistoryBytes; tests lower it
	maxGroups    int   // per pane
	maxBytes     int64 // of groupCost, in all panes

	// JSON pieces computed once at Register.
	metricNames [][]byte // `"votes":`
	keyNames    [][]byte // `"poll_id":`
	infoJSON    []byte   // `"windows":[...],"keys":[...],"metrics":[...]`

	mu            sync.RWMutex
	seq           uint64 // the seq of the latest delta
	notify        chan struct{}
	subs          map[*subscription]struct{}
	gone          bool // replaced by a Register or the hub closed
	keyCache      map[string]*keyInfo
	keyCacheBytes int // of the keys and their JSON in keyCache
	drops         map[string]uint64

	// The merge (merge.go).
	wins []windowState
	// versions is the latest version (source offset) each partition's rows
	// were published at: rows older than it are a replay (another host
	// restoring the partition from its checkpoint) of values already shown.
	versions map[int32]int64
	held     int64 // groupCost of the groups of all panes of all windows
	scratch  []uint64
	touched  []*group
	touchedW []paneRef

	// The delta history (history.go).
	hist    []*delta // oldest first, at most history deltas and historyBytes
	histLen int      // encoded bytes in hist

	// Snapshots (snapshot.go). shared is the snapshot of the current seq
	// handed to unfiltered subscribers, so that a reconnect storm copies and
	// encodes the state once per seq rather than once per subscriber. push
	// clears it.
	shared *sharedSnap
}

// keyInfo is a group key decoded once and shared by every pane and row that
// carries it: the encoded form (abi.Row.Key), the values for filters and the
// JSON object rows are written with.
type keyInfo struct {
	key  string
	vals []any
	json []byte
}

// outRow is a merged row as it went out in one delta or snapshot. It does not
// change after it is made, so the history and every writer share it.
type outRow struct {
	win     int
	start   int64
	k       *keyInfo
	metrics []uint64
	final   bool
}

func newAggState(name, epoch string, s *abi.Schema, windows []abi.Window, o *Options) *aggState {
	a := &aggState{
		name:         name,
		epoch:        epoch,
		schema:       s,
		windows:      windows,
		log:          o.Logger.With("aggregator", name),
		keepClosed:   o.KeepClosed,
		history:      o.History,
		historyBytes: maxHistoryBytes,
		maxGroups:    o.MaxGroupsPerPane,
		maxBytes:     o.MaxBytes,
		keyCache:     map[string]*keyInfo{},
		notify:       make(chan struct{}),
		subs:         map[*subscription]struct{}{},
		scratch:      make([]uint64, len(s.Metrics)),
		drops:        map[string]uint64{},
		versions:     map[int32]int64{},
	}
	for j, m := range s.Metrics {
		if m.Kind == abi.Distinct {
			a.distinct = append(a.distinct, j)
		}
		a.metricNames = append(a.metricNames, append(appendString(nil, m.Name), ':'))
	}
	for _, c := range s.Keys {
		a.keyNames = append(a.keyNames, append(appendString(nil, c.Name), ':'))
	}
	for _, w := range windows {
		a.wins = append(a.wins, windowState{def: w, nameJSON: appendString(nil, w.Name), panes: map[int64]*pane{}})
	}
	info := struct {
		Windows []abi.Window `json:"windows"`
		Keys    []abi.Column `json:"keys"`
		Metrics []abi.Metric `json:"metrics"`
	}{windows, s.Keys, s.Metrics}
	if info.Windows == nil {
		info.Windows = []abi.Window{}
	}
	if info.Keys == nil {
		info.Keys = []abi.Column{}
	}
	b, _ := json.Marshal(info) // plain structs of strings and ints: cannot fail
	a.infoJSON = b[1 : len(b)-1]
	return a
}

func (a *aggState) windowIndex(name string) int {
	for i, w := range a.windows {
		if w.Name == name {
			return i
		}
	}
	return -1
}

// drop counts a row the hub cannot use and logs the first of each reason and
// then every power of two, so a broken pipeline is visible without flooding
// the log.
func (a *aggState) drop(reason string) {
	a.drops[reason]++
	if n := a.drops[reason]; n&(n-1) == 0 {
		a.log.Warn("hub: dropped rows", "reason", reason, "count", n)
	}
}

func (a *aggState) keyInfo(key string) (*keyInfo, error) {
	if k := a.keyCache[key]; k != nil {
		return k, nil
	}
	// A row's key shares its memory with the rest of its flush (abi.DecodeRows),
	// and the values are substrings of it: keep a copy of its own.
	key = strings.Clone(key)
	vals, err := a.schema.KeyValues(key)
	if err != nil {
		return nil, err
	}
	b := []byte{'{'}
	for i, v := range vals {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, a.keyNames[i]...)
		switch v := v.(type) {
		case int64:
			b = appendInt(b, v)
		case float64:
			b = appendFloat(b, v)
		case string:
			b = appendString(b, v)
		}
	}
	b = append(b, '}')
	if len(a.keyCache) >= maxKeyCache || a.keyCacheBytes >= maxKeyCacheBytes {
		clear(a.keyCache)
		a.keyCacheBytes = 0
	}
	a.keyCacheBytes += len(key) + len(b)
	k := &keyInfo{key: key, vals: vals, json: b}
	a.keyCache[k.key] = k
	return k, nil
}

// retire marks a replaced state and closes its subscribers.
func (a *aggState) retire(code websocket.StatusCode, reason string) {
	a.mu.Lock()
	a.gone = true
	subs := make([]*subscription, 0, len(a.subs))
	for s := range a.subs {
		subs = append(subs, s)
	}
	close(a.notify)
	a.notify = make(chan struct{})
	a.mu.Unlock()
	for _, s := range subs {
		s.sess.closeWith(code, reason)
	}
}
