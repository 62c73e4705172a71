package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/telapi/telkeys/auth"
)

// Malformed, hostile and unauthenticated requests: each gets the
// documented 4xx problem, none a 5xx, none kills the server, and none
// appends anything to the event stream.

const (
	pathAcmeKeys   = "/v1/teams/acme/api-keys"
	pathAcmeAccess = "/v1/teams/acme/api-access"
	pathWebRTC     = "/v1/platform/flags/webrtc"
	validAccess    = `"enabled":true,"allowed_scopes":["READ_TEAM_APPS"],"max_keys":5`
)

func bearer(tok string) string { return "Bearer " + tok }

// keyBody is a create request for a key named name.
func keyBody(name string) []byte {
	b, _ := json.Marshal(map[string]any{"name": name, "scopes": []string{"READ_TEAM_APPS"}}) // strings always marshal
	return b
}

// badCase is a request that must be answered with the problem status and
// code.
type badCase struct {
	name         string
	method, path string
	authz        string // full Authorization header value; "" sends none
	body         []byte // nil sends none
	status       int
	code         string
	send         func(testing.TB) response // if set, sends the request instead
}

// invalid is a case answered 400 invalid_request.
func invalid(name, method, path, authz string, body []byte) badCase {
	return badCase{name: name, method: method, path: path, authz: authz, body: body, status: 400, code: "invalid_request"}
}

// badInput is the service the battery runs against, with the tokens and
// the key its cases use.
type badInput struct {
	s       *testService
	sa, mem string // superadmin and member of acme
	betaKey string // the id of a key of team beta
}

// TestBadInputBattery sends every bad request of the groups below; each
// must get its 4xx problem and leave the server healthy. The event stream
// must hold no more events after them than before.
func TestBadInputBattery(t *testing.T) {
	b, baseline := newBadInput(t)
	groups := []struct {
		name  string
		cases func(*badInput, testing.TB) []badCase
	}{
		{"malformed JSON", (*badInput).malformedJSON},
		{"wrong types and missing fields", (*badInput).wrongTypes},
		{"unknown fields", (*badInput).unknownFields},
		{"names", (*badInput).names},
		{"scopes", (*badInput).scopes},
		{"bodies over 1 MiB", (*badInput).tooLarge},
		{"team ids in the path", (*badInput).teamIDs},
		{"key ids in the path", (*badInput).keyIDs},
		{"tokens", (*badInput).tokens},
		{"the key lifecycle's routes", (*badInput).lifecycle},
	}
	worst, sent := 0, 0
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.cases(b, t) {
				sent++
				t.Run(c.name, func(t *testing.T) { worst = max(worst, b.check(t, c)) })
			}
		})
	}
	// A real client that writes the whole oversized body gets the 413
	// problem every time: the server drains the unread body before closing
	// (api.Linger) instead of resetting the connection.
	t.Run("oversized body through a client", func(t *testing.T) {
		s := b.s.withT(t)
		for range 10 {
			r, err := s.trySend("POST", pathAcmeKeys, map[string]string{"Authorization": bearer(b.mem)}, bytes.Repeat([]byte("x"), 1<<20+1))
			if err != nil {
				t.Fatalf("oversized body through a client: %v", err)
			}
			worst = max(worst, r.status)
			expectProblem(t, r, 413, "body_too_large")
		}
		if h := s.do("GET", "/healthz", "", nil); h.status != 200 {
			t.Fatalf("unhealthy after oversized bodies: %d", h.status)
		}
	})

	if worst >= 500 {
		t.Errorf("some response had status %d", worst)
	}
	t.Logf("%d bad requests, all answered with a 4xx problem", sent)

	if got := b.s.eventCount(); got != baseline {
		t.Fatalf("the event stream holds %d events after the battery, want %d: a bad request was written", got, baseline)
	}
	// The service still works.
	b.s.createKey("acme", "still works")
	if got := b.s.eventCount(); got != baseline+1 {
		t.Fatalf("events %d after one more create, want %d", got, baseline+1)
	}
}

