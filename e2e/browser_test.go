package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

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
	t   *testing.T
	ctx context.Context
}

func newPage(t *testing.T, alloc context.Context) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	ctx, cancel2 := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel2)
	return &page{t: t, ctx: ctx}
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
	dir := filepath.Join("..", "..", "test-output")
	_ = os.MkdirAll(dir, 0o755)
	file := filepath.Join(dir, strings.ReplaceAll(p.t.Name(), "/", "_")+"-"+name+".png")
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

func TestBrowserAPIKeysFlow(t *testing.T) {
	alloc := browserFor(t)
	s := startService(t, func(c *service.Config) { c.DevLogin = true })
	visible := func(sel string) string {
		return fmt.Sprintf("document.querySelector(%q) && document.querySelector(%q).offsetParent !== null", sel, sel)
	}
	open := func(sel string) string {
		return fmt.Sprintf("document.querySelector(%q) && document.querySelector(%q).open", sel, sel)
	}

	// 1. A superadmin enables a team with 2 allowed scopes, max keys 2 and a daily limit.
	admin := newPage(t, alloc)
	admin.open(s.base)
	admin.devSignIn("superadmin", "")
	admin.click("#tab-admin-teams")
	admin.set("#new-team-id", "acme")
	admin.click("#new-team-submit")
	admin.until("team dialog", open("#team-dialog"))
	admin.js(`(() => {
		const d = document.querySelector('#team-dialog');
		d.querySelector('#team-enabled').checked = true;
		for (const c of d.querySelectorAll('input[name=team-scope]')) c.checked = ['CREATE_CALL_TOKEN','READ_TEAM_APPS'].includes(c.value);
		return true })()`, nil)
	admin.set("#team-max-keys", "2")
	admin.set("#team-max-requests", "1000")
	admin.click("#team-save")
	admin.until("acme listed", "document.querySelector('#teams-table') && document.querySelector('#teams-table').textContent.includes('acme')")
	admin.shot("1-admin-enabled-acme")

	// 2. A member sees the tab and the stats, creates a key; the secret is
	// shown once and Copy puts it on the clipboard.
	member := newPage(t, alloc)
	member.open(s.base)
	member.devSignIn("member", "acme")
	member.until("stats", "document.querySelector('#stat-keys') && document.querySelector('#stat-keys').textContent.includes('0 / 2')")
	if req, sc := member.text("#stat-requests"), member.text("#stat-scopes"); !strings.Contains(req, "1000") ||
		!strings.Contains(sc, "CREATE_CALL_TOKEN") || !strings.Contains(sc, "READ_TEAM_APPS") || strings.Contains(sc, "READ_CALL_TOKEN") {
		t.Fatalf("stats: requests %q, scopes %q", req, sc)
	}
	member.shot("2-member-tab")

	createKey := func(name, scope string) string {
		member.click("#create-key")
		member.until("create dialog", open("#create-dialog"))
		var boxes []string
		member.js(`[...document.querySelectorAll('#create-dialog input[name=scope]')].map(c => c.value)`, &boxes)
		if len(boxes) != 2 {
			t.Fatalf("scope choices %v, want the 2 available", boxes)
		}
		member.set("#key-name", name)
		member.js(fmt.Sprintf(`document.querySelector('input[name=scope][value=%s]').checked = true`, scope), nil)
		member.click("#create-submit")
		member.until("secret dialog", open("#secret-dialog"))
		var secret string
		member.js(`(() => { const e = document.querySelector('#secret-value'); return e.value || e.textContent })()`, &secret)
		return strings.TrimSpace(secret)
	}
	secret := createKey("backend", "READ_TEAM_APPS")
	if !strings.HasPrefix(secret, "tk_") {
		t.Fatalf("secret shown: %q", secret)
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
	if copied != secret {
		t.Fatalf("clipboard holds %q, want the key", copied)
	}

	// 3. After the dialog closes: the masked key and the chips in the table,
	// and the plaintext nowhere in the page.
	masked := "tk_…" + secret[len(secret)-4:]
	member.click("#secret-close")
	member.until("masked key listed", fmt.Sprintf("!document.querySelector('#secret-dialog').open && document.querySelector('#keys-table').textContent.includes(%q)", masked))
	if row := member.text("#keys-table tbody tr"); !strings.Contains(row, "READ_TEAM_APPS") || !strings.Contains(row, "backend") || !strings.Contains(row, "never") {
		t.Fatalf("row %q", row)
	}
	if h := member.html(); strings.Contains(h, secret) || strings.Contains(h, secret[3:20]) {
		t.Fatal("the plaintext key is still in the page after its dialog closed")
	}
	member.shot("4-masked-in-table")

	// 4. A second create brings the count to 2/2, and Create is disabled.
	createKey("worker", "CREATE_CALL_TOKEN")
	member.click("#secret-close")
	member.until("2 / 2", "document.querySelector('#stat-keys').textContent.includes('2 / 2')")
	member.until("create disabled", "document.querySelector('#create-key').disabled")
	if reason := member.text("#create-disabled-reason"); !strings.Contains(reason, "2") {
		t.Fatalf("reason %q", reason)
	}
	member.shot("5-at-max-keys")

	// 5. A delete with confirmation removes the row.
	member.click("#keys-table button[data-delete]")
	member.until("confirm dialog", open("#confirm-dialog"))
	member.click("#confirm-delete")
	member.until("row removed", "document.querySelectorAll('#keys-table tbody tr').length === 1 && document.querySelector('#stat-keys').textContent.includes('1 / 2')")
	member.shot("6-after-delete")

	// 6. The superadmin disables the team; the member's tab disappears.
	admin.click("button[data-edit=acme]")
	admin.until("team dialog", open("#team-dialog"))
	admin.js(`document.querySelector('#team-enabled').checked = false`, nil)
	admin.click("#team-save")
	admin.until("saved", "!document.querySelector('#team-dialog').open")
	member.open(s.base)
	member.until("disabled message", visible("#api-keys-disabled"))
	member.until("tab gone", "!("+visible("#tab-api-keys")+")")
	h := member.html()
	if strings.Contains(h, masked) || strings.Contains(h, "worker") {
		t.Fatal("keys still shown for a disabled team")
	}
	// 7. The plaintext key is not in the page.
	if strings.Contains(h, secret) {
		t.Fatal("the plaintext key is in the page")
	}
	member.shot("7-disabled")
	admin.shot("8-admin")
}
