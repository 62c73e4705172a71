package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/telapi/telkeys/auth"
)

// quotaLimit is the daily limit the quota scenario sets.
const quotaLimit = 2000

// quota measures daily limits across the three telapi-node processes: a
// burst far over the limit, then a steady load under it.
func (b *bench) quota(ctx context.Context) error {
	nodes, err := b.nodeProcesses(ctx)
	if err != nil {
		return err
	}
	// Fresh teams: today's counters start at zero.
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	burstKey, err := b.limitedKey(ctx, "bench-quota-burst-"+suffix, quotaLimit)
	if err != nil {
		return err
	}
	steadyKey, err := b.limitedKey(ctx, "bench-quota-steady-"+suffix, quotaLimit)
	if err != nil {
		return err
	}
	openKey, err := b.limitedKey(ctx, "bench-quota-open-"+suffix, -1)
	if err != nil {
		return err
	}
	// Asking with a limited key would spend its quota. Nodes apply events
	// in order: one that accepts the last key has the others.
	if err := untilAccepted(ctx, nodes, openKey); err != nil {
		return err
	}

	// The burst: every node offered 5x the limit at once, 16 connections
	// each.
	offered := 5 * quotaLimit
	b.progress.printf("quota: burst, each of 3 nodes offered %d requests for a team limited to %d a day", offered, quotaLimit)
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes))
	for _, p := range nodes {
		wg.Go(func() {
			var sent atomic.Int64
			var inner sync.WaitGroup
			for range 16 {
				inner.Go(func() {
					for sent.Add(1) <= int64(offered) && ctx.Err() == nil {
						st, _, err := nodeGet(p, burstKey)
						switch {
						case err != nil:
							errs <- err
							return
						case st == 200:
							admitted.Add(1)
						case st == 429:
							refused.Add(1)
						default:
							errs <- fmt.Errorf("burst: status %d", st)
							return
						}
					}
				})
			}
			inner.Wait()
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	b.progress.printf("quota: burst admitted %d, refused %d", admitted.Load(), refused.Load())
	b.add(Figure{Scenario: "quota", Figure: fmt.Sprintf("burst: admitted of %d offered, limit %d, 3 telapi-node processes (before reservations: 5687, +3687)", 3*offered, quotaLimit),
		Value: float64(admitted.Load()), Unit: "requests"}.goal(fmt.Sprintf("%d–%d", quotaLimit*99/100, quotaLimit), admitted.Load() <= quotaLimit && admitted.Load() >= quotaLimit*99/100))

	// The steady load: 80 % of the limit spread evenly over the duration,
	// each request in turn to the next node; the same load on a team
	// without a limit, interleaved, is the floor.
	n := quotaLimit * 8 / 10
	every := b.cfg.Duration / time.Duration(n)
	b.progress.printf("quota: steady, %d requests over %s (one every %s), interleaved with the same on a team without a limit", n, b.cfg.Duration, every)
	var (
		mu            sync.Mutex // guards the three below
		limited, open latencies
		below         int // 429 answers, all below the limit
	)
	jobs := make(chan int)
	var workers sync.WaitGroup
	for range 8 {
		workers.Go(func() {
			for i := range jobs {
				p := nodes[i%len(nodes)]
				// In turns first, so that neither pays for going first.
				var st, st2 int
				var took, took2 time.Duration
				var err, err2 error
				if i%2 == 0 {
					st, took, err = nodeGet(p, steadyKey)
					st2, took2, err2 = nodeGet(p, openKey)
				} else {
					st2, took2, err2 = nodeGet(p, openKey)
					st, took, err = nodeGet(p, steadyKey)
				}
				mu.Lock()
				switch {
				case err != nil || err2 != nil:
					select {
					case errs <- fmt.Errorf("steady: %w", errorsJoin(err, err2)):
					default:
					}
				case st == 429:
					below++
				case st != 200 || st2 != 200:
					select {
					case errs <- fmt.Errorf("steady: status %d and %d", st, st2):
					default:
					}
				}
				limited, open = append(limited, took), append(open, took2)
				mu.Unlock()
			}
		})
	}
	tick := time.NewTicker(every)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		jobs <- i
		<-tick.C
		if i%100 == 0 {
			b.progress.tick("steady requests", i, n)
		}
	}
	tick.Stop()
	close(jobs)
	workers.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	limited, open = limited.sorted(), open.sorted()
	b.add(Figure{Scenario: "quota", Figure: fmt.Sprintf("steady at 80%% of the limit (%d requests over %s): 429 answers below the limit", n, b.cfg.Duration),
		Value: 100 * float64(below) / float64(n), Unit: "%"}.atMost(0.1))
	floorName := "same load, team without a limit"
	b.add(Figure{Scenario: "quota", Figure: "steady: node GET /api/v1/apps p50, limited team", Value: ms(limited.at(0.5)), Unit: "ms"}.withFloor(floorName, ms(open.at(0.5))))
	b.add(Figure{Scenario: "quota", Figure: "steady: node GET /api/v1/apps p99, limited team", Value: ms(limited.at(0.99)), Unit: "ms"}.withFloor(floorName, ms(open.at(0.99))))
	return nil
}

func errorsJoin(errs ...error) error {
	var s []string
	for _, e := range errs {
		if e != nil {
			s = append(s, e.Error())
		}
	}
	return fmt.Errorf("%s", strings.Join(s, "; "))
}

// limitedKey enables team with a daily limit (-1: none) and returns a new
// key of it.
func (b *bench) limitedKey(ctx context.Context, team string, limit int) (string, error) {
	perDay := "null"
	if limit >= 0 {
		perDay = fmt.Sprint(limit)
	}
	cfg := fmt.Sprintf(`{"enabled":true,"allowed_scopes":[%q],"max_keys":10,"max_requests_per_day":%s}`, benchScope, perDay)
	if st, _, err := b.call(ctx, "PUT", "/v1/teams/"+team+"/api-access", b.token(auth.RoleSuperadmin, ""), cfg); err != nil || st != 200 {
		return "", fmt.Errorf("configure %s: status %d: %v", team, st, err)
	}
	st, body, err := b.call(ctx, "POST", "/v1/teams/"+team+"/api-keys", b.token(auth.RoleMember, team), fmt.Sprintf(`{"name":"quota","scopes":[%q]}`, benchScope))
	if err != nil || st != 201 {
		return "", fmt.Errorf("create a key of %s: status %d: %v", team, st, err)
	}
	var created struct{ Key string }
	if err := json.Unmarshal(body, &created); err != nil {
		return "", err
	}
	return created.Key, nil
}

// call makes one request to telkeys.
func (b *bench) call(ctx context.Context, method, path, tok, body string) (int, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+b.svc.HTTPAddr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	return res.StatusCode, out, err
}

// untilAccepted waits until every node accepts key.
func untilAccepted(ctx context.Context, nodes []*nodeProcess, key string) error {
	for _, p := range nodes {
		for deadline := time.Now().Add(30 * time.Second); ; {
			if st, _, err := nodeGet(p, key); err == nil && st == 200 {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("a telapi-node does not accept a new key")
			}
			<-time.After(10 * time.Millisecond) // pace the polls
		}
	}
	return nil
}

// nodeGet asks a node for GET /api/v1/apps with key.
func nodeGet(p *nodeProcess, key string) (int, time.Duration, error) {
	req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(res)
	req.SetRequestURI(p.base + "/api/v1/apps")
	req.Header.Set("X-API-Key", key)
	t0 := time.Now()
	err := p.client.DoTimeout(req, res, 30*time.Second)
	return res.StatusCode(), time.Since(t0), err
}