// newBadInput starts the service with teams acme and beta and a key in
// each, and returns the number of events stored.
func newBadInput(t *testing.T) (*badInput, uint64) {
	t.Helper()
	s := startService(t)
	s.enableTeam("acme", 5)
	s.enableTeam("beta", 5)
	b := &badInput{s: s, sa: s.token(auth.RoleSuperadmin, ""), mem: s.token(auth.RoleMember, "acme"),
		betaKey: s.createKey("beta", "beta key")["id"].(string)}

	// The name limit counts characters, not bytes: 64 'é' (128 bytes) is
	// accepted. Done before the baseline because it appends an event.
	if k := s.createKey("acme", strings.Repeat("é", 64)); k["name"] != strings.Repeat("é", 64) {
		t.Fatalf("64-rune name stored as %q", k["name"])
	}
	if n := utf8.RuneCountInString(strings.Repeat("é", 64)); n != 64 {
		t.Fatalf("test bug: %d runes", n)
	}
	baseline := s.eventCount()
	if baseline != 4 { // two configs, two keys
		t.Fatalf("setup wrote %d events, want 4", baseline)
	}
	return b, baseline
}

// check sends c and checks its answer; it returns the status.
func (b *badInput) check(t *testing.T, c badCase) int {
	t.Helper()
	s := b.s.withT(t)
	hdr := map[string]string{}
	if c.authz != "" {
		hdr["Authorization"] = c.authz
	}
	var r response
	if c.send != nil {
		r = c.send(t)
	} else {
		r = s.send(c.method, c.path, hdr, c.body)
	}
	if r.status >= 500 {
		t.Errorf("%s %s: server error %d: %s", c.method, c.path, r.status, r.body)
	}
	if r.status < 400 || r.status >= 500 {
		t.Errorf("%s %s: status %d, want a 4xx; body %.300s", c.method, c.path, r.status, r.body)
	}
	if h := s.do("GET", "/healthz", "", nil); h.status != 200 {
		t.Fatalf("unhealthy after %s: %d %s", c.name, h.status, h.body)
	}
	expectProblem(t, r, c.status, c.code)
	return r.status
}

// malformedJSON: bodies that are not one JSON object, on every route that
// takes a body, and trailing data after an otherwise valid body.
func (b *badInput) malformedJSON(testing.TB) []badCase {
	var cases []badCase
	for _, route := range []struct{ path, method, tok string }{{pathAcmeKeys, "POST", b.mem}, {pathAcmeAccess, "PUT", b.sa}, {pathWebRTC, "PUT", b.sa}} {
		for _, body := range []struct{ name, body string }{
			{"unterminated object", `{`},
			{"array", `[]`},
			{"null", `null`},
			{"string", `"str"`},
			{"number", `1`},
			{"empty body", ``},
			{"whitespace body", " \n\t"},
			{"trailing object", `{"name":"a"}{}`},
			{"trailing garbage", `{"name":"a"} x`},
			{"trailing bracket", `{"name":"a"}]`},
			{"single quotes", `{'name':'a'}`},
			{"comment", `{/* */"name":"a"}`},
			{"trailing comma", `{"name":"a",}`},
			{"NaN", `{"max_keys":NaN}`},
		} {
			cases = append(cases, invalid(route.method+" "+route.path+" "+body.name, route.method, route.path, bearer(route.tok), []byte(body.body)))
		}
	}
	return append(cases,
		invalid("create valid object then another", "POST", pathAcmeKeys, bearer(b.mem), []byte(`{"name":"x","scopes":["READ_TEAM_APPS"]}{}`)),
		invalid("create valid object then garbage", "POST", pathAcmeKeys, bearer(b.mem), []byte(`{"name":"x","scopes":["READ_TEAM_APPS"]} garbage`)),
		invalid("access valid object then another", "PUT", pathAcmeAccess, bearer(b.sa), []byte(`{`+validAccess+`}{}`)),
		invalid("webrtc valid object then another", "PUT", pathWebRTC, bearer(b.sa), []byte(`{"enabled":true}{"enabled":false}`)),
	)
}

