package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/barrier"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/domain"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
	"github.com/telapi/telkeys/projections"
)

// Stubs that satisfy the API's dependencies. Building the routes never calls
// them; a call would be a bug in this test, so they fail loudly.

type stubCommands struct{}

func (stubCommands) ConfigureTeamAccess(context.Context, events.Actor, string, events.AccessConfig) (events.AccessConfig, commands.Result, error) {
	panic("stub: ConfigureTeamAccess called")
}

func (stubCommands) SetPlatformFlag(context.Context, events.Actor, string, bool) (commands.Result, error) {
	panic("stub: SetPlatformFlag called")
}

func (stubCommands) RollKey(context.Context, events.Actor, string, string, time.Duration) (commands.CreatedKey, error) {
	panic("stub: RollKey called")
}

func (stubCommands) UpdateKey(context.Context, events.Actor, string, string, *bool, *string, bool) (domain.Key, commands.Result, error) {
	panic("stub: UpdateKey called")
}

func (stubCommands) ReportLeak(context.Context, events.Actor, string, string, []byte, commands.Leak) (commands.Result, error) {
	panic("stub: ReportLeak called")
}

func (stubCommands) CreateKeyUntil(context.Context, events.Actor, string, string, []string, *time.Time) (commands.CreatedKey, error) {
	panic("stub: CreateKey called")
}

func (stubCommands) DeleteKey(context.Context, events.Actor, string, string, bool) (commands.Result, error) {
	panic("stub: DeleteKey called")
}

type stubQueries struct{}

func (stubQueries) Team(context.Context, string) (projections.TeamRecord, error) {
	panic("stub: Team called")
}

func (stubQueries) TeamKeys(context.Context, string) ([]projections.KeyRecord, error) {
	panic("stub: TeamKeys called")
}

func (stubQueries) Teams(context.Context) ([]projections.TeamRecord, error) {
	panic("stub: Teams called")
}

func (stubQueries) WebRTC(context.Context) (bool, error) { panic("stub: WebRTC called") }

func (stubQueries) LastUsed(context.Context, string) (map[string]int64, error) {
	panic("stub: LastUsed called")
}
func (stubQueries) Quarantine(context.Context) ([]projections.QuarantineRecord, error) {
	return nil, nil
}

type stubVerifier struct{}

func (stubVerifier) VerifyWait(context.Context, string, string) keyauth.Result {
	panic("stub: VerifyWait called")
}
func (stubVerifier) Usage(string) (int64, int64)               { panic("stub: Usage called") }
func (stubVerifier) Owner(string) (string, string, bool)       { panic("stub: Owner called") }
func (stubVerifier) WaitApplied(context.Context, uint64) error { panic("stub: WaitApplied called") }
func (stubVerifier) Applied() uint64                           { panic("stub: Applied called") }

type stubAudit struct{}

func (stubAudit) Page(context.Context, audit.Filter) ([]audit.View, error) {
	panic("stub: Page called")
}

type stubProjection struct{}

func (stubProjection) Wait(context.Context, uint64) error { panic("stub: Wait called") }

var (
	_ Commands   = stubCommands{}
	_ Queries    = stubQueries{}
	_ Projection = stubProjection{}
	_ Verifier   = stubVerifier{}
)

