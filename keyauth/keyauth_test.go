package keyauth_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/internal/coretest"
	"github.com/telapi/telkeys/keyauth"
)

var admin = coretest.Admin

// clock is a settable clock for validators.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)  { c.ns.Store(t.UnixNano()) }

// rig is the core of telkeys (coretest) plus validators on their own
// connections.
type rig struct {
	*coretest.Core
	t testing.TB
}

func newRig(t testing.TB) *rig { return &rig{Core: coretest.Start(t), t: t} }

func (r *rig) validator(cfg keyauth.Config) *keyauth.Validator {
	r.t.Helper()
	nc, _ := r.NS.ConnectAs(r.t, bus.RoleNode)
	return r.validatorOn(nc, cfg)
}

// validatorOn starts a validator on nc; cfg.Keys defaults to the keys
// that trust the core's signer.
func (r *rig) validatorOn(nc *nats.Conn, cfg keyauth.Config) *keyauth.Validator {
	r.t.Helper()
	if cfg.Keys == nil {
		cfg.Keys = r.Keys
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := keyauth.New(ctx, nc, cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(v.Close)
	return v
}

func (r *rig) configure(team string, enabled bool, scopes []string, limit *int64) uint64 {
	r.t.Helper()
	return r.Configure(team, events.AccessConfig{Enabled: enabled, AllowedScopes: scopes, MaxKeys: 100, MaxRequestsPerDay: limit})
}

func (r *rig) create(team string, scopes ...string) commands.CreatedKey {
	r.t.Helper()
	return r.Create(team, scopes...)
}

func (r *rig) flag(on bool) uint64 {
	r.t.Helper()
	res, err := r.Cmds.SetPlatformFlag(context.Background(), admin, events.FlagWebRTC, on)
	if err != nil {
		r.t.Fatal(err)
	}
	return res.Seq
}

func (r *rig) del(team, id string) uint64 {
	r.t.Helper()
	res, err := r.Cmds.DeleteKey(context.Background(), admin, team, id, false)
	if err != nil {
		r.t.Fatal(err)
	}
	return res.Seq
}

func wait(t testing.TB, v *keyauth.Validator, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitApplied(ctx, seq); err != nil {
		t.Fatalf("validator did not reach event %d (at %d): %v", seq, v.Applied(), err)
	}
}

// expect checks what v answers; a request under a daily limit waits for
// the node's reservation, as the HTTP gates do (VerifyWait).
func expect(t *testing.T, v *keyauth.Validator, key, scope string, want keyauth.Code) keyauth.Result {
	t.Helper()
	r := v.VerifyWait(context.Background(), key, scope)
	if r.Code != want {
		t.Fatalf("Verify(%s) = %v, want %v", scope, r.Code, want)
	}
	return r
}

// expectSoon is expect after the clock moved: Verify reads the validator's
// copy of the clock, refreshed every few milliseconds.
func expectSoon(t *testing.T, v *keyauth.Validator, key, scope string, want keyauth.Code) keyauth.Result {
	t.Helper()
	var r keyauth.Result
	bustest.Eventually(t, 5*time.Second, "Verify answers "+want.String(), func() bool {
		r = v.Verify(key, scope)
		return r.Code == want
	})
	return r
}

var (
	apps  = apikey.ScopeReadTeamApps
	calls = apikey.ScopeCreateCallToken
	read  = apikey.ScopeReadCallToken
)

func TestVerifyCodes(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{calls, apps}, nil)
	k := r.create("acme", apps)
	v := r.validator(keyauth.Config{})

	got := expect(t, v, k.Plaintext, apps, keyauth.Valid)
	if got.Team != "acme" || got.KeyID != k.Key.ID || got.Scopes != keyauth.ScopeReadTeamApps || got.Limit != -1 || got.RequestsToday != 1 {
		t.Fatalf("result %+v", got)
	}
	expect(t, v, k.Plaintext, calls, keyauth.InsufficientScope)
	expect(t, v, k.Plaintext, "ADMIN", keyauth.InsufficientScope)
	other, _ := apikey.Generate()
	expect(t, v, other, apps, keyauth.NotFound)
	expect(t, v, k.Plaintext[:len(k.Plaintext)-1]+"x", apps, keyauth.NotFound)
	expect(t, v, "", apps, keyauth.NotFound)
}

// Every kind of change reaches a running validator, and a validator that
// starts later (loading the read models) agrees.
func TestChangesPropagateWithoutRestart(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{calls, apps}, nil)
	k := r.create("acme", apps, calls)
	v := r.validator(keyauth.Config{})
	expect(t, v, k.Plaintext, apps, keyauth.Valid)

	steps := []struct {
		name   string
		change func() uint64
		want   keyauth.Code
		scope  string
	}{
		{"team disabled", func() uint64 { return r.configure("acme", false, []string{calls, apps}, nil) }, keyauth.TeamAPIDisabled, apps},
		{"team enabled again", func() uint64 { return r.configure("acme", true, []string{calls, apps}, nil) }, keyauth.Valid, apps},
		{"scope removed from the team", func() uint64 { return r.configure("acme", true, []string{calls}, nil) }, keyauth.InsufficientScope, apps},
		{"other scope still works", func() uint64 { return 0 }, keyauth.Valid, calls},
		{"webrtc off", func() uint64 { return r.flag(false) }, keyauth.WebRTCDisabled, calls},
		{"webrtc on", func() uint64 { return r.flag(true) }, keyauth.Valid, calls},
		{"key deleted", func() uint64 { return r.del("acme", k.Key.ID) }, keyauth.NotFound, calls},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if seq := s.change(); seq > 0 {
				wait(t, v, seq)
			}
			expect(t, v, k.Plaintext, s.scope, s.want)
			late := r.validator(keyauth.Config{})
			expect(t, late, k.Plaintext, s.scope, s.want)
		})
	}
}

