package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrUnavailable: the bus did not answer, or answered that it cannot now
// (a server down, a stream electing a leader). The request may or may not
// have taken effect; the caller may retry.
var ErrUnavailable = errors.New("the event store is unavailable; retry shortly")

// How a client notices a server that stopped answering: with the TCP
// connection still open (a paused or partitioned server) only pings tell,
// and nats.go's defaults (2 min, 2 outstanding) would keep every request
// waiting on it for minutes. Pinging every PingInterval and giving up after
// MaxPingsOut unanswered pings moves the connection to another server
// within about PingInterval × (MaxPingsOut + 1).
const (
	PingInterval = 500 * time.Millisecond
	MaxPingsOut  = 2
	// AttemptTimeout bounds one request to JetStream: long enough for an
	// fsync'd R3 append under load, short enough that a request lost on a
	// dead connection is retried on the next one soon after the ping
	// check has moved it.
	AttemptTimeout = 2 * time.Second
	// ConsumerHeartbeat is the idle heartbeat the server sends a
	// consumer's pull requests: two missed, and nats.go asks again (an
	// ordered consumer recreates itself), so a consumer whose server or
	// stream leader went away resumes within seconds, not after the 5 s
	// default's 10 s or a 30 s pull expiry.
	ConsumerHeartbeat = time.Second
)

// IsPeerOffline reports whether the servers could not place a stream
// because a peer is offline (10005 "no suitable peers for placement, peer
// offline"): on a cluster that has just formed, until every server has
// reported to the meta leader. Other placement failures (tags, resources)
// are answers.
func IsPeerOffline(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.ErrorCode == 10005 && strings.Contains(ae.Description, "peer offline")
}

// IsUnavailable reports whether err says the bus could not serve a request
// now, rather than refusing it: no response, no connection, no responders,
// or a JetStream error that the server marks temporary.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnavailable) {
		return true
	}
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode {
		case 10008, // JetStream system temporarily unavailable
			10118, // stream offline
			10119, // consumer offline
			10163: // expected last sequence per subject temporarily unavailable
			return true
		}
		return ae.Code == 503 && ae.ErrorCode != 10063 // 10063: a sequence mismatch is an answer
	}
	for _, e := range []error{
		context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders, jetstream.ErrNoStreamResponse,
		nats.ErrConnectionClosed, nats.ErrDisconnected, nats.ErrConnectionReconnecting, nats.ErrConnectionDraining,
		jetstream.ErrJetStreamNotEnabled, jetstream.ErrJetStreamNotEnabledForAccount,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Unavailable wraps err in ErrUnavailable when IsUnavailable(err), and
// returns it unchanged otherwise.
func Unavailable(err error) error {
	if IsUnavailable(err) && !errors.Is(err, ErrUnavailable) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
