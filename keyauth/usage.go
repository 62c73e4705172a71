package keyauth

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
)

// dayOf is the UTC day number of t: days since 1970-01-01.
func dayOf(t time.Time) int64 { return t.Unix() / 86400 }

func dayTime(day int64) time.Time { return time.Unix(day*86400, 0).UTC() }

// usageCounter is one team's count of admitted requests for the current
// UTC day:
//
//	global   the total the counter stream last reported (every node's
//	         flushed counts, this node's included)
//	inflight this node's requests being flushed right now
//	pending  this node's requests not flushed yet
//
// Their sum is "requests today". The daily limit is not checked against
// it but kept by reservations (quota.go): this count lags other nodes by a
// flush period or so.
type usageCounter struct {
	mu       sync.Mutex
	day      int64
	global   int64
	inflight int64
	pending  int64
	// unreserved counts requests admitted today while the team had no
	// limit: a limit set later in the day counts them too.
	unreserved int64
	// retry is a flush whose outcome is unknown; it is sent again with the
	// same message id, so the stream counts it once.
	retry *flushReq
	// carry are earlier days' unflushed counts, still to be sent (more
	// than one only if flushes failed across several midnights).
	carry []*flushReq
	// seen is the highest total reported while a flush was in flight.
	seen int64
	// nextDay and nextTotal are a total seen for a day this node's clock
	// has not reached yet.
	nextDay, nextTotal int64
	// flushedAt is when the flusher last looked at a team without a
	// limit; only the flusher uses it.
	flushedAt time.Time
}

// unlimitedFlush is how often the counts of teams without a daily limit
// are flushed.
const unlimitedFlush = 5 * time.Second

// lastUsedStep is the precision of last-used times, in seconds: a key's
// time moves, and is written out, at most once a step. Writing it every
// second a key was used made a node under load publish one message per
// active key per second, which cost it a tenth of its requests.
const lastUsedStep = 60

type flushReq struct {
	day   int64
	n     int64
	msgID string
}

// charge counts one admitted request (limited: whether the team has a
// daily limit) and returns the day's total.
func (c *usageCounter) charge(day int64, limited bool) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rollover(day)
	c.pending++
	if !limited {
		c.unreserved++
	}
	return c.global + c.inflight + c.pending
}

// takeUnreserved returns, and forgets, the requests admitted on day while
// the team had no limit.
func (c *usageCounter) takeUnreserved(day int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rollover(day)
	n := c.unreserved
	c.unreserved = 0
	return n
}

func (c *usageCounter) count(day int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if day != c.day {
		return 0
	}
	return c.global + c.inflight + c.pending
}

// rollover starts a new day, keeping the old day's unflushed count to send.
func (c *usageCounter) rollover(day int64) {
	if day <= c.day {
		return
	}
	if c.pending > 0 {
		c.carry = append(c.carry, &flushReq{day: c.day, n: c.pending})
	}
	c.day, c.global, c.inflight, c.pending, c.unreserved, c.seen = day, 0, 0, 0, 0, 0
	if c.nextDay == day {
		c.global = c.nextTotal
	}
}

// observe records a total reported by the counter stream. While this node
// has a flush in flight the report may or may not include it, so it is
// kept aside until the flush lands. A total for a later day than this node's clock
// (another node's clock runs ahead) is kept for when this node gets there.
func (c *usageCounter) observe(today, day, total int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rollover(today)
	switch {
	case day > c.day:
		if day > c.nextDay || total > c.nextTotal {
			c.nextDay, c.nextTotal = day, total
		}
	case day == c.day && c.inflight == 0 && total > c.global:
		c.global = total
	case day == c.day && c.inflight != 0:
		c.seen = max(c.seen, total) // taken once the flush lands
	}
}

