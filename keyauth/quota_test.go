package keyauth_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/keyauth"
)

// offer has every node answer requests for key, two at a time each, the
// way an HTTP gate does (VerifyWait), until stop returns true (called by
// one goroutine at a time); it returns how many each node admitted.
func offer(nodes []*keyauth.Validator, key string, stop func(admitted int64) bool) []int64 {
	var total atomic.Int64
	var mu sync.Mutex
	halt := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return stop(total.Load())
	}
	per := make([]atomic.Int64, len(nodes))
	var wg sync.WaitGroup
	for i, v := range nodes {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !halt() {
					if v.VerifyWait(context.Background(), key, apps).Valid() {
						per[i].Add(1)
						total.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	out := make([]int64, len(nodes))
	for i := range per {
		out[i] = per[i].Load()
	}
	return out
}

func sum(xs []int64) (n int64) {
	for _, x := range xs {
		n += x
	}
	return n
}

// forAbout returns a stop function that ends an offer once d has passed.
func forAbout(d time.Duration) func(int64) bool {
	end := time.Now().Add(d)
	return func(int64) bool { return time.Now().After(end) }
}

// Three nodes serving one team admit exactly its daily limit between them
// when demand exceeds it, and nothing more, even once the blocks nodes
// held go back to the counter.
func TestDailyLimitIsExactAcrossNodes(t *testing.T) {
	r := newRig(t)
	nodes := []*keyauth.Validator{r.validator(keyauth.Config{}), r.validator(keyauth.Config{}), r.validator(keyauth.Config{})}
	for _, limit := range []int64{1, 7, 2000} {
		t.Run(strconv.FormatInt(limit, 10), func(t *testing.T) {
			team := "exact" + strconv.FormatInt(limit, 10)
			seq := r.configure(team, true, []string{apps}, &limit)
			k := r.create(team, apps)
			for _, v := range nodes {
				wait(t, v, max(seq, k.Result.Seq))
			}
			// Until the limit is reached (with a deadline), then on for
			// longer than a node keeps an idle block: the blocks given back
			// must not be admitted again.
			deadline := time.Now().Add(20 * time.Second)
			var reached time.Time
			per := offer(nodes, k.Plaintext, func(admitted int64) bool {
				now := time.Now()
				if admitted >= limit && reached.IsZero() {
					reached = now
				}
				return now.After(deadline) || !reached.IsZero() && now.Sub(reached) > 1500*time.Millisecond
			})
			if got := sum(per); got != limit {
				t.Fatalf("admitted %d (per node %v), want exactly the limit %d", got, per, limit)
			}
			t.Logf("limit %d: admitted per node %v", limit, per)
			// Requests Today counts what was admitted, on every node.
			for i, v := range nodes {
				bustest.Eventually(t, 10*time.Second, "requests today on node "+strconv.Itoa(i), func() bool {
					today, l := v.Usage(team)
					return today == limit && l == limit
				})
			}
		})
	}
}

// A limit lowered below what is already admitted today: every request
// after that is refused, on every node.
func TestLoweredLimitBelowAdmitted(t *testing.T) {
	r := newRig(t)
	nodes := []*keyauth.Validator{r.validator(keyauth.Config{}), r.validator(keyauth.Config{}), r.validator(keyauth.Config{})}
	limit := int64(100)
	seq := r.configure("acme", true, []string{apps}, &limit)
	k := r.create("acme", apps)
	for _, v := range nodes {
		wait(t, v, max(seq, k.Result.Seq))
	}
	before := sum(offer(nodes, k.Plaintext, func(n int64) bool { return n >= 60 }))
	lowered := int64(30)
	seq = r.configure("acme", true, []string{apps}, &lowered)
	for _, v := range nodes {
		wait(t, v, seq)
	}
	if after := sum(offer(nodes, k.Plaintext, forAbout(1500*time.Millisecond))); after != 0 {
		t.Fatalf("%d requests admitted after the limit went from %d to %d with %d admitted", after, limit, lowered, before)
	}
	for _, v := range nodes {
		if r := v.VerifyWait(context.Background(), k.Plaintext, apps); r.Code != keyauth.RateLimited || r.Reserving {
			t.Fatalf("after the limit was lowered: %v (reserving %v), want RATE_LIMITED, limit reached", r.Code, r.Reserving)
		}
	}
}

// Midnight UTC in the middle of a burst: each day admits exactly the
// limit, whatever the nodes had reserved for the day before.
func TestDailyLimitAcrossMidnight(t *testing.T) {
	r := newRig(t)
	now := time.Now().UTC()
	clk := newClock(time.Date(now.Year(), now.Month(), now.Day(), 23, 59, 59, 0, time.UTC))
	cfg := keyauth.Config{Now: clk.Now, MaxStaleness: 72 * time.Hour}
	nodes := []*keyauth.Validator{r.validator(cfg), r.validator(cfg), r.validator(cfg)}
	limit := int64(500)
	seq := r.configure("acme", true, []string{apps}, &limit)
	k := r.create("acme", apps)
	for _, v := range nodes {
		wait(t, v, max(seq, k.Result.Seq))
	}
	day1 := clk.Now()
	day2 := day1.Add(time.Second)
	deadline := time.Now().Add(20 * time.Second)
	var reached time.Time
	per := offer(nodes, k.Plaintext, func(admitted int64) bool {
		if admitted >= limit/2 && clk.Now().Before(day2) {
			clk.Set(day2) // midnight, halfway through the first day's limit
		}
		if admitted >= limit/2+limit && reached.IsZero() {
			reached = time.Now()
		}
		return time.Now().After(deadline) || !reached.IsZero() && time.Since(reached) > 1500*time.Millisecond
	})
	for _, v := range nodes {
		v.Close() // flushes the counts
	}
	count := func(day time.Time) int64 {
		m, err := r.H.Usage.GetLastMsgForSubject(context.Background(), bus.UsageSubject("acme", day))
		if err != nil {
			t.Fatalf("usage counter of %s: %v", day.Format("2006-01-02"), err)
		}
		var body struct{ Val string }
		if err := json.Unmarshal(m.Data, &body); err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseInt(body.Val, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	first, second := count(day1), count(day2)
	t.Logf("admitted %d: %d on the first day, %d on the second", sum(per), first, second)
	if first > limit || second != limit || first+second != sum(per) {
		t.Fatalf("admitted %d on the first day and %d on the second (%d answers VALID), want at most %d, then exactly %d", first, second, sum(per), limit, limit)
	}
}
