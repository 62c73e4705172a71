package keyauth

import (
	"context"
	"time"

	"github.com/telapi/telkeys/apikey"
)

// Verify checks key for scope, in this order: length and prefix,
// freshness of this node, lookup by SHA-256, key enabled, key not expired,
// team enabled, webrtc flag, scope, daily quota. The quota is charged only when every other check
// passes.
//
// It does not check the key's checksum (apikey.Parse): only keys telkeys
// made are stored, and the lookup is exact, so a key with a bad checksum is
// NOT_FOUND either way. Checking it first would cost a valid key, the
// common case, two thirds of a SHA-256 to save a malformed one the lookup.
//
// A team's daily limit is kept by reservation (see quota.go): Verify admits
// only from the block this node has reserved, and answers RATE_LIMITED with
// Reserving set when it holds none right now but the limit is not known to
// be reached. VerifyWait waits for the block.
//
// It does no I/O and no allocation, and is safe for concurrent use.
//
// Freshness is judged on a copy of the clock refreshed every 10 ms (the
// clock itself costs half a SHA-256 on some VMs). A process resumed after
// a pause longer than MaxStaleness (SIGSTOP, a frozen VM) may run Verify
// before that copy catches up and answer from the state it had before the
// pause: callers that can be paused check Current, which reads the clock,
// first, as package node's gate does.
func (v *Validator) Verify(key, scope string) Result {
	if len(key) != apikey.Len || key[:len(apikey.Prefix)] != apikey.Prefix {
		return Result{Code: NotFound, Limit: -1}
	}
	now := time.Unix(0, v.clock.Load())
	if !v.current(now) {
		return Result{Code: Unavailable, Limit: -1}
	}
	slot, k := v.st.find(hashKey(key))
	if k == nil {
		return Result{Code: NotFound, Limit: -1}
	}
	t := v.st.teamAt(k.team)
	r := Result{Team: t.name, KeyID: v.st.table.id(slot), Limit: -1}
	if k.has(flagDisabled) {
		r.Code = Disabled
		return r
	}
	if e := k.expiresAt.Load(); e != 0 && now.UnixNano() >= e {
		r.Code = Expired
		return r
	}
	cfg := t.cfg.Load()
	if cfg == nil || !cfg.enabled {
		r.Code = TeamAPIDisabled
		return r
	}
	r.Scopes, r.Limit = k.scopes&cfg.allowed, cfg.limit
	if v.st.webrtcOff.Load() {
		r.Code = WebRTCDisabled
		return r
	}
	if want := ScopeOf(scope); want == 0 || r.Scopes&want == 0 {
		r.Code = InsufficientScope
		return r
	}
	day := dayOf(now)
	if cfg.limit >= 0 {
		ok, refill := t.quota.take(day, cfg.limit)
		if refill {
			v.wantRefill(t)
		}
		if !ok {
			r.Code, r.Reserving, r.RequestsToday = RateLimited, refill, t.usage.count(day)
			return r
		}
	}
	r.RequestsToday = t.usage.charge(day, cfg.limit >= 0)
	if sec := uint32(now.Unix()); sec-k.lastUsed.Load() >= lastUsedStep {
		k.lastUsed.Store(sec)
		v.st.markUsed(slot, k)
	}
	r.Code = Valid
	return r
}

// Usage returns a team's successful verifications today as this node
// knows them (every node's flushed counts plus its own unflushed ones) and
// its daily limit (-1 if none).
func (v *Validator) Usage(team string) (today, limit int64) {
	t := v.st.knownTeam(team)
	if t == nil {
		return 0, -1
	}
	limit = -1
	if cfg := t.cfg.Load(); cfg != nil {
		limit = cfg.limit
	}
	return t.usage.count(dayOf(v.cfg.Now())), limit
}

// VerifyWait is Verify, but when the answer is RATE_LIMITED only because
// this node holds no reservation for the team right now (Reserving), it
// waits for one, up to a second or until ctx ends, and verifies again. It
// does not wait while reservations fail (the bus is unreachable): the
// answer is then RATE_LIMITED with Reserving set at once, and callers
// should ask the client to retry in a second. HTTP gates call it; Verify
// itself never waits.
func (v *Validator) VerifyWait(ctx context.Context, key, scope string) Result {
	done := v.refilled()
	r := v.Verify(key, scope)
	if r.Code != RateLimited || !r.Reserving || v.reserveFailing.Load() {
		return r
	}
	timeout := time.NewTimer(quotaWait)
	defer timeout.Stop()
	for r.Code == RateLimited && r.Reserving && !v.reserveFailing.Load() {
		select {
		case <-done:
		case <-timeout.C:
			return r
		case <-ctx.Done():
			return r
		}
		done = v.refilled()
		r = v.Verify(key, scope)
	}
	return r
}

// Owner returns the team and id of key if this validator holds it, whether
// or not it would be valid (disabled, expired). It is for leak reports:
// no quota is charged.
func (v *Validator) Owner(key string) (team, keyID string, ok bool) {
	if len(key) != apikey.Len || key[:len(apikey.Prefix)] != apikey.Prefix {
		return "", "", false
	}
	slot, k := v.st.find(hashKey(key))
	if k == nil {
		return "", "", false
	}
	return v.st.teamAt(k.team).name, v.st.table.id(slot), true
}