// startUsage follows every node's counters and starts the flush loops.
func (v *Validator) startUsage(ctx, runCtx context.Context) error {
	cons, err := v.js.OrderedConsumer(ctx, bus.UsageStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.UsageSubjectPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	if info.NumPending == 0 {
		v.usageLoaded.Do(func() { close(v.usageReady) })
	}
	cc, err := cons.Consume(v.onUsage, jetstream.PullHeartbeat(bus.ConsumerHeartbeat))
	if err != nil {
		return err
	}
	v.stopWith(runCtx, cc)
	// Start from today's counts, not from zero: requests today must not
	// drop when a node restarts.
	select {
	case <-v.usageReady:
	case <-ctx.Done():
		return fmt.Errorf("keyauth: loading usage counters: %w", ctx.Err())
	}
	// Reservations: hear other nodes' (a block given back lets a spent
	// team ask again), and run the refiller.
	qcons, err := v.js.OrderedConsumer(ctx, bus.QuotaStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.QuotaSubjectPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return err
	}
	qcc, err := qcons.Consume(v.onQuota, jetstream.PullHeartbeat(bus.ConsumerHeartbeat))
	if err != nil {
		return err
	}
	v.stopWith(runCtx, qcc)
	bus.Every(runCtx, &v.wg, quotaSweep, v.refillKick, v.runQuota)
	bus.Every(runCtx, &v.wg, v.cfg.UsageFlush, nil, func(ctx context.Context) { v.flushUsage(ctx, false) })
	bus.Every(runCtx, &v.wg, v.cfg.LastUsedFlush, nil, v.flushLastUsed)
	return nil
}

// counterAt reads a counter message on prefix + <team>.<yyyymmdd>: its
// team, UTC day and value {"val":"N"}.
func counterAt(m jetstream.Msg, prefix string) (team string, day, total int64, ok bool) {
	rest := strings.TrimPrefix(m.Subject(), prefix)
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return "", 0, 0, false
	}
	d, err := time.Parse("20060102", rest[i+1:])
	if err != nil {
		return "", 0, 0, false
	}
	total, err = strconv.ParseInt(counterValue(m.Data()), 10, 64)
	if err != nil {
		return "", 0, 0, false
	}
	return rest[:i], dayOf(d), total, true
}

// onQuota hears a team's reservation counter.
func (v *Validator) onQuota(m jetstream.Msg) {
	if name, day, total, ok := counterAt(m, bus.QuotaSubjectPrefix); ok {
		if t := v.st.knownTeam(name); t != nil {
			t.quota.observe(day, total)
		}
	}
}

// onUsage hears a team's count of admitted requests.
func (v *Validator) onUsage(m jetstream.Msg) {
	team, day, total, ok := counterAt(m, bus.UsageSubjectPrefix)
	if !ok {
		return
	}
	v.st.team(team).usage.observe(dayOf(v.cfg.Now()), day, total)
	if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
		v.usageLoaded.Do(func() { close(v.usageReady) })
	}
}

// counterValue reads a counter message's body, {"val":"N"}.
func counterValue(data []byte) string {
	var body struct{ Val string }
	_ = json.Unmarshal(data, &body)
	return body.Val
}

// flushUsage sends each team's unflushed count as one increment. A count
// stays in inflight until the stream acknowledges it; a failed flush is
// sent again with the same message id, so the stream counts it once.
//
// Teams without a daily limit are flushed at most every unlimitedFlush
// (unless all is true): their counts only feed the usage page, and one
// publish per team per UsageFlush made the flusher busy all the time once
// hundreds of teams were in use.
func (v *Validator) flushUsage(ctx context.Context, all bool) {
	now := time.Now()
	var teams []*team
	v.st.eachTeam(func(t *team) {
		if cfg := t.cfg.Load(); !all && (cfg == nil || cfg.limit < 0) {
			if now.Sub(t.usage.flushedAt) < unlimitedFlush {
				return
			}
			t.usage.flushedAt = now
		}
		teams = append(teams, t)
	})
	// A retry or an earlier day's count goes first; then what is pending:
	// up to three rounds, each one pipelined over every team.
	for range 3 {
		var next []*team
		for len(teams) > 0 && ctx.Err() == nil {
			chunk := teams[:min(len(teams), 1000)]
			teams = teams[len(chunk):]
			next = append(next, v.flushRound(ctx, chunk)...)
		}
		if teams = next; len(teams) == 0 {
			return
		}
	}
}

