package e2e

// A history of key operations, recorded with their call and return times,
// and its check with porcupine against the model of a key's life: a key is
// valid from a point inside its create until a point inside its delete, and
// a node that answers may say VALID only in between.

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

type opKind int

const (
	opCreate      opKind = iota // a 201: the key exists from a point inside it
	opDelete                    // a 204 (or a 404 after an unanswered try): gone from a point inside it
	opMaybeDelete               // never answered: the key may or may not be gone from its call on
	opVerify                    // a node's definite answer
)

type keyOp struct {
	kind opKind
	key  string // the key's id
	node string // opVerify: which node answered
}

// valid is the output of an opVerify: VALID, or a refusal (401).
type valid bool

// history records operations from many goroutines. Times are nanoseconds
// since the history began.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func newHistory() *history { return &history{start: time.Now()} }

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(client int, in keyOp, out any, call, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
}

// keyState is the model's state of one key.
type keyState int

const (
	absent keyState = iota
	live
	gone
)

// keyModel is the model, partitioned by key: keys are independent.
var keyModel = porcupine.NondeterministicModel{
	Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, o := range ops {
			k := o.Input.(keyOp).key
			by[k] = append(by[k], o)
		}
		out := make([][]porcupine.Operation, 0, len(by))
		for _, p := range by {
			out = append(out, p)
		}
		return out
	},
	Init: func() []any { return []any{absent} },
	Step: func(state, input, output any) []any {
		s, in := state.(keyState), input.(keyOp)
		switch in.kind {
		case opCreate:
			if s == absent {
				return []any{live}
			}
		case opDelete:
			if s == live {
				return []any{gone}
			}
		case opMaybeDelete:
			if s == live {
				return []any{live, gone}
			}
			return []any{s}
		case opVerify:
			// A refusal is always allowed (a node that has not yet heard
			// of a new key refuses it); VALID only while the key lives.
			if !bool(output.(valid)) || s == live {
				return []any{s}
			}
		}
		return nil
	},
	Equal: func(a, b any) bool { return a == b },
	DescribeOperation: func(input, output any) string {
		in := input.(keyOp)
		switch in.kind {
		case opCreate:
			return "create " + in.key
		case opDelete:
			return "delete " + in.key
		case opMaybeDelete:
			return "delete? " + in.key
		}
		return fmt.Sprintf("%s says %v for %s", in.node, output, in.key)
	},
}

// check checks the history against the model, and counts what an
// operator reads first: VALID answers that began after the key's delete
// had answered.
func (h *history) check(timeout time.Duration) (porcupine.CheckResult, int) {
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	deleted := map[string]int64{} // key → when its delete answered
	for _, o := range ops {
		if in := o.Input.(keyOp); in.kind == opDelete {
			deleted[in.key] = o.Return
		}
	}
	after := 0
	for _, o := range ops {
		in := o.Input.(keyOp)
		if at, ok := deleted[in.key]; ok && in.kind == opVerify && bool(o.Output.(valid)) && o.Call > at {
			after++
		}
	}
	return porcupine.CheckOperationsTimeout(keyModel.ToModel(), ops, timeout), after
}

// pending is the return time of an operation that never answered.
const pending = math.MaxInt64

// gaps are the spans during which a series of samples (ok or not, at a
// time) was not ok: from the first failure after a success to the next
// success.
type sample struct {
	at int64
	ok bool
}

func gaps(samples []sample) []time.Duration {
	sort.Slice(samples, func(i, j int) bool { return samples[i].at < samples[j].at })
	var out []time.Duration
	var from int64 = -1
	var lastOK int64
	for _, s := range samples {
		switch {
		case !s.ok && from < 0:
			from = lastOK
		case s.ok && from >= 0:
			out = append(out, time.Duration(s.at-from))
			from = -1
		}
		if s.ok {
			lastOK = s.at
		}
	}
	return out
}

// The checker tells a correct history from a wrong one.
func TestKeyModel(t *testing.T) {
	verify := func(ok bool, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: 1, Input: keyOp{kind: opVerify, key: "k", node: "n"}, Output: valid(ok), Call: call, Return: ret}
	}
	create := porcupine.Operation{Input: keyOp{kind: opCreate, key: "k"}, Call: 0, Return: 10}
	del := porcupine.Operation{Input: keyOp{kind: opDelete, key: "k"}, Call: 20, Return: 30}
	maybe := porcupine.Operation{Input: keyOp{kind: opMaybeDelete, key: "k"}, Call: 20, Return: pending}
	for _, c := range []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"valid between create and delete", []porcupine.Operation{create, verify(true, 11, 12), del, verify(false, 31, 32)}, true},
		{"valid while the delete runs", []porcupine.Operation{create, del, verify(true, 21, 29)}, true},
		{"a refusal of a live key", []porcupine.Operation{create, verify(false, 11, 12)}, true},
		{"valid after the delete answered", []porcupine.Operation{create, del, verify(true, 31, 32)}, false},
		{"valid before the create began", []porcupine.Operation{verify(true, -5, -1), create}, false},
		{"valid after the delete answered, among allowed answers", []porcupine.Operation{create, verify(true, 11, 12), del, verify(true, 25, 28), verify(true, 31, 35)}, false},
		{"an unanswered delete may or may not have happened", []porcupine.Operation{create, maybe, verify(true, 40, 41)}, true},
	} {
		h := &history{ops: c.ops}
		res, _ := h.check(10 * time.Second)
		if (res == porcupine.Ok) != c.ok {
			t.Errorf("%s: %s, want ok=%v", c.name, res, c.ok)
		}
	}
}
