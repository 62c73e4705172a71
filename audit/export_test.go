package audit

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/events"
)

// HeadsOnlyState is StateAt without its fallback: ErrUnverifiedHead comes
// back where StateAt would check every signature again.
func HeadsOnlyState(ctx context.Context, js jetstream.JetStream, keys *events.Keys, team string) (State, error) {
	return stateAt(ctx, js, keys, Filter{headsOnly: true}, team)
}

var ErrUnverifiedHead = errUnverifiedHead