func (b *badInput) wrongTypes(testing.TB) []badCase {
	var cases []badCase
	for _, route := range []struct {
		prefix, method, path, tok string
		bodies                    map[string]string
	}{
		{"create", "POST", pathAcmeKeys, b.mem, map[string]string{
			"name as number":     `{"name":1,"scopes":["READ_TEAM_APPS"]}`,
			"name as object":     `{"name":{},"scopes":["READ_TEAM_APPS"]}`,
			"name null":          `{"name":null,"scopes":["READ_TEAM_APPS"]}`,
			"name missing":       `{"scopes":["READ_TEAM_APPS"]}`,
			"scopes as string":   `{"name":"x","scopes":"READ_TEAM_APPS"}`,
			"scopes with number": `{"name":"x","scopes":["READ_TEAM_APPS",1]}`,
			"scopes as object":   `{"name":"x","scopes":{"READ_TEAM_APPS":true}}`,
			"scopes null":        `{"name":"x","scopes":null}`,
			"scopes missing":     `{"name":"x"}`,
			"empty object":       `{}`,
		}},
		{"access", "PUT", pathAcmeAccess, b.sa, map[string]string{
			"max_keys as string":            `{"enabled":true,"allowed_scopes":["READ_TEAM_APPS"],"max_keys":"5"}`,
			"max_keys float":                `{"enabled":true,"allowed_scopes":["READ_TEAM_APPS"],"max_keys":1.5}`,
			"max_keys huge":                 `{"enabled":true,"allowed_scopes":["READ_TEAM_APPS"],"max_keys":1e30}`,
			"max_keys negative":             `{"enabled":true,"allowed_scopes":["READ_TEAM_APPS"],"max_keys":-1}`,
			"max_keys over limit":           `{"enabled":true,"allowed_scopes":["READ_TEAM_APPS"],"max_keys":1001}`,
			"max_keys null":                 `{"enabled":true,"allowed_scopes":["READ_TEAM_APPS"],"max_keys":null}`,
			"enabled as string":             `{"enabled":"true","allowed_scopes":["READ_TEAM_APPS"],"max_keys":5}`,
			"enabled as number":             `{"enabled":1,"allowed_scopes":["READ_TEAM_APPS"],"max_keys":5}`,
			"allowed_scopes as string":      `{"enabled":true,"allowed_scopes":"READ_TEAM_APPS","max_keys":5}`,
			"allowed_scopes duplicate":      `{"enabled":true,"allowed_scopes":["READ_TEAM_APPS","READ_TEAM_APPS"],"max_keys":5}`,
			"allowed_scopes unknown":        `{"enabled":true,"allowed_scopes":["ADMIN"],"max_keys":5}`,
			"max_requests_per_day string":   `{` + validAccess + `,"max_requests_per_day":"10"}`,
			"max_requests_per_day float":    `{` + validAccess + `,"max_requests_per_day":1.5}`,
			"max_requests_per_day huge":     `{` + validAccess + `,"max_requests_per_day":1e30}`,
			"max_requests_per_day over":     `{` + validAccess + `,"max_requests_per_day":1000000000001}`,
			"max_requests_per_day negative": `{` + validAccess + `,"max_requests_per_day":-1}`,
		}},
		{"webrtc", "PUT", pathWebRTC, b.sa, map[string]string{
			"enabled as string": `{"enabled":"yes"}`,
			"enabled as number": `{"enabled":1}`,
			"enabled null":      `{"enabled":null}`,
			"enabled missing":   `{}`,
		}},
	} {
		for name, body := range route.bodies {
			cases = append(cases, invalid(route.prefix+" "+name, route.method, route.path, bearer(route.tok), []byte(body)))
		}
	}
	return cases
}

func (b *badInput) unknownFields(testing.TB) []badCase {
	return []badCase{
		invalid("create unknown field", "POST", pathAcmeKeys, bearer(b.mem), []byte(`{"name":"x","scopes":["READ_TEAM_APPS"],"extra":1}`)),
		invalid("create unknown field id", "POST", pathAcmeKeys, bearer(b.mem), []byte(`{"id":"key_01ARZ3NDEKTSV4RRFFQ69G5FAV","name":"x","scopes":["READ_TEAM_APPS"]}`)),
		invalid("create unknown field key", "POST", pathAcmeKeys, bearer(b.mem), []byte(`{"name":"x","scopes":["READ_TEAM_APPS"],"key":"tk_chosen"}`)),
		invalid("access unknown field", "PUT", pathAcmeAccess, bearer(b.sa), []byte(`{`+validAccess+`,"extra":true}`)),
		invalid("access unknown field team", "PUT", pathAcmeAccess, bearer(b.sa), []byte(`{`+validAccess+`,"team":"beta"}`)),
		invalid("webrtc unknown field", "PUT", pathWebRTC, bearer(b.sa), []byte(`{"enabled":true,"flag":"other"}`)),
	}
}

