package keyauth

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
)

// Daily limits are kept by reservation. A node admits a request for a team
// with a limit only from a block of requests it has reserved for that team
// and UTC day in the team's reservation counter (bus.QuotaSubject). It
// reserves with a counter increment of B: the acknowledgement carries the
// counter's new total R, so the node knows that the total before it was
// R-B, and that min(B, limit-(R-B)) of its block fits under the limit. It
// keeps that much and gives the rest back at once with a negative
// increment. Since the counter never falls below what has been admitted,
// nothing is ever granted beyond the limit, however many nodes reserve at
// once.
//
// Blocks are a sixteenth of what the counter has left, at most maxBlock, so
// they shrink to 1 near the limit. A node asks for the next block once half
// of the current one is used, in the background: Verify only takes from
// the block, with a compare-and-swap. Unused reservations go back when the
// node closes, when the team's limit or the day changes, and when a block
// has gone unused for idleReturn, so that nodes with demand can have them.
// A node that dies holding a block loses what is left of it for that day.

const (
	// maxBlock bounds a block: what a crashed node can take with it.
	maxBlock = 1000
	// blockShare: a block is at most 1/blockShare of what is left.
	blockShare = 16
	// idleReturn is how long an unused block is kept.
	idleReturn = time.Second
	// quotaSweep is how often blocks are checked for idleness, a changed
	// limit or day, and reservations to retry.
	quotaSweep = 250 * time.Millisecond
	// quotaWait bounds VerifyWait's wait for a block.
	quotaWait = time.Second
)

// block is what this node may still admit for a team on one UTC day.
type block struct {
	day   int64
	limit int64 // the limit it was reserved under
	avail atomic.Int64
	// size is avail just after the last refill: the next refill is asked
	// for once avail falls to half of it.
	size atomic.Int64
	// spent: the counter granted nothing, the limit is reached as far as
	// it knows. Cleared when the counter reports room again (a block given
	// back elsewhere).
	spent atomic.Bool
}

// quota is a team's reservation on this node.
type quota struct {
	cur    atomic.Pointer[block]
	wanted atomic.Bool // queued for a refill

	// The rest belongs to the refiller (and observe, for total).
	mu sync.Mutex
	// total is the counter's last known value for cur's day: what the
	// next block is sized from.
	total int64
	// retry is a reservation whose outcome is unknown, sent again with the
	// same message id so that the counter counts it once.
	retry *reservation
	// idleAvail and idleSince: avail at the last sweep, and since when it
	// has not changed.
	idleAvail int64
	idleSince time.Time
}

type reservation struct {
	day, limit int64
	n          int64 // the block asked for
	// unreserved are requests admitted today before the team had a limit:
	// reserved along with the block, since they count against it.
	unreserved int64
	msgID      string
}

// take admits one request from the block for day under limit. When it
// cannot, refill says whether a refill may help (false: the limit is
// reached). It also asks for a refill once half the block is used.
func (q *quota) take(day, limit int64) (ok, refill bool) {
	b := q.cur.Load()
	if b == nil || b.day != day || b.limit > limit {
		return false, true
	}
	for {
		n := b.avail.Load()
		if n <= 0 {
			return false, !b.spent.Load() || b.limit != limit
		}
		if b.avail.CompareAndSwap(n, n-1) {
			return true, n-1 <= b.size.Load()/2 && !b.spent.Load()
		}
	}
}

// wantRefill queues t for the refiller, once.
func (v *Validator) wantRefill(t *team) {
	if !t.quota.wanted.CompareAndSwap(false, true) {
		return
	}
	v.refillMu.Lock()
	v.refillQ = append(v.refillQ, t)
	v.refillMu.Unlock()
	select {
	case v.refillKick <- struct{}{}:
	default:
	}
}

// refilled returns a channel closed after the next refill round.
func (v *Validator) refilled() <-chan struct{} {
	v.refillMu.Lock()
	defer v.refillMu.Unlock()
	return v.refillDone
}

