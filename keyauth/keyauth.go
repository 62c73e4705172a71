// Package keyauth is the API key validator that TelAPI nodes embed.
//
// It loads the key index (or starts from the first event), then stays
// current by applying every event of the event stream, in stream order, as
// the server stores it. A Verify is pure memory work: no network, no
// allocation. A deleted key is refused as soon as its KeyDeleted event
// reaches the node, and nothing can bring it back: changes are applied
// strictly by event sequence, never from a cache fill or a late read-model
// update.
//
// Only valid events are applied, as events.Chain defines them: signed by a
// trusted key (Config.Keys) and in their place in their aggregate's hash
// chain. Anything else on the stream (junk, a replayed or forged event) is
// logged and skipped. The key index and the heartbeats are signed too.
//
// A node that has not heard telkeys' heartbeat for longer than
// Config.MaxStaleness answers UNAVAILABLE (or, with FailOpen, keeps serving
// from what it knows). After a reconnect it answers UNAVAILABLE until it has
// applied every event it missed.
//
// Successful verifications are counted per team per UTC day and flushed to
// JetStream counters about every 100 ms; last-used times about every second.
// A team's daily limit is exact across nodes: each node admits only from a
// block it has reserved in the team's reservation counter (quota.go).
package keyauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

// Code is the outcome of a verification.
type Code uint8

// The verify codes of the contract.
const (
	Valid Code = iota
	NotFound
	InsufficientScope
	TeamAPIDisabled
	WebRTCDisabled
	RateLimited
	Unavailable
	Expired
	Disabled
)

var codeNames = [...]string{"VALID", "NOT_FOUND", "INSUFFICIENT_SCOPE", "TEAM_API_DISABLED", "WEBRTC_DISABLED", "RATE_LIMITED", "UNAVAILABLE", "EXPIRED", "DISABLED"}

// String returns the contract's name of the code.
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "UNKNOWN"
}

// Result is what Verify found. Team and KeyID are set whenever the key was
// found, even if it was refused; Scopes once the team's config is known.
type Result struct {
	Code  Code
	Team  string
	KeyID string
	// Scopes are the key's effective scopes: its own ∩ the team's allowed.
	Scopes ScopeSet
	// RequestsToday counts the team's successful verifications today, this
	// one included; Limit is the team's max_requests_per_day, -1 if none.
	RequestsToday int64
	Limit         int64
	// Reserving is set on RATE_LIMITED when the limit is not known to be
	// reached but this node holds no reservation for the team right now:
	// one is on its way (see VerifyWait), or the bus is unreachable. Worth
	// a retry in a second, unlike a limit reached.
	Reserving bool
}

// Valid reports whether the key may be used.
func (r Result) Valid() bool { return r.Code == Valid }

// Config configures a Validator.
type Config struct {
	// Keys are the event-signing keys to trust: events, key indexes and
	// heartbeats not signed by one of them are never applied. Required.
	Keys *events.Keys
	// Signer signs the key indexes this validator writes (telkeys serve's
	// own validator); nil for nodes, which never write one.
	Signer *events.Signer
	// Name identifies this node in usage counter message ids; it must be
	// unique among nodes. Empty means a random name.
	Name string
	// Report, if set, is the subject on which the validator tells telkeys
	// how far it has applied the events (bus.NodeAppliedSubject): at every
	// heartbeat, and at once after an event that may take access away, so
	// that telkeys can answer such a command once every node has it. Close
	// sends bus.NodeLeaving on it.
	Report string
	// MaxStaleness is how long the node serves without hearing telkeys'
	// heartbeat. A heartbeat counts from the time telkeys dated it, and one
	// dated more than MaxStaleness away from Now (either way) is ignored:
	// the clocks must agree to well within it. Default 10 s.
	MaxStaleness time.Duration
	// FailOpen keeps answering from the last known state when stale,
	// instead of UNAVAILABLE. It trades revocation for availability: a key
	// deleted while the node is cut off keeps working there until it
	// reconnects. Off by default.
	FailOpen bool
	// Now is the clock (UTC days, staleness). Default time.Now.
	Now func() time.Time
	// UsageFlush and LastUsedFlush are the flush periods. Defaults 100 ms
	// and 1 s.
	UsageFlush    time.Duration
	LastUsedFlush time.Duration
	// ReadyTimeout bounds the initial load. Default 60 s.
	ReadyTimeout time.Duration
	Log          *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.Name = "node-" + hex.EncodeToString(b[:])
	}
	if c.MaxStaleness <= 0 {
		c.MaxStaleness = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.UsageFlush <= 0 {
		c.UsageFlush = 100 * time.Millisecond
	}
	if c.LastUsedFlush <= 0 {
		c.LastUsedFlush = time.Second
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 60 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Keys == nil || c.Keys.Len() == 0 {
		errs = append(errs, errors.New("keyauth: no trusted event-signing key: a node must know whose events to believe (--events-public-key)"))
	}
	for _, r := range c.Name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			errs = append(errs, errors.New("keyauth: Name must be [A-Za-z0-9_-]"))
			break
		}
	}
	if len(c.Name) > 64 {
		errs = append(errs, errors.New("keyauth: Name must be at most 64 characters"))
	}
	return errors.Join(errs...)
}

