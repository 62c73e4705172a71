// Package projections builds the read models in JetStream KV from the event
// stream, and answers queries from them.
//
// Every telkeys instance runs a Projector on the same durable consumer,
// which allows one unacknowledged event at a time: events are applied in
// stream order, by one instance at a time. Each team record stores the
// stream sequence of the last event applied to it, and an event at or below
// it is skipped, so redeliveries after a crash are harmless.
package projections

import "time"

// TeamRecord is a team's access configuration and active key count, in
// bucket telkeys_teams under the team id. A team never configured has no
// record and is disabled.
type TeamRecord struct {
	Seq               uint64    `msgpack:"seq"`
	Team              string    `msgpack:"team"`
	Configured        bool      `msgpack:"configured"`
	Enabled           bool      `msgpack:"enabled"`
	AllowedScopes     []string  `msgpack:"allowed_scopes"`
	MaxKeys           int       `msgpack:"max_keys"`
	MaxRequestsPerDay *int64    `msgpack:"max_requests_per_day"`
	Keys              int       `msgpack:"keys"`
	UpdatedAt         time.Time `msgpack:"updated_at"`
}

// KeyRecord is one active key. It is stored in the team's list and, in
// bucket telkeys_keys, under the hex SHA-256 of the key.
type KeyRecord struct {
	Seq       uint64    `msgpack:"seq"`
	ID        string    `msgpack:"id"`
	Team      string    `msgpack:"team"`
	Name      string    `msgpack:"name"`
	Scopes    []string  `msgpack:"scopes"`
	Hash      string    `msgpack:"hash"`
	Last4     string    `msgpack:"last4"`
	CreatedAt time.Time `msgpack:"created_at"`
}

// TeamKeysRecord is a team's active keys in creation order, in bucket
// telkeys_team_keys under the team id.
type TeamKeysRecord struct {
	Seq  uint64      `msgpack:"seq"`
	Keys []KeyRecord `msgpack:"keys"`
}

// FlagRecord is one platform flag, in bucket telkeys_platform.
type FlagRecord struct {
	Seq     uint64 `msgpack:"seq"`
	Enabled bool   `msgpack:"enabled"`
}
