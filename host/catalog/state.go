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
	Revision int64     `json:"revision"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
}

// Entry is a deployment as the catalog holds it.
type Entry struct {
	Spec plugins.Deployment
	// Revision is the offset of the spec's record.
	Revision int64
	// Failure is set when the deployment failed in this revision.
	Failure *Failure
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
	failures    map[string]Failure // the latest failure record per name
}

func newState() *state {
	return &state{deployments: map[string]*Entry{}, failures: map[string]Failure{}}
}

const (
	prefixPlugin     = "plugin/"
	prefixDeployment = "deployment/"
	prefixFailed     = "failed/"
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
		d, err := plugins.ParseDeployment(value)
		if err != nil {
			return nil, fmt.Errorf("catalog: deployment %s at offset %d: %w", name, offset, err)
		}
		if d.Name != name {
			return nil, fmt.Errorf("catalog: deployment record %q at offset %d names %q", key, offset, d.Name)
		}
		s.deployments[name] = &Entry{Spec: d, Revision: offset}
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

// link sets an entry's failure from the latest failure record, when that
// names the entry's revision (compaction may drop a deployment record and
// keep an older failure: it no longer applies).
func (s *state) link(name string) {
	e := s.deployments[name]
	if e == nil {
		return
	}
	e.Failure = nil
	if f, ok := s.failures[name]; ok && f.Revision == e.Revision {
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