// Validator verifies keys from memory. It is safe for concurrent use.
type Validator struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	h   *bus.Handles

	st state

	// lastHeard is when the validator last knew it was current, unix ns:
	// a valid event arrived, or a heartbeat dated then, and it had applied
	// every event the heartbeats announced. It only grows.
	lastHeard atomic.Int64
	// clock is cfg.Now() in unix ns, refreshed every clockTick: Verify reads
	// it instead of the clock, which costs half a SHA-256 on some VMs.
	clock atomic.Int64
	// follower consumes the event stream; restartIfStalled replaces it.
	followMu sync.Mutex
	follower jetstream.ConsumeContext
	// heardSeq is the last event sequence a heartbeat announced.
	heardSeq atomic.Uint64
	// streamSeq is the highest sequence the stream is known to hold (from
	// its info or its messages): a heartbeat announcing more is checked
	// against the stream before it is believed. streamChecked is when the
	// stream was last asked, unix ns.
	streamSeq     atomic.Uint64
	streamChecked atomic.Int64
	// rejected counts stream messages skipped as invalid events.
	rejected atomic.Uint64
	// resync is 0 when current; after a reconnect it is awaitingHeartbeat,
	// then the sequence the node must apply before it answers again. One
	// word, so that a reconnect can never be lost to a concurrent clear.
	resync     atomic.Uint64
	reconnects atomic.Uint64
	flushSeq   atomic.Uint64

	// The refiller's queue of teams that need a reservation (quota.go);
	// refillDone is closed after each round.
	refillMu    sync.Mutex
	refillQ     []*team
	refillSpare []*team
	refillKick  chan struct{}
	refillDone  chan struct{}
	lastSweep   time.Time // the refiller's only
	// reserveFailing is set while reservations fail.
	reserveFailing atomic.Bool

	usageReady  chan struct{} // closed once today's counters are loaded
	usageLoaded sync.Once

	cancel context.CancelFunc
	wg     sync.WaitGroup
	subs   []*nats.Subscription
	closed atomic.Bool
}

// New loads the key index, subscribes to the event stream and returns
// once the validator has caught up with every event stored before it
// started.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Validator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	// Asynchronous publishes (usage and last-used flushes) give up after a
	// while: an ack lost with a failed leader would otherwise hold a flush,
	// and a slot of the pending-publish limit, until the next reconnect.
	js, err := bus.JetStream(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	h, err := bus.Open(lctx, js)
	if err != nil {
		return nil, err
	}
	v := &Validator{cfg: cfg, nc: nc, js: js, h: h, usageReady: make(chan struct{}),
		refillKick: make(chan struct{}, 1), refillDone: make(chan struct{}),
		refillQ: make([]*team, 0, 64), refillSpare: make([]*team, 0, 64)}
	v.st.init(cfg.Keys)
	v.lastHeard.Store(cfg.Now().UnixNano())
	v.clock.Store(cfg.Now().UnixNano())
	if err := v.start(lctx); err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

// Close stops the validator, which refuses every key from then on, tells
// telkeys not to wait for it any more, and flushes pending usage.
func (v *Validator) Close() {
	if !v.closed.CompareAndSwap(false, true) {
		return
	}
	// It refuses every key from now on: telkeys need not wait for it.
	if v.cfg.Report != "" && v.nc.Publish(v.cfg.Report, []byte(bus.NodeLeaving)) == nil {
		_ = v.nc.FlushTimeout(time.Second)
	}
	for _, s := range v.subs {
		_ = s.Unsubscribe()
	}
	if v.cancel != nil {
		v.cancel()
	}
	v.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v.giveBackAll(ctx)
	v.flushUsage(ctx, true)
	v.flushLastUsed(ctx)
}

// Keys returns how many keys the validator holds.
func (v *Validator) Keys() int64 { return v.st.keysCount.Load() }

// Applied returns the last event sequence applied, or skipped as invalid.
func (v *Validator) Applied() uint64 { return v.st.applied.Load() }

// Rejected returns how many stream messages were skipped because they are
// not valid events (see events.Chain).
func (v *Validator) Rejected() uint64 { return v.rejected.Load() }

// WaitApplied blocks until every event up to seq is applied.
func (v *Validator) WaitApplied(ctx context.Context, seq uint64) error {
	return v.st.applied.Wait(ctx, seq, 0, nil)
}

// Current reports whether the validator is answering from current state:
// it has heard telkeys recently and caught up after any reconnect.
func (v *Validator) Current() bool { return v.current(v.cfg.Now()) }