// names: empty, too long, or holding characters a name must not have.
func (b *badInput) names(testing.TB) []badCase {
	var cases []badCase
	for name, n := range map[string]string{
		"empty":                   "",
		"spaces only":             "   ",
		"whitespace only":         " \t\n\r\v\f ",
		"NBSP and ideographic sp": "\u00a0\u3000",
		"65 ascii":                strings.Repeat("a", 65),
		"65 é":                    strings.Repeat("é", 65),
		"64 é then a":             strings.Repeat("é", 64) + "a",
		"NUL":                     "a\x00b",
		"NUL alone":               "\x00",
		"newline":                 "a\nb",
		"tab":                     "a\tb",
		"carriage return":         "a\rb",
		"escape":                  "a\x1bb",
		"DEL":                     "a\x7fb",
		"NEL U+0085":              "a\u0085b",
		"C1 U+009B":               "a\u009bb",
		"bidi override U+202E":    "a\u202eb",
		"bidi override alone":     "\u202e",
		"bidi isolate U+2066":     "a\u2066b",
		"zero-width space":        "a\u200bb",
		"zero-width joiner":       "a\u200db",
		"BOM U+FEFF":              "a\ufeffb",
		"soft hyphen":             "a\u00adb",
		"line separator U+2028":   "a\u2028b",
		"paragraph sep U+2029":    "a\u2029b",
		"private use U+E000":      "a\ue000b",
		"unassigned U+0378":       "a\u0378b",
		"tag character U+E0041":   "a\U000E0041b",
	} {
		cases = append(cases, invalid("create name "+name, "POST", pathAcmeKeys, bearer(b.mem), keyBody(n)))
	}
	// Invalid UTF-8 sent raw, and lone surrogates as JSON escapes: Go's
	// decoder silently turns both into U+FFFD.
	for _, c := range []struct{ name, method, path, tok, body string }{
		{"create name invalid UTF-8 byte", "POST", pathAcmeKeys, b.mem, "{\"name\":\"a\xffb\",\"scopes\":[\"READ_TEAM_APPS\"]}"},
		{"create name truncated UTF-8 sequence", "POST", pathAcmeKeys, b.mem, "{\"name\":\"a\xc3\",\"scopes\":[\"READ_TEAM_APPS\"]}"},
		{"create name overlong UTF-8 slash", "POST", pathAcmeKeys, b.mem, "{\"name\":\"a\xc0\xafb\",\"scopes\":[\"READ_TEAM_APPS\"]}"},
		{"create name UTF-8 encoded surrogate", "POST", pathAcmeKeys, b.mem, "{\"name\":\"a\xed\xa0\x80b\",\"scopes\":[\"READ_TEAM_APPS\"]}"},
		{"create invalid UTF-8 in a scope", "POST", pathAcmeKeys, b.mem, "{\"name\":\"x\",\"scopes\":[\"READ_TEAM_APPS\xff\"]}"},
		{"webrtc invalid UTF-8 in a field name", "PUT", pathWebRTC, b.sa, "{\"enabled\":true,\"\xff\":1}"},
		{"create invalid UTF-8 outside strings", "POST", pathAcmeKeys, b.mem, "{\"name\":\"a\",\"scopes\":[\"READ_TEAM_APPS\"]}\xff"},
		{"create name lone high surrogate escape", "POST", pathAcmeKeys, b.mem, `{"name":"a\ud800b","scopes":["READ_TEAM_APPS"]}`},
		{"create name lone low surrogate escape", "POST", pathAcmeKeys, b.mem, `{"name":"a\udc00b","scopes":["READ_TEAM_APPS"]}`},
		{"create name reversed surrogate pair", "POST", pathAcmeKeys, b.mem, `{"name":"\udc00\ud800","scopes":["READ_TEAM_APPS"]}`},
		{"create name NUL escape", "POST", pathAcmeKeys, b.mem, `{"name":"a\u0000b","scopes":["READ_TEAM_APPS"]}`},
	} {
		cases = append(cases, invalid(c.name, c.method, c.path, bearer(c.tok), []byte(c.body)))
	}
	return cases
}

