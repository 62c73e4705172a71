package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/node"
	"github.com/telapi/telkeys/service"
)

// browserFor starts a headless Chromium (Debian's package) or skips, saying
// why. `.ci/run` installs it, so CI always runs these tests.
func browserFor(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("SKIPPED, NOT PASSED: chromium is not installed (apt-get install chromium); the browser tests did not run")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	return alloc
}

// page is one browser tab: its own sessionStorage, so its own sign-in.
type page struct {
	t    *testing.T // rebound to each step's subtest
	test string     // the test that opened it, which names its screenshots
	ctx  context.Context
}

func newPage(t *testing.T, alloc context.Context) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	ctx, cancel2 := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel2)
	return &page{t: t, test: t.Name(), ctx: ctx}
}

func (p *page) fail(what string, err error) {
	p.t.Helper()
	p.shot("failed")
	p.t.Fatalf("%s: %v", what, err)
}

func (p *page) open(url string) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, chromedp.Navigate(url)); err != nil {
		p.fail("open "+url, err)
	}
}

// js evaluates an expression (awaiting a promise) and decodes its value.
func (p *page) js(expr string, into any) {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[json.RawMessage](expr, func(e *cdpruntime.EvaluateParams) { await := true; e.AwaitPromise = &await }))
	if err != nil {
		p.fail(expr, err)
	}
	if into != nil {
		if err := json.Unmarshal(v, into); err != nil {
			p.fail(expr, err)
		}
	}
}

// until polls a JS condition.
func (p *page) until(what, cond string) {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ok bool
		v, err := chromedp.Run(p.ctx, chromedp.Evaluate[json.RawMessage]("!!("+cond+")"))
		if err == nil && json.Unmarshal(v, &ok) == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			p.fail("waiting for "+what, fmt.Errorf("%s is still false (%v)", cond, err))
		}
		select {
		case <-p.ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *page) click(sel string) {
	p.t.Helper()
	p.until(sel+" clickable", fmt.Sprintf("(e => e && !e.disabled && e.offsetParent !== null)(document.querySelector(%q))", sel))
	p.js(fmt.Sprintf("document.querySelector(%q).click(), true", sel), nil)
}