func newRouteOnlyServer(t *testing.T) *Server {
	t.Helper()
	a, err := auth.New([]byte("openapi-test-secret-0123456789abcdef"), func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := New(Config{
		Commands:   stubCommands{},
		Queries:    stubQueries{},
		Projection: stubProjection{},
		Verifier:   stubVerifier{},
		Nodes:      barrier.New(barrier.DefaultBound, nil),
		Audit:      stubAudit{},
		Auth:       a,
		Ready:      func(context.Context) error { return nil },
		Metrics:    NewMetrics(reg),
		Gatherer:   reg,
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// openAPI is the part of the document this test reads.
type openAPI struct {
	OpenAPI string                                `json:"openapi"`
	Info    map[string]any                        `json:"info"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
}

type operation struct {
	OperationID string                     `json:"operationId"`
	Responses   map[string]json.RawMessage `json:"responses"`
	Parameters  []struct {
		Name string `json:"name"`
		In   string `json:"in"`
		Ref  string `json:"$ref"`
	} `json:"parameters"`
}

// httpMethods are the keys of a path item that are operations; the others
// (parameters, summary, description, servers, $ref) are not.
var httpMethods = map[string]bool{
	"get": true, "put": true, "post": true, "delete": true,
	"options": true, "head": true, "patch": true, "trace": true,
}

func parseDoc(t *testing.T) openAPI {
	t.Helper()
	if !json.Valid(openAPIDoc) {
		t.Fatal("the embedded openapi.json is not valid JSON")
	}
	var doc openAPI
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return doc
}

var fiberParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := parseDoc(t)
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf(`"openapi" = %q, want "3.1.0"`, doc.OpenAPI)
	}
	if doc.Info["title"] == nil || doc.Info["version"] == nil {
		t.Errorf("info needs a title and a version, got %v", doc.Info)
	}

	documented := map[string]bool{}
	opIDs := map[string]string{}
	for path, item := range doc.Paths {
		if !strings.HasPrefix(path, "/") {
			t.Errorf("path %q does not start with /", path)
		}
		for method, raw := range item {
			if !httpMethods[method] {
				continue
			}
			key := strings.ToUpper(method) + " " + path
			documented[key] = true
			var op operation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Errorf("%s: %v", key, err)
				continue
			}
			if len(op.Responses) == 0 {
				t.Errorf("%s documents no response", key)
			}
			if op.OperationID == "" {
				t.Errorf("%s has no operationId", key)
			} else if prev, dup := opIDs[op.OperationID]; dup {
				t.Errorf("operationId %q used by both %s and %s", op.OperationID, prev, key)
			} else {
				opIDs[op.OperationID] = key
			}
		}
	}
	if len(documented) == 0 {
		t.Fatal("the document has no operations")
	}

	s := newRouteOnlyServer(t)
	registered := map[string]bool{}
	for _, r := range s.App().GetRoutes(true) { // true: leave out Use (middleware) entries
		if r.Method == "HEAD" { // Fiber adds a HEAD for every GET
			continue
		}
		path := fiberParam.ReplaceAllString(r.Path, "{$1}")
		if path != "/" && strings.HasSuffix(path, "/") {
			path = strings.TrimSuffix(path, "/")
		}
		registered[r.Method+" "+path] = true
	}
	if len(registered) == 0 {
		t.Fatal("the app registers no routes")
	}

	var undocumented, unregistered []string
	for k := range registered {
		if !documented[k] {
			undocumented = append(undocumented, k)
		}
	}
	for k := range documented {
		if !registered[k] {
			unregistered = append(unregistered, k)
		}
	}
	sort.Strings(undocumented)
	sort.Strings(unregistered)
	if len(undocumented) > 0 {
		t.Errorf("routes registered but not in openapi.json:\n  %s", strings.Join(undocumented, "\n  "))
	}
	if len(unregistered) > 0 {
		t.Errorf("operations in openapi.json with no route:\n  %s", strings.Join(unregistered, "\n  "))
	}
	if !t.Failed() {
		keys := make([]string, 0, len(registered))
		for k := range registered {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		t.Logf("%d routes, all documented:\n  %s", len(keys), strings.Join(keys, "\n  "))
	}
}

// TestOpenAPIPathParameters: every {param} in a documented path is declared
// as a path parameter of the operation (directly or by $ref), so generated
// clients can fill it in.
func TestOpenAPIPathParameters(t *testing.T) {
	doc := parseDoc(t)
	var components struct {
		Components struct {
			Parameters map[string]struct {
				Name string `json:"name"`
				In   string `json:"in"`
			} `json:"parameters"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPIDoc, &components); err != nil {
		t.Fatal(err)
	}
	templ := regexp.MustCompile(`\{([^}]+)\}`)
	for path, item := range doc.Paths {
		want := templ.FindAllStringSubmatch(path, -1)
		if len(want) == 0 {
			continue
		}
		var shared []struct {
			Name string `json:"name"`
			In   string `json:"in"`
			Ref  string `json:"$ref"`
		}
		if raw, ok := item["parameters"]; ok {
			if err := json.Unmarshal(raw, &shared); err != nil {
				t.Fatalf("%s parameters: %v", path, err)
			}
		}
		for method, raw := range item {
			if !httpMethods[method] {
				continue
			}
			var op operation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatal(err)
			}
			declared := map[string]bool{}
			params := append(slices.Clone(op.Parameters), shared...)
			for _, p := range params {
				name, in := p.Name, p.In
				if p.Ref != "" {
					c := components.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
					name, in = c.Name, c.In
				}
				if in == "path" {
					declared[name] = true
				}
			}
			for _, m := range want {
				if !declared[m[1]] {
					t.Errorf("%s %s: path parameter {%s} is not declared", strings.ToUpper(method), path, m[1])
				}
			}
		}
	}
}