// scopes: malformed lists are invalid; well-formed scopes the team does
// not allow are 422.
func (b *badInput) scopes(testing.TB) []badCase {
	cases := []badCase{
		invalid("create duplicate scopes", "POST", pathAcmeKeys, bearer(b.mem), []byte(`{"name":"x","scopes":["READ_TEAM_APPS","READ_TEAM_APPS"]}`)),
		invalid("create empty scopes", "POST", pathAcmeKeys, bearer(b.mem), []byte(`{"name":"x","scopes":[]}`)),
	}
	for name, body := range map[string]string{
		"unknown scope":            `{"name":"x","scopes":["ADMIN"]}`,
		"lower-case scope":         `{"name":"x","scopes":["read_team_apps"]}`,
		"empty scope":              `{"name":"x","scopes":[""]}`,
		"null scope":               `{"name":"x","scopes":[null]}`,
		"known and unknown scopes": `{"name":"x","scopes":["READ_TEAM_APPS","ADMIN"]}`,
	} {
		cases = append(cases, badCase{"create " + name, "POST", pathAcmeKeys, bearer(b.mem), []byte(body), 422, "scope_not_allowed", nil})
	}
	return cases
}

// tooLarge: bodies over 1 MiB. fasthttp refuses them from the
// Content-Length (or the chunk size) before reading the body, answers and
// closes; sent through a raw connection that stops there, the answer is
// deterministic. (With a client that keeps writing the body, the close can
// reset the connection before the client reads the 413: see the client
// subtest of TestBadInputBattery.)
func (b *badInput) tooLarge(testing.TB) []badCase {
	chunked := append([]byte("100000\r\n"), bytes.Repeat([]byte("x"), 1<<20)...)
	chunked = append(chunked, "\r\n1\r\n"...)
	var cases []badCase
	for _, c := range []struct {
		name, method, path, authz string
		body                      []byte
		headers                   []string
	}{
		{"create Content-Length 1 MiB + 1", "POST", pathAcmeKeys, bearer(b.mem), nil, []string{"Content-Length: 1048577"}},
		{"create Content-Length 10^12", "POST", pathAcmeKeys, bearer(b.mem), nil, []string{"Content-Length: 1000000000000"}},
		{"access Content-Length 1 MiB + 1", "PUT", pathAcmeAccess, bearer(b.sa), nil, []string{"Content-Length: 1048577"}},
		{"webrtc Content-Length 1 MiB + 1", "PUT", pathWebRTC, bearer(b.sa), nil, []string{"Content-Length: 1048577"}},
		{"create Content-Length 1 MiB + 1 without token", "POST", pathAcmeKeys, "", nil, []string{"Content-Length: 1048577"}},
		{"create Expect 100-continue 1 MiB + 1", "POST", pathAcmeKeys, bearer(b.mem), nil, []string{"Content-Length: 1048577", "Expect: 100-continue"}},
		{"create chunked 1 MiB + 1", "POST", pathAcmeKeys, bearer(b.mem), chunked, []string{"Transfer-Encoding: chunked"}},
	} {
		h := c.method + " " + c.path + " HTTP/1.1\r\nHost: telkeys\r\nContent-Type: application/json\r\n"
		if c.authz != "" {
			h += "Authorization: " + c.authz + "\r\n"
		}
		for _, e := range c.headers {
			h += e + "\r\n"
		}
		h += "\r\n"
		cases = append(cases, badCase{name: c.name, status: 413, code: "body_too_large", method: c.method, path: c.path,
			send: func(t testing.TB) response { return rawHTTP(t, b.s, h, c.body) }})
	}
	return cases
}

