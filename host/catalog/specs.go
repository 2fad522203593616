package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/wagg/wagg/plugins"
)

// writeTimeout bounds a write to the catalog made through Specs.
const writeTimeout = 30 * time.Second

// Specs is the catalog as host/deploy keeps deployment specs: every host's
// Manager reads and writes the same ones.
type Specs struct{ C *Catalog }

// List is the spec of every deployment as it runs (Entry.Current), by
// name.
func (s Specs) List() ([]plugins.Deployment, error) {
	var out []plugins.Deployment
	for _, e := range s.C.Deployments() {
		out = append(out, e.Current())
	}
	return out, nil
}

// Entries is every deployment, by name.
func (s Specs) Entries() []Entry { return s.C.Deployments() }

// Entry is the named deployment, if the catalog holds it.
func (s Specs) Entry(name string) (Entry, bool) { return s.C.Deployment(name) }

// PutBackfill records a fresh start (Catalog.PutBackfill).
func (s Specs) PutBackfill(ctx context.Context, replaces int64, d plugins.Deployment, from string, offsets map[int32]int64) (Backfill, error) {
	return s.C.PutBackfill(ctx, replaces, d, from, offsets)
}

// PutStage records a backfill's stage (Catalog.PutStage).
func (s Specs) PutStage(ctx context.Context, name string, backfill int64, stage string) error {
	return s.C.PutStage(ctx, name, backfill, stage)
}

// GiveUpBackfill gives a backfill up (Catalog.GiveUpBackfill).
func (s Specs) GiveUpBackfill(ctx context.Context, name string, backfill int64) error {
	return s.C.GiveUpBackfill(ctx, name, backfill)
}

// Put writes d, a new revision that clears a failure, and waits until this
// host has applied it; start is Catalog.PutDeployment's.
func (s Specs) Put(d plugins.Deployment, start map[int32]int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	_, err := s.C.PutDeployment(ctx, d, start)
	return err
}

// Delete removes a deployment and its failure.
func (s Specs) Delete(name string) error {
	if _, ok := s.C.Deployment(name); !ok {
		return fmt.Errorf("%w: deployment %s", plugins.ErrNotFound, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	return s.C.DeleteDeployment(ctx, name)
}

// Failed is the failure of the deployment's current revision, if any.
func (s Specs) Failed(name string) (plugins.Failure, bool) {
	e, ok := s.C.Deployment(name)
	if !ok || e.Failure == nil {
		return plugins.Failure{}, false
	}
	return plugins.Failure{Error: e.Failure.Error, At: e.Failure.At}, true
}

// SetFailed records that generation of the deployment's current revision
// failed: every host stops it.
func (s Specs) SetFailed(name string, generation int, f plugins.Failure) error {
	e, ok := s.C.Deployment(name)
	if !ok {
		return nil // undeployed meanwhile
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	return s.C.PutFailure(ctx, name, Failure{Revision: e.Revision, Generation: generation, Error: f.Error, At: f.At})
}

// ClearFailed does nothing: a Put is a new revision, which no failure
// names.
func (s Specs) ClearFailed(string) error { return nil }
