package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/internal/testwasm"
	"github.com/wagg/wagg/plugins"
)

func (h *host) delete(t testing.TB, path string) (int, api.ErrorBody) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, h.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb api.ErrorBody
	json.Unmarshal(b, &eb)
	return resp.StatusCode, eb
}

// pluginRefs are the name@version of the plugins a host lists.
func pluginRefs(h *host) (map[string]bool, error) {
	var ms []plugins.Manifest
	if err := getJSON(h.url+"/v1/plugins", &ms); err != nil {
		return nil, err
	}
	refs := map[string]bool{}
	for _, m := range ms {
		refs[m.Ref()] = true
	}
	return refs, nil
}

// A plugin deleted on one host is gone from every host, its bytes
// included, and from any host that joins later; one that a deployment runs
// is refused with 409 naming the deployment.
func TestPlugins_DeleteReachesEveryHostAndSparesWhatRuns(t *testing.T) {
	e := services(t)
	cfgA := hostConfig(t, e)
	cfgB := cfgA
	cfgB.DataDir = t.TempDir()
	a, b := runHost(t, e, cfgA), runHost(t, e, cfgB)

	v1 := testwasm.Guest{}.Bytes()
	v2 := testwasm.Guest{Schema: strings.Replace(testwasm.DefaultSchema, `"votes"`, `"ballots"`, 1)}.Bytes()
	for v, wasm := range map[string][]byte{"1": v1, "2": v2} {
		if code, body := a.post(t, "/v1/plugins/polls/"+v, "application/wasm", wasm); code != http.StatusCreated {
			t.Fatalf("push polls@%s: %d %s", v, code, body)
		}
	}
	topic, _ := newTopic(t, e, 2)
	spec := fmt.Sprintf(`{"name":"polls","plugin":"polls@1","topic":%q,"windows":[{"name":"total","kind":"global"}]}`, topic)
	if code, body := b.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}

	code, eb := a.delete(t, "/v1/plugins/polls/1")
	if code != http.StatusConflict || eb.Error.Code != api.CodeConflict || !strings.Contains(eb.Error.Message, "deployment polls") {
		t.Fatalf("delete of the deployed polls@1: %d %+v, want 409 naming the deployment", code, eb)
	}
	if code, eb := b.delete(t, "/v1/plugins/polls/2"); code != http.StatusNoContent {
		t.Fatalf("delete polls@2: %d %+v", code, eb)
	}
	for name, h := range map[string]*host{"a": a, "b": b} {
		eventually(t, 30*time.Second, "host "+name+" lists polls@1 only", func() error {
			refs, err := pluginRefs(h)
			if err == nil && (len(refs) != 1 || !refs["polls@1"]) {
				err = fmt.Errorf("lists %v", refs)
			}
			return err
		})
	}
	blobs, err := filepath.Glob(filepath.Join(cfgA.DataDir, "blobs", "*.wasm"))
	if err != nil || len(blobs) != 1 {
		t.Fatalf("host a keeps the blobs %v (%v), want polls@1's only", blobs, err)
	}
	if code, eb := a.delete(t, "/v1/plugins/polls/2"); code != http.StatusNotFound || eb.Error.Code != api.CodeNotFound {
		t.Fatalf("delete polls@2 again: %d %+v, want 404", code, eb)
	}

	if code, eb := a.delete(t, "/v1/deployments/polls"); code != http.StatusNoContent {
		t.Fatalf("undeploy: %d %+v", code, eb)
	}
	if code, eb := a.delete(t, "/v1/plugins/polls/1"); code != http.StatusNoContent {
		t.Fatalf("delete polls@1 once undeployed: %d %+v", code, eb)
	}
	// A host joining later replays the catalog, tombstones included.
	cfgC := cfgA
	cfgC.DataDir = t.TempDir()
	c := runHost(t, e, cfgC)
	if refs, err := pluginRefs(c); err != nil || len(refs) != 0 {
		t.Fatalf("a host joining after the deletes lists %v (%v), want nothing", refs, err)
	}
	if _, err := os.Stat(filepath.Join(cfgC.DataDir, "blobs")); err != nil {
		t.Fatalf("the joining host's registry: %v", err)
	}
}

// A push past sandbox.max_plugins is refused with 507 storage_full and
// stores nothing; the same bytes pushed again still answer, and deleting a
// version makes room for the next.
func TestPlugins_PushesStopAtTheStorageLimit(t *testing.T) {
	e := services(t)
	cfg := hostConfig(t, e)
	cfg.Sandbox.MaxPlugins = 2
	h := runHost(t, e, cfg)
	guest := func(metric string) []byte {
		return testwasm.Guest{Schema: strings.Replace(testwasm.DefaultSchema, `"votes"`, `"`+metric+`"`, 1)}.Bytes()
	}
	for v, metric := range map[string]string{"1": "votes", "2": "ballots"} {
		if code, body := h.post(t, "/v1/plugins/polls/"+v, "application/wasm", guest(metric)); code != http.StatusCreated {
			t.Fatalf("push polls@%s: %d %s", v, code, body)
		}
	}
	code, body := h.post(t, "/v1/plugins/polls/3", "application/wasm", guest("ayes"))
	var eb api.ErrorBody
	json.Unmarshal(body, &eb)
	if code != http.StatusInsufficientStorage || eb.Error.Code != api.CodeFull || !strings.Contains(eb.Error.Message, "sandbox.max_plugins") {
		t.Fatalf("push past the limit: %d %s, want 507 storage_full naming sandbox.max_plugins", code, body)
	}
	if refs, err := pluginRefs(h); err != nil || len(refs) != 2 || refs["polls@3"] {
		t.Fatalf("after the refused push the host lists %v (%v), want polls@1 and polls@2", refs, err)
	}
	if code, body := h.post(t, "/v1/plugins/polls/1", "application/wasm", guest("votes")); code != http.StatusCreated {
		t.Fatalf("push of stored bytes at the limit: %d %s", code, body)
	}
	if code, eb := h.delete(t, "/v1/plugins/polls/2"); code != http.StatusNoContent {
		t.Fatalf("delete polls@2: %d %+v", code, eb)
	}
	if code, body := h.post(t, "/v1/plugins/polls/3", "application/wasm", guest("ayes")); code != http.StatusCreated {
		t.Fatalf("push once a version is deleted: %d %s", code, body)
	}
}