// teamIDs: malformed team ids, on every route that has one.
func (b *badInput) teamIDs(testing.TB) []badCase {
	var cases []badCase
	for name, team := range map[string]string{
		"65 characters":   strings.Repeat("a", 65),
		"dot":             "a.b",
		"escaped slash":   "%2F",
		"escaped NUL":     "a%00b",
		"escaped space":   "acme%20",
		"unicode":         "äcme",
		"escaped unicode": "%C3%A4cme",
		"emoji":           "%F0%9F%94%91",
		"percent sign":    "a%25b",
		"plus":            "a+b",
		"colon":           "a:b",
		"tilde":           "a~b",
	} {
		cases = append(cases,
			invalid("create in team "+name, "POST", "/v1/teams/"+team+"/api-keys", bearer(b.mem), keyBody("x")),
			invalid("list team "+name, "GET", "/v1/teams/"+team+"/api-keys", bearer(b.sa), nil),
			invalid("get access team "+name, "GET", "/v1/teams/"+team+"/api-access", bearer(b.sa), nil),
			invalid("put access team "+name, "PUT", "/v1/teams/"+team+"/api-access", bearer(b.sa), []byte(`{`+validAccess+`}`)),
			invalid("delete in team "+name, "DELETE", "/v1/teams/"+team+"/api-keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", bearer(b.sa), nil),
		)
	}
	return cases
}

// keyIDs: malformed key ids are invalid; well-formed ones that are not
// the team's are not found, or forbidden to a member of another team.
func (b *badInput) keyIDs(testing.TB) []badCase {
	var cases []badCase
	for name, id := range map[string]string{
		"not a key":          "not-a-key",
		"prefix only":        "key_",
		"no prefix":          "01ARZ3NDEKTSV4RRFFQ69G5FAV",
		"upper-case prefix":  "KEY_01ARZ3NDEKTSV4RRFFQ69G5FAV",
		"25 characters":      "key_01ARZ3NDEKTSV4RRFFQ69G5FA",
		"27 characters":      "key_01ARZ3NDEKTSV4RRFFQ69G5FAVX",
		"ULID overflow":      "key_81ARZ3NDEKTSV4RRFFQ69G5FAV",
		"invalid letter U":   "key_01ARZ3NDEKTSV4RRFFQ69G5FAU",
		"escaped slash":      "key_01ARZ3NDEKTSV4RRFFQ69G5F%2F",
		"escaped NUL":        "key_01ARZ3NDEKTSV4RRFFQ69G5FA%00",
		"unicode":            "key_01ARZ3NDEKTSV4RRFFQ69G5FAÄ",
		"very long":          "key_" + strings.Repeat("0", 2000),
		"a plaintext-shaped": "tk_" + strings.Repeat("a", 36),
	} {
		cases = append(cases,
			invalid("delete key id "+name+" as member", "DELETE", pathAcmeKeys+"/"+id, bearer(b.mem), nil),
			invalid("delete key id "+name+" as superadmin", "DELETE", pathAcmeKeys+"/"+id, bearer(b.sa), nil),
		)
	}
	return append(cases,
		badCase{"delete well-formed unknown key id", "DELETE", pathAcmeKeys + "/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", bearer(b.mem), nil, 404, "not_found", nil},
		badCase{"delete well-formed unknown key id as superadmin", "DELETE", pathAcmeKeys + "/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", bearer(b.sa), nil, 404, "not_found", nil},
		badCase{"delete team beta's key under acme", "DELETE", pathAcmeKeys + "/" + b.betaKey, bearer(b.mem), nil, 404, "not_found", nil},
		badCase{"delete team beta's key under acme as superadmin", "DELETE", pathAcmeKeys + "/" + b.betaKey, bearer(b.sa), nil, 404, "not_found", nil},
		badCase{"delete team beta's key in lower case", "DELETE", "/v1/teams/beta/api-keys/" + strings.ToLower(b.betaKey), bearer(b.sa), nil, 404, "not_found", nil},
		badCase{"delete team beta's key as member of acme", "DELETE", "/v1/teams/beta/api-keys/" + b.betaKey, bearer(b.mem), nil, 403, "forbidden", nil},
	)
}

