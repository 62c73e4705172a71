package e2e

import (
	"bufio"
	"bytes"
	"context"
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
	"github.com/telapi/telkeys/bus"
)

// sendWithHeaders sends body exactly as given, with exactly the given
// headers (no Authorization unless hdr has one), and returns the response.
func sendWithHeaders(s *testService, method, path string, hdr map[string]string, body []byte) response {
	s.t.Helper()
	r, err := trySendWithHeaders(s, method, path, hdr, body)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// trySendWithHeaders is sendWithHeaders that returns transport errors.
func trySendWithHeaders(s *testService, method, path string, hdr map[string]string, body []byte) (response, error) {
	return sendRequest(http.DefaultClient, method, s.base+path, hdr, body)
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

// eventCount is the number of messages in the event stream.
func eventCount(t testing.TB, s *testService) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.js().Stream(ctx, bus.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// Every kind of malformed, hostile or unauthenticated input gets a 4xx
// problem with the documented code, never a 5xx, never kills the server,
// and never appends anything to the event stream.
func TestBadInputBattery(t *testing.T) {
	s := startService(t)
	s.enableTeam("acme", 5)
	s.enableTeam("beta", 5)
	betaKey := s.createKey("beta", "beta key")["id"].(string)

	sa := s.token(auth.RoleSuperadmin, "")
	mem := s.token(auth.RoleMember, "acme")

	// The name limit counts characters, not bytes: 64 'é' (128 bytes) is
	// accepted. Done before the baseline because it appends an event.
	if k := s.createKey("acme", strings.Repeat("é", 64)); k["name"] != strings.Repeat("é", 64) {
		t.Fatalf("64-rune name stored as %q", k["name"])
	}
	if n := utf8.RuneCountInString(strings.Repeat("é", 64)); n != 64 {
		t.Fatalf("test bug: %d runes", n)
	}

	baseline := eventCount(t, s)
	if baseline != 4 { // two configs, two keys
		t.Fatalf("setup wrote %d events, want 4", baseline)
	}

	// Tokens the service must refuse.
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
	// Control: the same claims, HS256 with the right secret, are accepted,
	// so each refusal below is due to the one thing changed.
	if r := s.do("GET", "/v1/teams/acme/api-keys", signedTestToken(t, jwt.SigningMethodHS256, secret, good(nil)), nil); r.status != 200 {
		t.Fatalf("control token refused: %d %s", r.status, r.body)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	claimsJSON, _ := json.Marshal(good(nil))
	tokens := []struct {
		name, authz string
	}{
		{"missing token", ""},
		{"basic auth", "Basic " + base64.StdEncoding.EncodeToString([]byte("acme:password"))},
		{"bearer without token", "Bearer "},
		{"Bearer without a space or token", "Bearer"},
		{"garbage token", "Bearer garbage"},
		{"three garbage segments", "Bearer a.b.c"},
		{"token of 3.5 KiB", "Bearer " + strings.Repeat("A", 3500)},
		{"expired token", "Bearer " + signedTestToken(t, jwt.SigningMethodHS256, secret, good(jwt.MapClaims{"iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()}))},
		{"token without exp", "Bearer " + signedTestToken(t, jwt.SigningMethodHS256, secret, good(jwt.MapClaims{"exp": nil}))},
		{"forged token", "Bearer " + signedTestToken(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef0123456789"), good(nil))},
		{"alg none", "Bearer " + b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(claimsJSON) + "."},
		{"alg none with signature", "Bearer " + b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(claimsJSON) + "." + b64([]byte("sig"))},
		{"HS384 with the right secret", "Bearer " + signedTestToken(t, jwt.SigningMethodHS384, secret, good(nil))},
		{"HS512 with the right secret", "Bearer " + signedTestToken(t, jwt.SigningMethodHS512, secret, good(nil))},
		{"member without team", "Bearer " + signedTestToken(t, jwt.SigningMethodHS256, secret, good(jwt.MapClaims{"team": nil}))},
		{"member with invalid team", "Bearer " + signedTestToken(t, jwt.SigningMethodHS256, secret, good(jwt.MapClaims{"team": "ac.me"}))},
		{"unknown role", "Bearer " + signedTestToken(t, jwt.SigningMethodHS256, secret, good(jwt.MapClaims{"role": "root", "team": nil}))},
		{"superadmin with a team", "Bearer " + signedTestToken(t, jwt.SigningMethodHS256, secret, good(jwt.MapClaims{"role": "superadmin"}))},
		{"no subject", "Bearer " + signedTestToken(t, jwt.SigningMethodHS256, secret, good(jwt.MapClaims{"sub": nil}))},
		{"not valid yet", "Bearer " + signedTestToken(t, jwt.SigningMethodHS256, secret, good(jwt.MapClaims{"nbf": now.Add(time.Hour).Unix()}))},
	}

	type tc struct {
		name         string
		method, path string
		authz        string // full Authorization header value; "" sends none
		body         []byte // nil sends none
		status       int
		code         string
		send         func(testing.TB) response // if set, sends the request instead
	}
	bearer := func(tok string) string { return "Bearer " + tok }
	raw := func(s string) []byte { return []byte(s) }
	js := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	keyBody := func(name string) []byte {
		return js(map[string]any{"name": name, "scopes": []string{"READ_TEAM_APPS"}})
	}
	const create = "/v1/teams/acme/api-keys"
	const access = "/v1/teams/acme/api-access"
	const webrtc = "/v1/platform/flags/webrtc"
	validAccess := `"enabled":true,"allowed_scopes":["READ_TEAM_APPS"],"max_keys":5`

	var cases []tc
	bad := func(name, method, path, authz string, body []byte) {
		cases = append(cases, tc{name: name, method: method, path: path, authz: authz, body: body, status: 400, code: "invalid_request"})
	}

	// Malformed JSON, on every route that takes a body.
	for _, route := range []struct{ path, method, tok string }{{create, "POST", mem}, {access, "PUT", sa}, {webrtc, "PUT", sa}} {
		for _, b := range []struct{ name, body string }{
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
			bad(route.method+" "+route.path+" "+b.name, route.method, route.path, bearer(route.tok), raw(b.body))
		}
	}
	// Trailing data after an otherwise valid body.
	bad("create valid object then another", "POST", create, bearer(mem), raw(`{"name":"x","scopes":["READ_TEAM_APPS"]}{}`))
	bad("create valid object then garbage", "POST", create, bearer(mem), raw(`{"name":"x","scopes":["READ_TEAM_APPS"]} garbage`))
	bad("access valid object then another", "PUT", access, bearer(sa), raw(`{`+validAccess+`}{}`))
	bad("webrtc valid object then another", "PUT", webrtc, bearer(sa), raw(`{"enabled":true}{"enabled":false}`))

	// Wrong types and missing fields.
	for name, body := range map[string]string{
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
	} {
		bad("create "+name, "POST", create, bearer(mem), raw(body))
	}
	for name, body := range map[string]string{
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
	} {
		bad("access "+name, "PUT", access, bearer(sa), raw(body))
	}
	for name, body := range map[string]string{
		"enabled as string": `{"enabled":"yes"}`,
		"enabled as number": `{"enabled":1}`,
		"enabled null":      `{"enabled":null}`,
		"enabled missing":   `{}`,
	} {
		bad("webrtc "+name, "PUT", webrtc, bearer(sa), raw(body))
	}

	// Unknown fields.
	bad("create unknown field", "POST", create, bearer(mem), raw(`{"name":"x","scopes":["READ_TEAM_APPS"],"extra":1}`))
	bad("create unknown field id", "POST", create, bearer(mem), raw(`{"id":"key_01ARZ3NDEKTSV4RRFFQ69G5FAV","name":"x","scopes":["READ_TEAM_APPS"]}`))
	bad("create unknown field key", "POST", create, bearer(mem), raw(`{"name":"x","scopes":["READ_TEAM_APPS"],"key":"tk_chosen"}`))
	bad("access unknown field", "PUT", access, bearer(sa), raw(`{`+validAccess+`,"extra":true}`))
	bad("access unknown field team", "PUT", access, bearer(sa), raw(`{`+validAccess+`,"team":"beta"}`))
	bad("webrtc unknown field", "PUT", webrtc, bearer(sa), raw(`{"enabled":true,"flag":"other"}`))

	// Names.
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
		bad("create name "+name, "POST", create, bearer(mem), keyBody(n))
	}
	// Invalid UTF-8 sent raw, and lone surrogates as JSON escapes: Go's
	// decoder silently turns both into U+FFFD.
	bad("create name invalid UTF-8 byte", "POST", create, bearer(mem), raw("{\"name\":\"a\xffb\",\"scopes\":[\"READ_TEAM_APPS\"]}"))
	bad("create name truncated UTF-8 sequence", "POST", create, bearer(mem), raw("{\"name\":\"a\xc3\",\"scopes\":[\"READ_TEAM_APPS\"]}"))
	bad("create name overlong UTF-8 slash", "POST", create, bearer(mem), raw("{\"name\":\"a\xc0\xafb\",\"scopes\":[\"READ_TEAM_APPS\"]}"))
	bad("create name UTF-8 encoded surrogate", "POST", create, bearer(mem), raw("{\"name\":\"a\xed\xa0\x80b\",\"scopes\":[\"READ_TEAM_APPS\"]}"))
	bad("create invalid UTF-8 in a scope", "POST", create, bearer(mem), raw("{\"name\":\"x\",\"scopes\":[\"READ_TEAM_APPS\xff\"]}"))
	bad("webrtc invalid UTF-8 in a field name", "PUT", webrtc, bearer(sa), raw("{\"enabled\":true,\"\xff\":1}"))
	bad("create invalid UTF-8 outside strings", "POST", create, bearer(mem), raw("{\"name\":\"a\",\"scopes\":[\"READ_TEAM_APPS\"]}\xff"))
	bad("create name lone high surrogate escape", "POST", create, bearer(mem), raw(`{"name":"a\ud800b","scopes":["READ_TEAM_APPS"]}`))
	bad("create name lone low surrogate escape", "POST", create, bearer(mem), raw(`{"name":"a\udc00b","scopes":["READ_TEAM_APPS"]}`))
	bad("create name reversed surrogate pair", "POST", create, bearer(mem), raw(`{"name":"\udc00\ud800","scopes":["READ_TEAM_APPS"]}`))
	bad("create name NUL escape", "POST", create, bearer(mem), raw(`{"name":"a\u0000b","scopes":["READ_TEAM_APPS"]}`))

	// Scopes.
	bad("create duplicate scopes", "POST", create, bearer(mem), raw(`{"name":"x","scopes":["READ_TEAM_APPS","READ_TEAM_APPS"]}`))
	bad("create empty scopes", "POST", create, bearer(mem), raw(`{"name":"x","scopes":[]}`))
	for name, body := range map[string]string{
		"unknown scope":            `{"name":"x","scopes":["ADMIN"]}`,
		"lower-case scope":         `{"name":"x","scopes":["read_team_apps"]}`,
		"empty scope":              `{"name":"x","scopes":[""]}`,
		"null scope":               `{"name":"x","scopes":[null]}`,
		"known and unknown scopes": `{"name":"x","scopes":["READ_TEAM_APPS","ADMIN"]}`,
	} {
		cases = append(cases, tc{"create " + name, "POST", create, bearer(mem), raw(body), 422, "scope_not_allowed", nil})
	}

	// Bodies over 1 MiB. fasthttp refuses them from the Content-Length (or
	// the chunk size) before reading the body, answers and closes; sent
	// through a raw connection that stops there, the answer is
	// deterministic. (With a client that keeps writing the body, the
	// close can reset the connection before the client reads the 413: see
	// the client-level check after the table.)
	head := func(method, path, authz string, extra ...string) string {
		h := method + " " + path + " HTTP/1.1\r\nHost: telkeys\r\nContent-Type: application/json\r\n"
		if authz != "" {
			h += "Authorization: " + authz + "\r\n"
		}
		for _, e := range extra {
			h += e + "\r\n"
		}
		return h + "\r\n"
	}
	tooLarge := func(name, method, path, authz string, body []byte, extra ...string) {
		h := head(method, path, authz, extra...)
		cases = append(cases, tc{name: name, status: 413, code: "body_too_large", method: method, path: path,
			send: func(t testing.TB) response { return rawHTTP(t, s, h, body) }})
	}
	tooLarge("create Content-Length 1 MiB + 1", "POST", create, bearer(mem), nil, "Content-Length: 1048577")
	tooLarge("create Content-Length 10^12", "POST", create, bearer(mem), nil, "Content-Length: 1000000000000")
	tooLarge("access Content-Length 1 MiB + 1", "PUT", access, bearer(sa), nil, "Content-Length: 1048577")
	tooLarge("webrtc Content-Length 1 MiB + 1", "PUT", webrtc, bearer(sa), nil, "Content-Length: 1048577")
	tooLarge("create Content-Length 1 MiB + 1 without token", "POST", create, "", nil, "Content-Length: 1048577")
	tooLarge("create Expect 100-continue 1 MiB + 1", "POST", create, bearer(mem), nil, "Content-Length: 1048577", "Expect: 100-continue")
	chunked := append([]byte("100000\r\n"), bytes.Repeat([]byte("x"), 1<<20)...)
	chunked = append(chunked, "\r\n1\r\n"...)
	tooLarge("create chunked 1 MiB + 1", "POST", create, bearer(mem), chunked, "Transfer-Encoding: chunked")

	// Team ids in the path.
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
		bad("create in team "+name, "POST", "/v1/teams/"+team+"/api-keys", bearer(mem), keyBody("x"))
		bad("list team "+name, "GET", "/v1/teams/"+team+"/api-keys", bearer(sa), nil)
		bad("get access team "+name, "GET", "/v1/teams/"+team+"/api-access", bearer(sa), nil)
		bad("put access team "+name, "PUT", "/v1/teams/"+team+"/api-access", bearer(sa), raw(`{`+validAccess+`}`))
		bad("delete in team "+name, "DELETE", "/v1/teams/"+team+"/api-keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", bearer(sa), nil)
	}

	// Key ids in the path.
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
		bad("delete key id "+name+" as member", "DELETE", "/v1/teams/acme/api-keys/"+id, bearer(mem), nil)
		bad("delete key id "+name+" as superadmin", "DELETE", "/v1/teams/acme/api-keys/"+id, bearer(sa), nil)
	}
	cases = append(cases,
		tc{"delete well-formed unknown key id", "DELETE", "/v1/teams/acme/api-keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", bearer(mem), nil, 404, "not_found", nil},
		tc{"delete well-formed unknown key id as superadmin", "DELETE", "/v1/teams/acme/api-keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", bearer(sa), nil, 404, "not_found", nil},
		tc{"delete team beta's key under acme", "DELETE", "/v1/teams/acme/api-keys/" + betaKey, bearer(mem), nil, 404, "not_found", nil},
		tc{"delete team beta's key under acme as superadmin", "DELETE", "/v1/teams/acme/api-keys/" + betaKey, bearer(sa), nil, 404, "not_found", nil},
		tc{"delete team beta's key in lower case", "DELETE", "/v1/teams/beta/api-keys/" + strings.ToLower(betaKey), bearer(sa), nil, 404, "not_found", nil},
		tc{"delete team beta's key as member of acme", "DELETE", "/v1/teams/beta/api-keys/" + betaKey, bearer(mem), nil, 403, "forbidden", nil},
	)

	// Authentication: every write route and a read route, with every bad token.
	for _, tk := range tokens {
		cases = append(cases,
			tc{"create with " + tk.name, "POST", create, tk.authz, keyBody("x"), 401, "unauthorized", nil},
			tc{"delete with " + tk.name, "DELETE", "/v1/teams/beta/api-keys/" + betaKey, tk.authz, nil, 401, "unauthorized", nil},
			tc{"put access with " + tk.name, "PUT", access, tk.authz, raw(`{` + validAccess + `}`), 401, "unauthorized", nil},
			tc{"put webrtc with " + tk.name, "PUT", webrtc, tk.authz, raw(`{"enabled":false}`), 401, "unauthorized", nil},
			tc{"list with " + tk.name, "GET", create, tk.authz, nil, 401, "unauthorized", nil},
		)
	}

	// Headers over fasthttp's 4 KiB read buffer are refused before routing.
	cases = append(cases, tc{"create with a 5000-byte token", "POST", create, "Bearer " + strings.Repeat("A", 5000), keyBody("x"), 431, "invalid_request", nil})

	worst := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hdr := map[string]string{}
			if c.authz != "" {
				hdr["Authorization"] = c.authz
			}
			var r response
			if c.send != nil {
				r = c.send(t)
			} else {
				r = sendWithHeaders(s, c.method, c.path, hdr, c.body)
			}
			worst = max(worst, r.status)
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
		})
	}
	// A real client that writes the whole oversized body gets the 413
	// problem every time: the server drains the unread body before closing
	// (api.Linger) instead of resetting the connection.
	for range 10 {
		r, err := trySendWithHeaders(s, "POST", create, map[string]string{"Authorization": bearer(mem)}, bytes.Repeat([]byte("x"), 1<<20+1))
		if err != nil {
			t.Fatalf("oversized body through a client: %v", err)
		}
		worst = max(worst, r.status)
		expectProblem(t, r, 413, "body_too_large")
	}
	if h := s.do("GET", "/healthz", "", nil); h.status != 200 {
		t.Fatalf("unhealthy after oversized bodies: %d", h.status)
	}

	if worst >= 500 {
		t.Errorf("some response had status %d", worst)
	}
	t.Logf("%d bad requests, all answered with a 4xx problem", len(cases))

	if got := eventCount(t, s); got != baseline {
		t.Fatalf("the event stream holds %d events after the battery, want %d: a bad request was written", got, baseline)
	}
	// The service still works.
	s.createKey("acme", "still works")
	if got := eventCount(t, s); got != baseline+1 {
		t.Fatalf("events %d after one more create, want %d", got, baseline+1)
	}
}