// flushRound sends one increment for each team that has one, all at once,
// and returns the teams whose increment landed (they may have more).
func (v *Validator) flushRound(ctx context.Context, teams []*team) []*team {
	type sent struct {
		t   *team
		req *flushReq
		f   jetstream.PubAckFuture
		err error
	}
	var out []sent
	for _, t := range teams {
		req := t.usage.next()
		if req == nil {
			continue
		}
		if req.msgID == "" {
			req.msgID = v.cfg.Name + "-" + strconv.FormatUint(v.flushSeq.Add(1), 10) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		}
		msg := nats.NewMsg(bus.UsageSubject(t.name, dayTime(req.day)))
		msg.Header.Set("Nats-Incr", "+"+strconv.FormatInt(req.n, 10))
		f, err := v.js.PublishMsgAsync(msg, jetstream.WithMsgID(req.msgID))
		out = append(out, sent{t, req, f, err})
	}
	timeout := time.NewTimer(bus.AttemptTimeout)
	defer timeout.Stop()
	var landed []*team
	for _, s := range out {
		ack, err := awaitAck(ctx, s.f, s.err, timeout)
		if err == nil && ack.Value == "" {
			// A duplicate (a retry of a flush that had landed) carries no
			// value: read the counter instead.
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if m, gerr := v.h.Usage.GetLastMsgForSubject(gctx, bus.UsageSubject(s.t.name, dayTime(s.req.day))); gerr == nil {
				ack.Value = counterValue(m.Data)
			}
			cancel()
		}
		if s.t.usage.done(s.req, ack, err) {
			landed = append(landed, s.t)
		} else if ctx.Err() == nil {
			v.cfg.Log.Warn("keyauth: usage flush failed; will retry", "team", s.t.name, "err", err)
		}
	}
	return landed
}

// awaitAck waits for the acknowledgement of an asynchronous publish (err is
// the publish's own error). timeout is shared by a round of publishes: once
// it fires, the rest of the round times out at once too.
func awaitAck(ctx context.Context, f jetstream.PubAckFuture, err error, timeout *time.Timer) (*jetstream.PubAck, error) {
	if err != nil {
		return nil, err
	}
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-timeout.C:
		timeout.Reset(0)
		return nil, context.DeadlineExceeded
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// next takes the increment to send: a retry, an earlier day's count, or
// what is pending (then in flight). nil when there is none.
func (c *usageCounter) next() *flushReq {
	c.mu.Lock()
	defer c.mu.Unlock()
	req := c.retry
	switch {
	case req != nil:
	case len(c.carry) > 0:
		req, c.carry = c.carry[0], c.carry[1:]
	case c.pending > 0:
		req = &flushReq{day: c.day, n: c.pending}
		c.inflight += c.pending
		c.pending = 0
	}
	return req
}

// done records how sending req went; it reports whether it landed.
func (c *usageCounter) done(req *flushReq, ack *jetstream.PubAck, err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.retry = req // sent again with the same id: counted once
		return false
	}
	c.retry = nil
	if req.day != c.day {
		return true
	}
	c.inflight -= req.n
	if total, err := strconv.ParseInt(ack.Value, 10, 64); err == nil && total > c.global {
		c.global = total
	}
	// A total reported while the flush was in flight counts once it has
	// landed: any total after it includes it, and one before it is less
	// than the acknowledged one (counts only grow).
	c.global, c.seen = max(c.global, c.seen), 0
	return true
}

// flushLastUsed writes the last-used time of every key used since the
// last flush, each to its own entry, all at once: no reads, one round
// trip per thousand keys. Nodes flushing the same key race, and the entry
// may end up up to a flush period older than the latest use.
func (v *Validator) flushLastUsed(ctx context.Context) {
	used := v.st.takeUsed()
	type pending struct {
		slot uint32
		f    jetstream.PubAckFuture
	}
	failed := 0
	for len(used) > 0 {
		if ctx.Err() != nil {
			for _, slot := range used {
				v.st.markUsed(slot, v.st.table.rec(slot))
			}
			return
		}
		chunk := used[:min(len(used), 1000)]
		used = used[len(chunk):]
		var ps []pending
		for _, slot := range chunk {
			k := v.st.table.rec(slot)
			if k.has(flagDead) {
				continue
			}
			subject := bus.LastUsedSubject(v.st.teamAt(k.team).name, v.st.table.id(slot))
			f, err := v.js.PublishAsync(subject, strconv.AppendUint(nil, uint64(k.lastUsed.Load()), 10))
			if err != nil {
				failed++
				v.st.markUsed(slot, k) // again next time
				continue
			}
			ps = append(ps, pending{slot, f})
		}
		for _, p := range ps {
			select {
			case <-p.f.Ok():
			case <-p.f.Err():
				failed++
				v.st.markUsed(p.slot, v.st.table.rec(p.slot))
			case <-ctx.Done():
				failed++
				v.st.markUsed(p.slot, v.st.table.rec(p.slot))
			}
		}
	}
	if failed > 0 && ctx.Err() == nil {
		v.cfg.Log.Warn("keyauth: last-used flush failed for some keys; will retry", "keys", failed)
	}
}