// runQuota is the refiller: it refills the queued teams, and every
// quotaSweep gives back idle or outdated blocks and retries what failed.
func (v *Validator) runQuota(ctx context.Context) {
	v.refillMu.Lock()
	// Two buffers in turn: queueing a team (in Verify) never allocates.
	teams := v.refillQ
	v.refillQ, v.refillSpare = v.refillSpare[:0], nil
	v.refillMu.Unlock()
	defer func() {
		v.refillMu.Lock()
		v.refillSpare = teams[:0]
		v.refillMu.Unlock()
	}()
	now := v.cfg.Now()
	if now.Sub(v.lastSweep) >= quotaSweep {
		v.lastSweep = now
		queued := map[*team]bool{}
		for _, t := range teams {
			queued[t] = true
		}
		v.st.eachTeam(func(t *team) {
			if v.sweep(ctx, t, now) && !queued[t] {
				teams = append(teams, t)
			}
		})
	}
	for len(teams) > 0 && ctx.Err() == nil {
		chunk := teams[:min(len(teams), 1000)]
		teams = teams[len(chunk):]
		v.reserve(ctx, chunk)
	}
	v.refillMu.Lock()
	close(v.refillDone)
	v.refillDone = make(chan struct{})
	v.refillMu.Unlock()
}

// sweep gives back t's block if it is idle or outdated (another day, a
// changed limit, no limit any more); it reports whether t has a
// reservation to retry.
func (v *Validator) sweep(ctx context.Context, t *team, now time.Time) bool {
	q := &t.quota
	b := q.cur.Load()
	if b == nil {
		return false
	}
	limit := int64(-1)
	if cfg := t.cfg.Load(); cfg != nil {
		limit = cfg.limit
	}
	q.mu.Lock()
	retry := q.retry != nil
	avail := b.avail.Load()
	if avail != q.idleAvail {
		q.idleAvail, q.idleSince = avail, now
	}
	idle := avail > 0 && now.Sub(q.idleSince) >= idleReturn
	q.mu.Unlock()
	if b.day != dayOf(now) || b.limit != limit || idle {
		v.giveBack(ctx, t, b)
	}
	return retry
}

// giveBack returns what is left of b to the counter.
func (v *Validator) giveBack(ctx context.Context, t *team, b *block) {
	n := b.avail.Swap(0)
	b.size.Store(0)
	if n <= 0 {
		return
	}
	msg := nats.NewMsg(bus.QuotaSubject(t.name, dayTime(b.day)))
	msg.Header.Set("Nats-Incr", "-"+strconv.FormatInt(n, 10))
	id := v.msgID()
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		actx, cancel := context.WithTimeout(ctx, bus.AttemptTimeout)
		ack, err := v.js.PublishMsg(actx, msg, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			if total, err := strconv.ParseInt(ack.Value, 10, 64); err == nil {
				t.quota.observe(b.day, total)
			}
			return
		}
	}
	// Lost: the counter keeps it reserved, and nobody can admit it today.
	// Safe, never over the limit.
	v.cfg.Log.Warn("keyauth: could not give back a reservation", "team", t.name, "requests", n)
}