// tokens: every write route and a read route, with every Authorization
// the service must refuse; and a header over fasthttp's 4 KiB read
// buffer, refused before routing.
func (b *badInput) tokens(t testing.TB) []badCase {
	t.Helper()
	var cases []badCase
	for _, tk := range refusedAuthorizations(t, b.s) {
		cases = append(cases,
			badCase{"create with " + tk.name, "POST", pathAcmeKeys, tk.authz, keyBody("x"), 401, "unauthorized", nil},
			badCase{"delete with " + tk.name, "DELETE", "/v1/teams/beta/api-keys/" + b.betaKey, tk.authz, nil, 401, "unauthorized", nil},
			badCase{"put access with " + tk.name, "PUT", pathAcmeAccess, tk.authz, []byte(`{` + validAccess + `}`), 401, "unauthorized", nil},
			badCase{"put webrtc with " + tk.name, "PUT", pathWebRTC, tk.authz, []byte(`{"enabled":false}`), 401, "unauthorized", nil},
			badCase{"list with " + tk.name, "GET", pathAcmeKeys, tk.authz, nil, 401, "unauthorized", nil},
		)
	}
	return append(cases, badCase{"create with a 5000-byte token", "POST", pathAcmeKeys, "Bearer " + strings.Repeat("A", 5000), keyBody("x"), 431, "invalid_request", nil})
}

