// Package projections builds the read models in JetStream KV from the event
// stream, and answers queries from them.
//
// Every telkeys instance runs a Projector on the same durable consumer,
// pinned to one instance at a time; it applies events in stream order, in
// batches, into one bucket (bus.BucketReadModel) whose checkpoint is written
// after each batch. Each record stores the sequence of the last event
// applied to it, so replays after a crash or a failover are harmless.
package projections

import (
	"time"

	"github.com/telapi/telkeys/domain"
	"github.com/telapi/telkeys/events"
)

// TeamRecord is a team's access configuration and active key count, under
// team.<team>. A team never configured has no record and is disabled.
type TeamRecord struct {
	Seq        uint64 `msgpack:"seq"`
	Team       string `msgpack:"team"`
	Configured bool   `msgpack:"configured"`
	events.AccessConfig
	Keys      int       `msgpack:"keys"`
	UpdatedAt time.Time `msgpack:"updated_at"`
	// Leaks are the team's last leak reports (at most MaxLeaks), oldest
	// first, revoked keys' included: the API Keys tab's banner.
	Leaks []domain.Leak `msgpack:"leaks,omitempty"`
}

// MaxLeaks is how many leak reports a team record keeps.
const MaxLeaks = 20

// KeyRecord is one active key. It is stored in the team's list and under
// key.<hex SHA-256 of the key>.
type KeyRecord struct {
	Seq       uint64    `msgpack:"seq"`
	ID        string    `msgpack:"id"`
	Team      string    `msgpack:"team"`
	Name      string    `msgpack:"name"`
	Scopes    []string  `msgpack:"scopes"`
	Hash      string    `msgpack:"hash"`
	Last4     string    `msgpack:"last4"`
	CreatedAt time.Time `msgpack:"created_at"`
	// The key lifecycle (see domain.Key).
	ExpiresAt  *time.Time   `msgpack:"expires_at,omitempty"`
	Disabled   bool         `msgpack:"disabled,omitempty"`
	Replaces   string       `msgpack:"replaces,omitempty"`
	ReplacedBy string       `msgpack:"replaced_by,omitempty"`
	Leak       *domain.Leak `msgpack:"leak,omitempty"`
}

// TeamKeysRecord is a team's active keys in creation order, under
// teamkeys.<team>.
type TeamKeysRecord struct {
	Seq  uint64      `msgpack:"seq"`
	Keys []KeyRecord `msgpack:"keys"`
}

// FlagRecord is one platform flag, under flag.<name>.
type FlagRecord struct {
	Seq     uint64 `msgpack:"seq"`
	Enabled bool   `msgpack:"enabled"`
}

// ChainRecord is the last valid event of an aggregate, under
// chain.<aggregate>: where the check of its next event resumes.
type ChainRecord struct {
	Seq  uint64 `msgpack:"seq"`
	Hash []byte `msgpack:"hash"`
}

// QuarantineRecord is a stored message that is not a valid event, under
// quarantine.<seq>: never applied, listed for auditors.
type QuarantineRecord struct {
	Seq      uint64    `msgpack:"seq"`
	Subject  string    `msgpack:"subject"`
	Reason   string    `msgpack:"reason"`
	Detail   string    `msgpack:"detail"`
	EventID  string    `msgpack:"event_id"`
	StoredAt time.Time `msgpack:"stored_at"`
}
