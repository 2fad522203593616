package catalog

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/wagg/wagg/plugins"
)

// Failure is why a deployment stopped by itself. A failed deployment is not
// started again (on any host, nor after a restart) until it is deployed
// again.
type Failure struct {
	Revision int64 `json:"revision"`
	// Generation is the generation that failed: a backfill that takes over
	// (another generation, the same revision) runs.
	Generation int       `json:"generation,omitempty"`
	Error      string    `json:"error"`
	At         time.Time `json:"at"`
}

// Entry is a deployment as the catalog holds it.
type Entry struct {
	Spec plugins.Deployment
	// Revision is the offset of the spec's record.
	Revision int64
	// Failure is set when the deployment failed in this revision.
	Failure *Failure
	// Start is where Spec's partitions without a checkpoint begin, when the
	// revision was a fresh start of a name that was not deployed (nil: at
	// the earliest offset).
	Start map[int32]int64
	// Backfill is the fresh start of this revision, if one was asked for:
	// a new generation catching up beside Spec's, or, once switched over,
	// the generation that runs as the deployment.
	Backfill *Backfill
}

// Current is what runs as the deployment: Spec, or the backfill's spec once
// it switched over.
func (e Entry) Current() plugins.Deployment {
	if e.Backfill != nil && e.Backfill.Stage == StageSwitched {
		return e.Backfill.Spec
	}
	return e.Spec
}

// Stages of a backfill. Each is a record of its own that names the
// backfill's revision, so a record about a backfill that is no longer the
// deployment's (given up, replaced) changes nothing, and every host, which
// applies the records in the log's order, agrees on the stage.
const (
	// StageCatchingUp: the new generation catches up beside the old one,
	// which serves the view and the live hubs.
	StageCatchingUp = ""
	// StageStopping: the new generation has caught up once; every host
	// stops the old one (its last checkpoint) and the new one catches up
	// with that.
	StageStopping = "stopping"
	// StageSwitched: the new generation is the deployment: every host makes
	// the view show it (one RENAME, whoever comes first), starts a new
	// epoch in its hub and runs it as the deployment.
	StageSwitched = "switched"
)

// Backfill is a fresh start of a deployment into a new generation
// (wagg deploy -start).
type Backfill struct {
	// Spec is the new generation's: its Generation is Revision, unique in
	// the cluster and larger than any generation before it, so that no two
	// fresh starts, however they race, share tables or checkpoints.
	Spec plugins.Deployment
	// From is the -start asked for; Offsets are where each partition
	// starts, resolved once by the host that received the deploy.
	From    string
	Offsets map[int32]int64
	// Replaces is the revision of the deployment record it started from:
	// a later record of the deployment (a deploy, an undeploy) gives the
	// backfill up.
	Replaces int64
	// Revision is the offset of the backfill's record.
	Revision int64
	Stage    string
}

// backfillRecord is the value of a backfill record.
type backfillRecord struct {
	Replaces int64           `json:"replaces"`
	From     string          `json:"from"`
	Offsets  map[int32]int64 `json:"offsets"`
	Spec     json.RawMessage `json:"spec"`
}

// stageRecord is the value of a stopping, switched or given-up record: the
// backfill it is about.
type stageRecord struct {
	Backfill int64 `json:"backfill"`
}

// Plugin is a plugin record. Wasm is nil for a deleted plugin (a
// tombstone).
type Plugin struct {
	Name, Version, SHA256 string
	Wasm                  []byte
	At                    time.Time
}

// state is what the records read so far say. Only the reading goroutine
// changes it; readers get copies under the catalog's lock.
type state struct {
	deployments map[string]*Entry
	failures    map[string]Failure   // the latest failure record per name
	backfills   map[string]*Backfill // the latest backfill record per name
	stages      map[string]int64     // the backfill the latest stage record names, per prefix and name
}

func newState() *state {
	return &state{deployments: map[string]*Entry{}, failures: map[string]Failure{}, backfills: map[string]*Backfill{}, stages: map[string]int64{}}
}

const (
	prefixPlugin     = "plugin/"
	prefixDeployment = "deployment/"
	prefixFailed     = "failed/"
	prefixBackfill   = "backfill/"
	prefixStopping   = "stopping/"
	prefixSwitched   = "switched/"
	prefixGivenUp    = "givenup/"
)

// deploymentOf is the deployment a deployment or failure key names.
func deploymentOf(key string) string {
	_, name, _ := strings.Cut(key, "/")
	return name
}

func pluginKey(name, version, sha string) string {
	return prefixPlugin + name + "@" + version + "/" + sha
}