// refusedAuthorizations are Authorization headers the service must refuse:
// none, other schemes, garbage, and tokens each with one thing wrong. It
// first checks that the same claims, HS256 with the right secret, are
// accepted, so that each refusal is due to the one thing changed.
func refusedAuthorizations(t testing.TB, s *testService) []struct{ name, authz string } {
	t.Helper()
	now := time.Now()
	secret := []byte(testSecret)
	good := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "mallory", "role": "member", "team": "acme", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	if r := s.withT(t).do("GET", pathAcmeKeys, signedTestToken(t, jwt.SigningMethodHS256, secret, good(nil)), nil); r.status != 200 {
		t.Fatalf("control token refused: %d %s", r.status, r.body)
	}
	hs256 := func(extra jwt.MapClaims) string {
		return bearer(signedTestToken(t, jwt.SigningMethodHS256, secret, good(extra)))
	}
	b64 := base64.RawURLEncoding.EncodeToString
	claimsJSON, _ := json.Marshal(good(nil))
	return []struct{ name, authz string }{
		{"missing token", ""},
		{"basic auth", "Basic " + base64.StdEncoding.EncodeToString([]byte("acme:password"))},
		{"bearer without token", "Bearer "},
		{"Bearer without a space or token", "Bearer"},
		{"garbage token", "Bearer garbage"},
		{"three garbage segments", "Bearer a.b.c"},
		{"token of 3.5 KiB", "Bearer " + strings.Repeat("A", 3500)},
		{"expired token", hs256(jwt.MapClaims{"iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()})},
		{"token without exp", hs256(jwt.MapClaims{"exp": nil})},
		{"forged token", bearer(signedTestToken(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef0123456789"), good(nil)))},
		{"alg none", "Bearer " + b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(claimsJSON) + "."},
		{"alg none with signature", "Bearer " + b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(claimsJSON) + "." + b64([]byte("sig"))},
		{"HS384 with the right secret", bearer(signedTestToken(t, jwt.SigningMethodHS384, secret, good(nil)))},
		{"HS512 with the right secret", bearer(signedTestToken(t, jwt.SigningMethodHS512, secret, good(nil)))},
		{"member without team", hs256(jwt.MapClaims{"team": nil})},
		{"member with invalid team", hs256(jwt.MapClaims{"team": "ac.me"})},
		{"unknown role", hs256(jwt.MapClaims{"role": "root", "team": nil})},
		{"superadmin with a team", hs256(jwt.MapClaims{"role": "superadmin"})},
		{"no subject", hs256(jwt.MapClaims{"sub": nil})},
		{"not valid yet", hs256(jwt.MapClaims{"nbf": now.Add(time.Hour).Unix()})},
	}
}

// rawHTTP writes head (request line and headers, CRLF-terminated, blank
// line included) and then body on a fresh TCP connection, and reads the
// final response, skipping 1xx. Write errors after the head are ignored:
// the server may answer and close before reading everything.
func rawHTTP(t testing.TB, s *testService, head string, body []byte) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.HTTPAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatalf("write head: %v", err)
	}
	if len(body) > 0 {
		_, _ = conn.Write(body)
	}
	br := bufio.NewReader(conn)
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatalf("read body: %v", err)
		}
		if res.StatusCode >= 200 {
			return response{status: res.StatusCode, header: res.Header, body: b}
		}
	}
}

// signedTestToken signs arbitrary claims with method and key, bypassing
// auth.Mint's checks, to build tokens the service must refuse.
func signedTestToken(t testing.TB, method jwt.SigningMethod, key []byte, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// lifecycle: expiry, roll, disable and leak reports with bad input.
func (b *badInput) lifecycle(testing.TB) []badCase {
	beta := pathAcmeKeys + "/" + b.betaKey
	roll, patch := beta+"/roll", beta // acme's path, beta's key: never found
	var cases []badCase
	for name, at := range map[string]string{
		"not a time":    `"tomorrow"`,
		"month 13":      `"2027-13-01T00:00:00Z"`,
		"no zone":       `"2027-01-01T00:00:00"`,
		"a number":      `1893456000`,
		"an object":     `{"at":"2027-01-01T00:00:00Z"}`,
		"NUL in it":     `"2027-01-01T00:00:00Z\u0000"`,
		"very long":     `"` + strings.Repeat("9", 5000) + `"`,
		"a date only":   `"2027-01-01"`,
		"bidi override": `"\u202e2027-01-01T00:00:00Z"`,
	} {
		cases = append(cases, invalid("expires_at "+name, "POST", pathAcmeKeys, bearer(b.mem),
			[]byte(`{"name":"x","scopes":["READ_TEAM_APPS"],"expires_at":`+at+`}`)))
	}
	for name, at := range map[string]string{"in the past": "2020-01-01T00:00:00Z", "in 5 years": time.Now().AddDate(5, 0, 0).UTC().Format(time.RFC3339)} {
		cases = append(cases, badCase{"expires_at " + name, "POST", pathAcmeKeys, bearer(b.mem),
			[]byte(`{"name":"x","scopes":["READ_TEAM_APPS"],"expires_at":"` + at + `"}`), 422, "invalid_expires_at", nil})
	}
	for name, body := range map[string]string{
		"empty body":     ``,
		"malformed":      `{"grace_seconds":`,
		"array":          `[3600]`,
		"string grace":   `{"grace_seconds":"3600"}`,
		"float grace":    `{"grace_seconds":1.5}`,
		"huge grace":     `{"grace_seconds":99999999999999999999}`,
		"negative grace": `{"grace_seconds":-1}`,
		"over 30 days":   `{"grace_seconds":2592001}`,
		"unknown field":  `{"grace_seconds":0,"keep":true}`,
		"missing grace":  `{}`,
		"trailing data":  `{"grace_seconds":0} {}`,
	} {
		cases = append(cases, invalid("roll: "+name, "POST", pathAcmeKeys+"/key_01ARZ3NDEKTSV4RRFFQ69G5FAV/roll", bearer(b.mem), []byte(body)))
	}
	for name, body := range map[string]string{
		"empty object":       `{}`,
		"enabled as string":  `{"enabled":"false"}`,
		"enabled as null":    `{"enabled":null}`,
		"name as number":     `{"name":7}`,
		"empty name":         `{"name":"  "}`,
		"name of 65":         `{"name":"` + strings.Repeat("n", 65) + `"}`,
		"control in name":    `{"name":"a\u0007b"}`,
		"bidi override name": `{"name":"a\u202eb"}`,
		"unknown field":      `{"enabled":false,"scopes":["READ_TEAM_APPS"]}`,
		"malformed":          `{"enabled":`,
	} {
		cases = append(cases, invalid("patch: "+name, "PATCH", pathAcmeKeys+"/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", bearer(b.mem), []byte(body)))
	}
	return append(cases,
		badCase{"roll team beta's key under acme", "POST", roll, bearer(b.mem), []byte(`{"grace_seconds":0}`), 404, "not_found", nil},
		badCase{"patch team beta's key under acme", "PATCH", patch, bearer(b.mem), []byte(`{"enabled":false}`), 404, "not_found", nil},
		badCase{"roll team beta's key as member of acme", "POST", "/v1/teams/beta/api-keys/" + b.betaKey + "/roll", bearer(b.mem), []byte(`{"grace_seconds":0}`), 403, "forbidden", nil},
		badCase{"roll with a body over 1 MiB", "POST", roll, bearer(b.mem), bytes.Repeat([]byte("x"), 1<<20+1), 413, "body_too_large", nil},
		badCase{"leak report without leak keys configured", "POST", "/v1/leaks/github", "", []byte(`[{"token":"x"}]`), 404, "not_found", nil},
	)
}