func (p *page) set(sel, value string) {
	p.t.Helper()
	p.until(sel, fmt.Sprintf("document.querySelector(%q)", sel))
	p.js(fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q; e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); return true })()`, sel, value), nil)
}

func (p *page) text(sel string) string {
	p.t.Helper()
	var s string
	p.js(fmt.Sprintf("(document.querySelector(%q) || {}).textContent || ''", sel), &s)
	return s
}

func (p *page) html() string {
	p.t.Helper()
	var s string
	p.js("document.documentElement.outerHTML", &s)
	return s
}

// shot saves a screenshot under test-output/ at the repository root.
func (p *page) shot(name string) []byte {
	png, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return nil
	}
	dir := filepath.Join("..", "test-output")
	_ = os.MkdirAll(dir, 0o755)
	file := filepath.Join(dir, strings.ReplaceAll(p.test, "/", "_")+"-"+name+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
	}
	return png
}

func (p *page) devSignIn(role, team string) {
	p.t.Helper()
	p.until("dev sign-in form", "document.querySelector('#dev-submit') && document.querySelector('#dev-submit').offsetParent")
	p.set("#dev-role", role)
	p.set("#dev-team", team)
	p.click("#dev-submit")
	p.until("signed in", "(e => e && e.offsetParent !== null)(document.querySelector('#sign-out'))")
}

// uiFlow is the API keys flow of the web UI, step by step, in two tabs:
// a superadmin's and a member's of acme. Each step starts where the one
// before left the pages.
type uiFlow struct {
	s             *testService
	admin, member *page
	secret        string // the first key's plaintext, as shown once
	masked        string // and as listed
	rolled        string // worker's key after the roll, as listed
	leaks         *leakSigner
}

func TestBrowserAPIKeysFlow(t *testing.T) {
	alloc := browserFor(t)
	// Leak reports come signed by a key of our own in GitHub's place.
	leaks := newLeakSigner(t)
	s := startService(t, func(c *service.Config) { c.DevLogin, c.LeakReportKeys = true, leaks.file })
	f := &uiFlow{s: s, admin: newPage(t, alloc), member: newPage(t, alloc), leaks: leaks}
	for _, step := range []struct {
		name string
		run  func(*uiFlow, *testing.T)
	}{
		{"a superadmin enables a team", (*uiFlow).adminEnablesTeam},
		{"a member sees the tab and the stats", (*uiFlow).memberSeesTab},
		{"the secret is shown once and copied", (*uiFlow).secretShownOnce},
		{"the table shows the key masked", (*uiFlow).keyListedMasked},
		{"Create is disabled at max keys", (*uiFlow).atMaxKeys},
		{"a delete with confirmation", (*uiFlow).deleteWithConfirmation},
		{"a roll with a grace period", (*uiFlow).rollWithGrace},
		{"a key disabled and enabled again", (*uiFlow).disableAndEnable},
		{"an expired key can only be deleted", (*uiFlow).expiredKey},
		{"a leaked key is named in a banner", (*uiFlow).leakBanner},
		{"a superadmin disables the team", (*uiFlow).adminDisablesTeam},
		{"a superadmin sees no TelAPI node yet", (*uiFlow).adminSeesNoNodes},
		{"a superadmin sees a node that reported", (*uiFlow).adminSeesNode},
	} {
		ok := t.Run(step.name, func(t *testing.T) {
			f.admin.t, f.member.t = t, t
			step.run(f, t)
		})
		if !ok {
			return // the next steps start from where this one failed
		}
	}
}

func visible(sel string) string {
	return fmt.Sprintf("document.querySelector(%q) && document.querySelector(%q).offsetParent !== null", sel, sel)
}

func dialogOpen(sel string) string {
	return fmt.Sprintf("document.querySelector(%q) && document.querySelector(%q).open", sel, sel)
}

// adminEnablesTeam: 2 allowed scopes, max keys 2 and a daily limit.
func (f *uiFlow) adminEnablesTeam(t *testing.T) {
	admin := f.admin
	admin.open(f.s.base)
	admin.devSignIn("superadmin", "")
	// A superadmin lands on the overview, a page of its own, not on Teams.
	admin.until("overview", visible("#panel-overview")+" && !("+visible("#panel-admin-teams")+") && document.querySelector('#ov-teams .stat-value').textContent.includes('0 of 0 teams')")
	admin.shot("0-admin-overview")
	admin.click("#tab-admin-teams")
	admin.set("#new-team-id", "acme")
	admin.click("#new-team-submit")
	admin.until("team dialog", dialogOpen("#team-dialog"))
	admin.js(`(() => {
		const d = document.querySelector('#team-dialog');
		d.querySelector('#team-enabled').checked = true;
		for (const c of d.querySelectorAll('input[name=team-scope]')) c.checked = ['CREATE_CALL_TOKEN','READ_TEAM_APPS'].includes(c.value);
		return true })()`, nil)
	admin.set("#team-max-keys", "2")
	admin.set("#team-max-requests", "1000")
	admin.click("#team-save")
	admin.until("acme listed", "document.querySelector('#teams-table') && document.querySelector('#teams-table').textContent.includes('acme')")
	// Saved, the id box is empty again, and not marked invalid for it.
	admin.until("the team id box emptied, not marked invalid", "document.querySelector('#new-team-id').value === '' && !document.querySelector('#new-team-id').matches(':user-invalid')")
	admin.shot("1-admin-enabled-acme")
}

func (f *uiFlow) memberSeesTab(t *testing.T) {
	member := f.member
	member.open(f.s.base)
	member.devSignIn("member", "acme")
	member.until("stats", "document.querySelector('#stat-keys') && document.querySelector('#stat-keys').textContent.includes('0 / 2')")
	if req, sc := member.text("#stat-requests"), member.text("#stat-scopes"); !strings.Contains(req, "1000") ||
		!strings.Contains(sc, "CREATE_CALL_TOKEN") || !strings.Contains(sc, "READ_TEAM_APPS") || strings.Contains(sc, "READ_CALL_TOKEN") {
		t.Fatalf("stats: requests %q, scopes %q", req, sc)
	}
	member.shot("2-member-tab")
}

// createKey creates a key through the create dialog, offered the team's
// two scopes, and returns the secret the next dialog shows.
func (f *uiFlow) createKey(t *testing.T, name, scope string) string {
	t.Helper()
	member := f.member
	member.click("#create-key")
	member.until("create dialog", dialogOpen("#create-dialog"))
	var boxes []string
	member.js(`[...document.querySelectorAll('#create-dialog input[name=scope]')].map(c => c.value)`, &boxes)
	if len(boxes) != 2 {
		t.Fatalf("scope choices %v, want the 2 available", boxes)
	}
	member.set("#key-name", name)
	member.js(fmt.Sprintf(`document.querySelector('input[name=scope][value=%s]').checked = true`, scope), nil)
	member.click("#create-submit")
	member.until("secret dialog", dialogOpen("#secret-dialog"))
	var secret string
	member.js(`(() => { const e = document.querySelector('#secret-value'); return e.value || e.textContent })()`, &secret)
	return strings.TrimSpace(secret)
}

// secretShownOnce: a member creates a key; the secret is shown once and
// Copy puts it on the clipboard.
func (f *uiFlow) secretShownOnce(t *testing.T) {
	member := f.member
	f.secret = f.createKey(t, "backend", "READ_TEAM_APPS")
	if !strings.HasPrefix(f.secret, "tk_") {
		t.Fatalf("secret shown: %q", f.secret)
	}
	member.shot("3-secret-shown-once")
	// Headless Chromium has no clipboard to read back: record what the page
	// hands to the Clipboard API instead.
	member.js(`(() => { navigator.clipboard.writeText = async t => { window.__copied = t }; return true })()`, nil)
	member.click("#copy-secret")
	member.until("copied", "document.querySelector('#copy-status').textContent.includes('Copied')")
	var copied string
	member.js(`window.__copied`, &copied)
	member.js(`(() => { delete window.__copied; return true })()`, nil)
	if copied != f.secret {
		t.Fatalf("clipboard holds %q, want the key", copied)
	}
}

// keyListedMasked: after the dialog closes, the masked key and the chips
// in the table, and the plaintext nowhere in the page.
func (f *uiFlow) keyListedMasked(t *testing.T) {
	member := f.member
	f.masked = "tk_…" + f.secret[len(f.secret)-4:]
	member.click("#secret-close")
	member.until("masked key listed", fmt.Sprintf("!document.querySelector('#secret-dialog').open && document.querySelector('#keys-table').textContent.includes(%q)", f.masked))
	if row := member.text("#keys-table tbody tr"); !strings.Contains(row, "READ_TEAM_APPS") || !strings.Contains(row, "backend") || !strings.Contains(row, "never") {
		t.Fatalf("row %q", row)
	}
	// Dates name their time zone (the test browser runs in UTC).
	if created := member.text("#keys-table tbody tr time"); !strings.Contains(created, "UTC") {
		t.Fatalf("created %q names no time zone", created)
	}
	// A member has one page: no tab bar.
	member.until("no tab bar for one page", "document.querySelector('#tabs').hidden")
	if h := member.html(); strings.Contains(h, f.secret) || strings.Contains(h, f.secret[3:20]) {
		t.Fatal("the plaintext key is still in the page after its dialog closed")
	}
	member.shot("4-masked-in-table")
}

// atMaxKeys: a second create brings the count to 2/2, and Create is
// disabled, saying why.
func (f *uiFlow) atMaxKeys(t *testing.T) {
	member := f.member
	f.createKey(t, "worker", "CREATE_CALL_TOKEN")
	member.click("#secret-close")
	member.until("2 / 2", "document.querySelector('#stat-keys').textContent.includes('2 / 2')")
	member.until("create disabled", "document.querySelector('#create-key').disabled")
	if reason := member.text("#create-disabled-reason"); !strings.Contains(reason, "2") {
		t.Fatalf("reason %q", reason)
	}
	member.shot("5-at-max-keys")
}

func (f *uiFlow) deleteWithConfirmation(t *testing.T) {
	member := f.member
	member.click("#keys-table button[data-delete]")
	member.until("confirm dialog", dialogOpen("#confirm-dialog"))
	member.click("#confirm-delete")
	member.until("row removed", "document.querySelectorAll('#keys-table tbody tr').length === 1 && document.querySelector('#stat-keys').textContent.includes('1 / 2')")
	member.shot("6-after-delete")
}

// uiKeyRow is a key's row as the test reads it.
type uiKeyRow struct {
	Name    string   `json:"name"`
	Masked  string   `json:"masked"`
	Tags    []string `json:"tags"`
	Expires string   `json:"expires"`
	Title   string   `json:"title"` // the absolute expiry, on hover
	Actions []string `json:"actions"`
}

const uiKeyRowsJS = `[...document.querySelectorAll('#keys-table tbody tr')].map(r => ({
	name: r.cells[0].firstChild.textContent,
	masked: r.querySelector('code')?.textContent ?? '',
	tags: [...r.querySelectorAll('.tag')].map(t => t.textContent),
	expires: r.cells[4]?.textContent ?? '',
	title: r.cells[4]?.querySelector('time')?.title ?? '',
	actions: [...r.querySelectorAll('.cell-actions button')].map(b => b.textContent),
}))`

// rows returns the keys table's rows by masked key.
func (p *page) rows() map[string]uiKeyRow {
	p.t.Helper()
	var list []uiKeyRow
	p.js(uiKeyRowsJS, &list)
	rows := map[string]uiKeyRow{}
	for _, r := range list {
		rows[r.Masked] = r
	}
	return rows
}

// rowJS is a JS expression for the row of the key listed as masked.
func uiRowJS(masked string) string {
	return fmt.Sprintf("[...document.querySelectorAll('#keys-table tbody tr')].find(r => r.querySelector('code')?.textContent === %q)", masked)
}

// rollWithGrace: worker is rolled with a grace period of 1 hour; the new
// secret is shown in the create's secret dialog, and the old key stays
// listed, expiring in 1 h, with no Roll of its own. The pair counts as one.
func (f *uiFlow) rollWithGrace(t *testing.T) {
	member := f.member
	old := member.rows()
	if len(old) != 1 {
		t.Fatalf("rows before the roll: %+v", old)
	}
	var worker uiKeyRow
	for _, r := range old {
		worker = r
	}
	member.click("#keys-table button[data-roll]")
	member.until("roll dialog", dialogOpen("#roll-dialog"))
	var graces []string
	member.js(`[...document.querySelectorAll('#roll-dialog input[name=grace]')].map(c => c.value)`, &graces)
	if strings.Join(graces, ",") != "0,3600,86400,604800" {
		t.Fatalf("grace choices %v", graces)
	}
	member.js(`document.querySelector('#roll-dialog input[name=grace][value="3600"]').checked = true`, nil)
	member.shot("6a-roll-dialog")
	member.click("#roll-submit")
	member.until("secret dialog", dialogOpen("#secret-dialog")+" && !document.querySelector('#roll-dialog').open")
	var secret string
	member.js(`document.querySelector('#secret-value').value`, &secret)
	if !strings.HasPrefix(secret, "tk_") || strings.Contains(worker.Masked, secret[len(secret)-4:]) {
		t.Fatalf("secret after the roll %q (old key %s)", secret, worker.Masked)
	}
	if note := member.text("#secret-note"); !strings.Contains(note, "worker") || !strings.Contains(note, "in 1 hour") {
		t.Fatalf("note %q", note)
	}
	member.shot("6b-rolled-secret")
	member.click("#secret-close")
	f.rolled = "tk_…" + secret[len(secret)-4:]
	member.until("two rows", "document.querySelectorAll('#keys-table tbody tr').length === 2 && "+uiRowJS(f.rolled))
	rows := member.rows()
	o, n := rows[worker.Masked], rows[f.rolled]
	if o.Name != "worker" || o.Expires != "expires in 1 h" || o.Title == "" || !slices.Contains(o.Tags, "replaced") ||
		slices.Contains(o.Actions, "Roll") || !slices.Contains(o.Actions, "Disable") {
		t.Fatalf("old key's row %+v", o)
	}
	if n.Name != "worker" || n.Expires != "never" || len(n.Tags) != 0 || !slices.Equal(n.Actions, []string{"Roll", "Disable", "Delete"}) {
		t.Fatalf("new key's row %+v", n)
	}
	if s := member.text("#stat-keys"); !strings.Contains(s, "1 / 2") {
		t.Fatalf("a rolled pair counts as one: %q", s)
	}
	if strings.Contains(member.html(), secret) {
		t.Fatal("the new plaintext key is still in the page after its dialog closed")
	}
	member.shot("6c-rolled")
}

// disableAndEnable: the new worker key disabled is marked so; enabled
// again, the mark goes.
func (f *uiFlow) disableAndEnable(t *testing.T) {
	member := f.member
	var id string
	member.js(uiRowJS(f.rolled)+".querySelector('[data-toggle]').dataset.toggle", &id)
	toggle := fmt.Sprintf("button[data-toggle=%q]", id)
	member.click(toggle)
	member.until("marked disabled", fmt.Sprintf("(r => r && r.classList.contains('off') && r.querySelector('.tag')?.textContent === 'disabled')(%s)", uiRowJS(f.rolled)))
	if r := member.rows()[f.rolled]; !slices.Equal(r.Actions, []string{"Roll", "Enable", "Delete"}) {
		t.Fatalf("disabled key's row %+v", r)
	}
	member.shot("6d-disabled")
	member.click(toggle)
	member.until("enabled again", fmt.Sprintf("(r => r && !r.classList.contains('off') && !r.querySelector('.tag'))(%s)", uiRowJS(f.rolled)))
	if r := member.rows()[f.rolled]; !slices.Equal(r.Actions, []string{"Roll", "Disable", "Delete"}) {
		t.Fatalf("enabled key's row %+v", r)
	}
}

// expiredKey: a key created (through the API) to expire in 3 seconds is
// listed "expired" once it has, with Delete its only action.
func (f *uiFlow) expiredKey(t *testing.T) {
	s, member := f.s.withT(t), f.member
	tok := s.token(auth.RoleMember, "acme")
	until := time.Now().Add(3 * time.Second).UTC().Format(time.RFC3339Nano)
	r := s.do("POST", "/v1/teams/acme/api-keys", tok, map[string]any{"name": "short-lived", "scopes": []string{"READ_TEAM_APPS"}, "expires_at": until})
	if r.status != 201 {
		t.Fatalf("create a key that expires: %d %s", r.status, r.body)
	}
	masked := r.json(t)["masked"].(string)
	type listed struct {
		Masked  string `json:"masked"`
		Expired bool   `json:"expired"`
	}
	bustest.Eventually(t, 20*time.Second, "the key listed expired", func() bool {
		var list struct{ Keys []listed }
		if err := json.Unmarshal(s.do("GET", "/v1/teams/acme/api-keys", tok, nil).body, &list); err != nil {
			return false
		}
		return slices.ContainsFunc(list.Keys, func(k listed) bool { return k.Masked == masked && k.Expired })
	})
	member.open(f.s.base)
	member.until("the expired key listed", uiRowJS(masked))
	if r := member.rows()[masked]; r.Expires != "expired" || r.Title == "" || !slices.Equal(r.Actions, []string{"Delete"}) {
		t.Fatalf("expired key's row %+v", r)
	}
	if n := member.text("#stat-keys"); !strings.Contains(n, "1 / 2") {
		t.Fatalf("an expired key counts no more: %q", n)
	}
	member.shot("6e-expired")
}

// leakBanner: a key reported leaked by a signed report in GitHub's shape
// is revoked, and the tab names it, its URL (a link, as text) and when.
func (f *uiFlow) leakBanner(t *testing.T) {
	member := f.member
	secret := f.createKey(t, "ci", "CREATE_CALL_TOKEN")
	member.click("#secret-close")
	member.until("2 / 2", "document.querySelector('#stat-keys').textContent.includes('2 / 2')")
	// Markup in the URL must come out as text.
	const url = "https://github.com/octo/repo/blob/main/.env?x=<b>bold</b>"
	body, _ := json.Marshal([]map[string]string{{"token": secret, "type": "telapi_api_key", "url": url, "source": "content"}})
	r := f.s.withT(t).send("POST", "/v1/leaks/github", f.leaks.headers(body), body)
	if r.status != 200 || !strings.Contains(string(r.body), `"label":"true_positive"`) {
		t.Fatalf("leak report: %d %s", r.status, r.body)
	}
	member.open(f.s.base)
	member.until("leak banner", visible("#leak-banner")+" && document.querySelector('#leak-list li')")
	text := member.text("#leak-list li")
	if !strings.HasPrefix(text, `Key "ci" was found in public at `+url+" on ") || !strings.HasSuffix(text, " and was revoked.") {
		t.Fatalf("banner %q", text)
	}
	var link struct {
		Href, Rel, Text string
		Time, Bold      bool
	}
	member.js(`(l => ({href: l.querySelector('a').getAttribute('href'), rel: l.querySelector('a').rel, text: l.querySelector('a').textContent,
		time: !!l.querySelector('time[datetime]'), bold: !!document.querySelector('#leak-banner b')}))(document.querySelector('#leak-list li'))`, &link)
	if link.Href != url || link.Text != url || link.Rel != "noopener noreferrer" || !link.Time || link.Bold {
		t.Fatalf("banner link %+v", link)
	}
	// Revoked, the key is gone from the list and no longer counts.
	member.until("ci gone", "![...document.querySelectorAll('#keys-table tbody th')].some(c => c.firstChild.textContent === 'ci')")
	if s := member.text("#stat-keys"); !strings.Contains(s, "1 / 2") {
		t.Fatalf("after the revocation: %q", s)
	}
	member.shot("6f-leak-banner")
}

// adminDisablesTeam: the member's tab disappears, and with it the keys.
func (f *uiFlow) adminDisablesTeam(t *testing.T) {
	admin, member := f.admin, f.member
	admin.click("button[data-edit=acme]")
	admin.until("team dialog", dialogOpen("#team-dialog"))
	admin.js(`document.querySelector('#team-enabled').checked = false`, nil)
	admin.click("#team-save")
	admin.until("saved", "!document.querySelector('#team-dialog').open")
	member.open(f.s.base)
	member.until("disabled message", visible("#api-keys-disabled"))
	if n := member.text("#api-keys-disabled"); !strings.Contains(n, "Admin settings → Teams") {
		t.Fatalf("the notice names the tab otherwise: %q", n)
	}
	member.until("tab gone", "!("+visible("#tab-api-keys")+")")
	h := member.html()
	if strings.Contains(h, f.masked) || strings.Contains(h, "worker") {
		t.Fatal("keys still shown for a disabled team")
	}
	if strings.Contains(h, f.secret) {
		t.Fatal("the plaintext key is in the page")
	}
	member.shot("7-disabled")
	admin.shot("8-admin")
}

// adminSeesNoNodes: the service has no TelAPI node, so the Nodes panel
// explains that none has reported yet.
func (f *uiFlow) adminSeesNoNodes(t *testing.T) {
	admin := f.admin
	admin.click("#tab-admin-nodes")
	admin.until("nodes panel", visible("#panel-admin-nodes"))
	const empty = "No TelAPI node has reported yet. Nodes report every second."
	admin.until("empty state", fmt.Sprintf("document.querySelector('#nodes-table tbody').textContent.includes(%q)", empty))
	admin.shot("9-admin-no-nodes")
}

// adminSeesNode: a TelAPI node runs against the service's NATS; after a
// Refresh the panel lists it (named after its NATS user and --name),
// current and caught up.
func (f *uiFlow) adminSeesNode(t *testing.T) {
	admin, s := f.admin, f.s
	startNodeInProcess(t, node.Config{NATSURL: s.NATSURL, NATSCreds: s.credsFor(bus.RoleNode),
		EventsPublicKey: eventsKeyFile(t, s.cfg.DataDir), HTTPAddr: "127.0.0.1:0", MaxStaleness: 10 * time.Second, Name: "browser-node"})
	deadline := time.Now().Add(20 * time.Second)
	for {
		admin.click("#nodes-refresh")
		var cells []string
		admin.js(`[...document.querySelectorAll('#nodes-table tbody tr > *')].map(c => c.textContent.trim())`, &cells)
		if len(cells) == 5 && strings.HasSuffix(cells[0], "browser-node") && cells[2] == "0" && cells[4] == "current" {
			break
		}
		if time.Now().After(deadline) {
			admin.fail("the node listed, current with lag 0", fmt.Errorf("row %q", cells))
		}
		<-time.After(200 * time.Millisecond) // pace the polls of a deadline loop
	}
	var badge string
	admin.js(`document.querySelector('#nodes-table tbody .badge').className`, &badge)
	if badge != "badge on" {
		t.Fatalf("state badge class %q, want \"badge on\"", badge)
	}
	admin.shot("10-admin-node-current")
}