func (v *Validator) msgID() string {
	return v.cfg.Name + "-" + strconv.FormatUint(v.flushSeq.Add(1), 10) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// reserve asks the counter for a block for each team that needs one, all
// at once.
func (v *Validator) reserve(ctx context.Context, teams []*team) {
	now := v.cfg.Now()
	day := dayOf(now)
	type sent struct {
		t   *team
		b   *block
		r   *reservation
		f   jetstream.PubAckFuture
		err error
	}
	var out []sent
	for _, t := range teams {
		t.quota.wanted.Store(false) // a use from now on may queue it again
		b, r := v.nextReservation(ctx, t, day)
		if r == nil {
			continue
		}
		msg := nats.NewMsg(bus.QuotaSubject(t.name, dayTime(r.day)))
		msg.Header.Set("Nats-Incr", "+"+strconv.FormatInt(r.n+r.unreserved, 10))
		f, err := v.js.PublishMsgAsync(msg, jetstream.WithMsgID(r.msgID))
		out = append(out, sent{t, b, r, f, err})
	}
	timeout := time.NewTimer(bus.AttemptTimeout)
	defer timeout.Stop()
	failed := false
	for _, s := range out {
		ack, err := awaitAck(ctx, s.f, s.err, timeout)
		var total int64
		if err == nil {
			value := ack.Value
			if value == "" {
				// A duplicate: the retry of a reservation that had landed.
				// The counter now is at least what the ack would have said,
				// so what fits is judged on the safe side.
				gctx, cancel := context.WithTimeout(ctx, bus.AttemptTimeout)
				var m *jetstream.RawStreamMsg
				if m, err = v.h.Quota.GetLastMsgForSubject(gctx, bus.QuotaSubject(s.t.name, dayTime(s.r.day))); err == nil {
					value = counterValue(m.Data)
				}
				cancel()
			}
			if err == nil {
				total, err = strconv.ParseInt(value, 10, 64)
			}
		}
		if err != nil {
			failed = true
			s.t.quota.mu.Lock()
			s.t.quota.retry = s.r
			s.t.quota.mu.Unlock()
			continue
		}
		v.grant(ctx, s.t, s.b, s.r, total)
	}
	v.reserveFailing.Store(failed)
	if failed && ctx.Err() == nil {
		v.cfg.Log.Warn("keyauth: could not reserve under a daily limit; the teams' requests beyond what this node holds answer 429 until it can")
	}
}

// nextReservation decides what t needs for day: a block installed for the
// day and the team's limit, and the reservation to send (nil: none).
func (v *Validator) nextReservation(ctx context.Context, t *team, day int64) (*block, *reservation) {
	q := &t.quota
	cfg := t.cfg.Load()
	limit := int64(-1)
	if cfg != nil && cfg.enabled {
		limit = cfg.limit
	}
	b := q.cur.Load()
	if limit < 0 {
		if b != nil {
			v.giveBack(ctx, t, b)
		}
		return nil, nil
	}
	q.mu.Lock()
	if r := q.retry; r != nil {
		q.retry = nil
		q.mu.Unlock()
		if r.day == day && r.limit == limit && b != nil && b.day == day && b.limit == limit {
			return b, r
		}
		// Another day or limit: whatever landed stays reserved, unused.
		q.mu.Lock()
	}
	if b == nil || b.day != day || b.limit != limit {
		if b != nil {
			q.mu.Unlock()
			v.giveBack(ctx, t, b)
			q.mu.Lock()
		}
		nb := &block{day: day, limit: limit}
		if b == nil || b.day != day {
			q.total = 0
		}
		q.cur.Store(nb)
		b = nb
	}
	left := limit - q.total
	q.mu.Unlock()
	if b.spent.Load() || b.avail.Load() > b.size.Load()/2 {
		return nil, nil
	}
	if limit == 0 {
		b.spent.Store(true)
		return nil, nil
	}
	n := min(max(left/blockShare, 1), maxBlock)
	return b, &reservation{day: day, limit: limit, n: n, unreserved: t.usage.takeUnreserved(day), msgID: v.msgID()}
}

// grant keeps what fits of a reservation the counter acknowledged at
// total, and gives the rest back.
func (v *Validator) grant(ctx context.Context, t *team, b *block, r *reservation, total int64) {
	before := total - r.n - r.unreserved
	fits := min(max(r.limit-before-r.unreserved, 0), r.n)
	t.quota.observe(r.day, total)
	if rest := r.n - fits; rest > 0 {
		extra := &block{day: r.day}
		extra.avail.Store(rest)
		v.giveBack(ctx, t, extra)
	}
	if fits == 0 {
		b.spent.Store(true)
		return
	}
	if t.quota.cur.Load() != b { // replaced meanwhile: nobody takes from b
		extra := &block{day: r.day}
		extra.avail.Store(fits)
		v.giveBack(ctx, t, extra)
		return
	}
	b.size.Store(b.avail.Add(fits))
}

// observe records a total of the team's reservation counter for day, from
// an acknowledgement or from the counter stream. Room under the limit
// lets a spent block ask again.
func (q *quota) observe(day, total int64) {
	b := q.cur.Load()
	if b == nil || b.day != day {
		return
	}
	q.mu.Lock()
	q.total = total
	q.mu.Unlock()
	if total < b.limit && b.spent.Load() {
		b.spent.Store(false)
	}
}

// giveBackAll returns every block: the validator is closing.
func (v *Validator) giveBackAll(ctx context.Context) {
	v.st.eachTeam(func(t *team) {
		if b := t.quota.cur.Load(); b != nil {
			v.giveBack(ctx, t, b)
		}
	})
}