// A verify racing a delete never accepts the key once the delete has been
// applied, whether the validator was running or was loading meanwhile.
func TestVerifyRacingDelete(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{apps}, nil)
	v := r.validator(keyauth.Config{})
	for range 20 {
		k := r.create("acme", apps)
		wait(t, v, k.Result.Seq)
		var stop atomic.Bool
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					v.Verify(k.Plaintext, apps)
				}
			}()
		}
		loading := make(chan *keyauth.Validator, 1)
		creds := bustest.Creds(t, r.NS.Authority, bus.RoleNode)
		go func() {
			nc, err := bus.Dial(bus.ClientConfig{URLs: r.NS.ClientURL(), Creds: creds})
			if err != nil {
				loading <- nil
				return
			}
			lv, err := keyauth.New(context.Background(), nc, keyauth.Config{Keys: r.Keys})
			if err != nil {
				nc.Close()
				loading <- nil
				return
			}
			t.Cleanup(func() { lv.Close(); nc.Close() })
			loading <- lv
		}()
		seq := r.del("acme", k.Key.ID)
		wait(t, v, seq)
		for range 100 {
			if got := v.Verify(k.Plaintext, apps); got.Code != keyauth.NotFound {
				t.Fatalf("deleted key answered %v", got.Code)
			}
		}
		stop.Store(true)
		wg.Wait()
		lv := <-loading
		if lv == nil {
			t.Fatal("validator failed to start")
		}
		wait(t, lv, seq)
		if got := lv.Verify(k.Plaintext, apps); got.Code != keyauth.NotFound {
			t.Fatalf("a validator loading during the delete accepts the key: %v", got.Code)
		}
	}
}

func TestDailyLimit(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{apps}, new(int64(100)))
	k := r.create("acme", apps)
	day := time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC)
	clk := newClock(day)
	v := r.validator(keyauth.Config{Now: clk.Now, UsageFlush: 10 * time.Millisecond, MaxStaleness: 72 * time.Hour})

	t.Run("exactly the limit, under concurrency", func(t *testing.T) {
		var valid, limited atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 40 {
					switch v.VerifyWait(context.Background(), k.Plaintext, apps).Code {
					case keyauth.Valid:
						valid.Add(1)
					case keyauth.RateLimited:
						limited.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if valid.Load() != 100 || limited.Load() != 220 {
			t.Fatalf("%d valid, %d rate limited; want 100 and 220", valid.Load(), limited.Load())
		}
		// The count reaches the stream.
		bustest.Eventually(t, 10*time.Second, "counter at 100", func() bool {
			m, err := r.H.Usage.GetLastMsgForSubject(context.Background(), bus.UsageSubject("acme", day))
			return err == nil && string(m.Data) == `{"val":"100"}`
		})
	})
	t.Run("a failed check is not charged", func(t *testing.T) {
		expect(t, v, k.Plaintext, calls, keyauth.InsufficientScope)
		if today, _ := v.Usage("acme"); today != 100 {
			t.Fatalf("usage %d after a refused verify, want 100", today)
		}
	})
	t.Run("the count resets at UTC midnight", func(t *testing.T) {
		clk.Set(time.Date(2026, 11, 26, 23, 59, 59, 0, time.UTC))
		expect(t, v, k.Plaintext, apps, keyauth.RateLimited)
		clk.Set(time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC))
		got := expectSoon(t, v, k.Plaintext, apps, keyauth.Valid)
		if got.RequestsToday != 1 {
			t.Fatalf("first request of the day counts %d", got.RequestsToday)
		}
	})
	t.Run("lowering the limit takes effect at once", func(t *testing.T) {
		for range 9 {
			expect(t, v, k.Plaintext, apps, keyauth.Valid)
		}
		wait(t, v, r.configure("acme", true, []string{apps}, new(int64(5))))
		expect(t, v, k.Plaintext, apps, keyauth.RateLimited)
		wait(t, v, r.configure("acme", true, []string{apps}, nil))
		expect(t, v, k.Plaintext, apps, keyauth.Valid)
	})
}