// apply reads one record. A plugin record is returned for the caller to
// store (or, a tombstone, to delete); a record it cannot read is an error and changes nothing (a record
// written by a newer wagg, or by hand).
func (s *state) apply(offset int64, key string, value []byte, at time.Time) (*Plugin, error) {
	switch {
	case strings.HasPrefix(key, prefixPlugin):
		ref, sha, ok := strings.Cut(strings.TrimPrefix(key, prefixPlugin), "/")
		name, version, ok2 := strings.Cut(ref, "@")
		if !ok || !ok2 {
			return nil, fmt.Errorf("catalog: record %q at offset %d: not a plugin", key, offset)
		}
		return &Plugin{Name: name, Version: version, SHA256: sha, Wasm: value, At: at}, nil
	case strings.HasPrefix(key, prefixDeployment):
		name := strings.TrimPrefix(key, prefixDeployment)
		if value == nil {
			delete(s.deployments, name)
			return nil, nil
		}
		start, value, err := cutStartOffsets(value)
		if err != nil {
			return nil, fmt.Errorf("catalog: deployment %s at offset %d: %w", name, offset, err)
		}
		d, err := plugins.ParseDeployment(value)
		if err != nil {
			return nil, fmt.Errorf("catalog: deployment %s at offset %d: %w", name, offset, err)
		}
		if d.Name != name {
			return nil, fmt.Errorf("catalog: deployment record %q at offset %d names %q", key, offset, d.Name)
		}
		// A deploy never takes a deployment back to an older generation:
		// one written by a host that had not yet seen a switch-over goes on
		// with the generation switched to.
		if prev := s.deployments[name]; prev != nil {
			d.Generation = max(d.Generation, prev.Current().Generation)
		}
		s.deployments[name] = &Entry{Spec: d, Revision: offset, Start: start}
		s.link(name)
		return nil, nil
	case strings.HasPrefix(key, prefixBackfill):
		name := strings.TrimPrefix(key, prefixBackfill)
		if value == nil {
			delete(s.backfills, name)
			s.link(name)
			return nil, nil
		}
		var r backfillRecord
		if err := json.Unmarshal(value, &r); err != nil {
			return nil, fmt.Errorf("catalog: backfill of %s at offset %d: %w", name, offset, err)
		}
		d, err := plugins.ParseDeployment(r.Spec)
		if err != nil {
			return nil, fmt.Errorf("catalog: backfill of %s at offset %d: %w", name, offset, err)
		}
		if d.Name != name {
			return nil, fmt.Errorf("catalog: backfill record %q at offset %d names %q", key, offset, d.Name)
		}
		if _, err := plugins.ParseStart(r.From); err != nil {
			return nil, fmt.Errorf("catalog: backfill of %s at offset %d: %w", name, offset, err)
		}
		d.Generation = int(offset)
		s.backfills[name] = &Backfill{Spec: d, From: r.From, Offsets: r.Offsets, Replaces: r.Replaces, Revision: offset}
		s.link(name)
		return nil, nil
	case strings.HasPrefix(key, prefixStopping), strings.HasPrefix(key, prefixSwitched), strings.HasPrefix(key, prefixGivenUp):
		prefix, name, _ := strings.Cut(key, "/")
		if value == nil {
			delete(s.stages, prefix+"/"+name)
			s.link(name)
			return nil, nil
		}
		var r stageRecord
		if err := json.Unmarshal(value, &r); err != nil {
			return nil, fmt.Errorf("catalog: %s record of %s at offset %d: %w", prefix, name, offset, err)
		}
		s.stages[prefix+"/"+name] = r.Backfill
		s.link(name)
		return nil, nil
	case strings.HasPrefix(key, prefixFailed):
		name := strings.TrimPrefix(key, prefixFailed)
		if value == nil {
			delete(s.failures, name)
			s.link(name)
			return nil, nil
		}
		var f Failure
		if err := json.Unmarshal(value, &f); err != nil {
			return nil, fmt.Errorf("catalog: failure of %s at offset %d: %w", name, offset, err)
		}
		s.failures[name] = f
		s.link(name)
		return nil, nil
	}
	return nil, fmt.Errorf("catalog: record %q at offset %d: unknown kind", key, offset)
}

// cutStartOffsets takes the start offsets (PutDeployment) out of a
// deployment record, leaving the spec.
func cutStartOffsets(value []byte) (map[int32]int64, []byte, error) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(value, &fields) != nil {
		return nil, value, nil // not a JSON object: the spec's parser says why
	}
	so, ok := fields["start_offsets"]
	if !ok {
		return nil, value, nil
	}
	var start map[int32]int64
	if err := json.Unmarshal(so, &start); err != nil {
		return nil, nil, fmt.Errorf("start_offsets: %w", err)
	}
	if start == nil {
		start = map[int32]int64{}
	}
	delete(fields, "start_offsets")
	rest, err := json.Marshal(fields)
	return start, rest, err
}

// link sets an entry's backfill and failure from the latest records of
// each kind, when they name the entry's revision (compaction may drop a
// deployment record and keep older ones: they no longer apply), and the
// backfill's stage from the stage records that name it.
func (s *state) link(name string) {
	e := s.deployments[name]
	if e == nil {
		return
	}
	e.Backfill = nil
	b := s.backfills[name]
	if r, ok := s.stages[prefixGivenUp+name]; ok && b != nil && r == b.Revision {
		b = nil // given up
	}
	if b != nil && b.Replaces == e.Revision {
		c := *b
		c.Stage = StageCatchingUp
		if r, ok := s.stages[prefixSwitched+name]; ok && r == c.Revision {
			c.Stage = StageSwitched
		} else if r, ok := s.stages[prefixStopping+name]; ok && r == c.Revision {
			c.Stage = StageStopping
		}
		e.Backfill = &c
	}
	// A failure holds for the generation that failed: a backfill that
	// takes over runs.
	e.Failure = nil
	if f, ok := s.failures[name]; ok && f.Revision == e.Revision && f.Generation == e.Current().Generation {
		e.Failure = &f
	}
}

// entries is a copy of the deployments, by name.
func (s *state) entries() []Entry {
	out := make([]Entry, 0, len(s.deployments))
	for _, e := range s.deployments {
		c := *e
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Spec.Name < out[j].Spec.Name })
	return out
}