func TestStaleness(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{apps}, nil)
	k := r.create("acme", apps)
	start := time.Now()
	clk := newClock(start)
	v := r.validator(keyauth.Config{Now: clk.Now, MaxStaleness: 10 * time.Second})
	open := r.validator(keyauth.Config{Now: clk.Now, MaxStaleness: 10 * time.Second, FailOpen: true})
	expect(t, v, k.Plaintext, apps, keyauth.Valid)

	clk.Set(start.Add(11 * time.Second)) // nothing heard for 11 s
	expectSoon(t, v, k.Plaintext, apps, keyauth.Unavailable)
	expect(t, v, "garbage", apps, keyauth.NotFound) // no lookup needed for that
	expect(t, open, k.Plaintext, apps, keyauth.Valid)

	info, _ := r.H.Events.Info(context.Background())
	if err := r.NC.Publish(bus.HeartbeatSubject, r.Signer.SignHeartbeat(info.State.LastSeq, clk.Now())); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 5*time.Second, "fresh after a heartbeat", func() bool {
		return v.Verify(k.Plaintext, apps).Code == keyauth.Valid
	})
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func TestVerifyDoesNotAllocate(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{apps}, new(int64(1_000_000_000)))
	k := r.create("acme", apps)
	r.configure("open", true, []string{apps}, nil)
	open := r.create("open", apps)
	v := r.validator(keyauth.Config{})
	expect(t, v, k.Plaintext, apps, keyauth.Valid) // the node holds a block
	other, _ := apikey.Generate()
	for name, call := range map[string]func(){
		"valid, limited team (refills included)": func() {
			if v.Verify(k.Plaintext, apps).Valid() == false {
				v.VerifyWait(context.Background(), k.Plaintext, apps) // no block for a moment: not measured
			}
		},
		"valid, unlimited team": func() { v.Verify(open.Plaintext, apps) },
		"scope":                 func() { v.Verify(k.Plaintext, calls) },
		"not found":             func() { v.Verify(other, apps) },
		"malformed":             func() { v.Verify("tk_nope", apps) },
	} {
		if n := testing.AllocsPerRun(1000, call); n != 0 {
			t.Errorf("%s: %v allocations per Verify", name, n)
		}
	}
}

// Random input never panics and is never VALID: only the one real key is.
func FuzzVerify(f *testing.F) {
	r := newRig(f)
	r.configure("acme", true, []string{apps}, nil)
	real := r.create("acme", apps).Plaintext
	v := r.validator(keyauth.Config{})
	other, _ := apikey.Generate()
	for _, s := range []string{"", "tk_", other, real[:len(real)-1], "tk_" + real, real + " ", "\x00\xff", "TK_" + real[3:]} {
		f.Add(s, apps)
	}
	f.Add(other, "")
	f.Fuzz(func(t *testing.T, key, scope string) {
		res := v.Verify(key, scope)
		if res.Valid() && key != real {
			t.Fatalf("Verify(%q, %q) is VALID", key, scope)
		}
	})
}

// BenchmarkQuotaOvershoot3Nodes measures how far three nodes serving one
// team together go past its daily limit: with reservations, never (0).
// "burst" is each node verifying as fast as it can; "paced" is each node at
// about 2000 verifications per second. A node stops after 200 refusals in a
// row.
func BenchmarkQuotaOvershoot3Nodes(b *testing.B) {
	const limit = 2000
	for _, pace := range []time.Duration{0, 500 * time.Microsecond} {
		name := "burst"
		if pace > 0 {
			name = "paced-2k-per-node"
		}
		b.Run(name, func(b *testing.B) {
			r := newRig(b)
			nodes := []*keyauth.Validator{r.validator(keyauth.Config{}), r.validator(keyauth.Config{}), r.validator(keyauth.Config{})}
			var over int64
			for i := range b.N {
				team := "q" + itoa(uint64(i))
				seq := r.configure(team, true, []string{apps}, new(int64(limit)))
				k := r.create(team, apps)
				for _, v := range nodes {
					wait(b, v, max(seq, k.Result.Seq))
				}
				var valid atomic.Int64
				var wg sync.WaitGroup
				for _, v := range nodes {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var tick <-chan time.Time
						if pace > 0 {
							t := time.NewTicker(pace)
							defer t.Stop()
							tick = t.C
						}
						for misses := 0; misses < 200; {
							if tick != nil {
								<-tick
							}
							if v.VerifyWait(context.Background(), k.Plaintext, apps).Valid() {
								valid.Add(1)
								misses = 0
							} else {
								misses++
							}
						}
					}()
				}
				wg.Wait()
				over += valid.Load() - limit
			}
			b.ReportMetric(float64(over)/float64(b.N), "over-limit-of-2000")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// A restarted node starts from today's count, not from zero.
func TestRestartedNodeKeepsTodaysCount(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{apps}, new(int64(10)))
	k := r.create("acme", apps)
	a := r.validator(keyauth.Config{})
	for range 10 {
		expect(t, a, k.Plaintext, apps, keyauth.Valid)
	}
	a.Close() // flushes: the counter holds 10
	b := r.validator(keyauth.Config{})
	got := expect(t, b, k.Plaintext, apps, keyauth.RateLimited)
	if got.RequestsToday != 10 {
		t.Fatalf("restarted node counts %d", got.RequestsToday)
	}
}
