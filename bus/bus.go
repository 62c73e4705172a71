// Package bus owns every NATS name telkeys uses (streams, subjects, KV
// buckets, consumers), creates or updates them idempotently at start, and
// runs the embedded nats-server that is the default store.
//
// Renaming anything here is a migration: the durable consumer's name, for
// example, is its position in the event history; a new name re-consumes
// everything.
package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of streams, subjects, buckets and consumers.
const (
	// EventStream holds every event, forever. It denies delete and purge.
	EventStream = "TELKEYS_EVENTS"
	// EventSubjectPrefix + aggregate is the subject of one aggregate.
	EventSubjectPrefix = "telkeys.events."
	// EventSubjects matches every event.
	EventSubjects = EventSubjectPrefix + ">"

	// ProjectorConsumer is the durable consumer shared by every telkeys
	// instance that builds the read models.
	ProjectorConsumer = "projector"
	// ProjectedSubject carries, on core NATS, the stream sequence up to which
	// the read models are built. It is a hint that wakes waiters early; the
	// consumer's ack floor is the truth.
	ProjectedSubject = "telkeys.projected"

	// BucketTeams holds one TeamRecord per team: access config and key count.
	BucketTeams = "telkeys_teams"
	// BucketTeamKeys holds one TeamKeysRecord per team: its active keys.
	BucketTeamKeys = "telkeys_team_keys"
	// BucketKeys holds one KeyRecord per active key, by hex SHA-256: what
	// validators need.
	BucketKeys = "telkeys_keys"
	// BucketPlatform holds one FlagRecord per platform flag.
	BucketPlatform = "telkeys_platform"
	// BucketSnapshots holds write-model snapshots, by aggregate.
	BucketSnapshots = "telkeys_snapshots"
)

// EventSubject returns the subject of an aggregate's events.
func EventSubject(aggregate string) string { return EventSubjectPrefix + aggregate }

// Handles are the opened streams and buckets.
type Handles struct {
	Events    jetstream.Stream
	Projector jetstream.Consumer
	Teams     jetstream.KeyValue
	TeamKeys  jetstream.KeyValue
	Keys      jetstream.KeyValue
	Platform  jetstream.KeyValue
	Snapshots jetstream.KeyValue
}

// Setup creates or updates every stream, bucket and consumer. It is
// idempotent and safe to run from several instances at once.
func Setup(ctx context.Context, js jetstream.JetStream, replicas int) (*Handles, error) {
	if replicas < 1 {
		replicas = 1
	}
	var h Handles
	var err error
	h.Events, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventStream,
		Description: "telkeys event history: append-only, hash-chained per aggregate",
		Subjects:    []string{EventSubjects},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Retention:   jetstream.LimitsPolicy,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		MaxAge:      0, // forever
		MaxMsgSize:  64 << 10,
		Discard:     jetstream.DiscardNew,
		Duplicates:  2 * time.Minute,
		DenyDelete:  true,
		DenyPurge:   true,
		// Direct Get may answer from a lagging replica; commands read their
		// aggregate's tail and must see their own writes.
		AllowDirect: false,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: event stream: %w", err)
	}
	for _, b := range []struct {
		kv   *jetstream.KeyValue
		name string
		desc string
	}{
		{&h.Teams, BucketTeams, "team access config and key count"},
		{&h.TeamKeys, BucketTeamKeys, "active keys per team"},
		{&h.Keys, BucketKeys, "active keys by SHA-256"},
		{&h.Platform, BucketPlatform, "platform flags"},
		{&h.Snapshots, BucketSnapshots, "write-model snapshots"},
	} {
		if *b.kv, err = kvBucket(ctx, js, b.name, b.desc, replicas); err != nil {
			return nil, err
		}
	}
	h.Projector, err = js.CreateOrUpdateConsumer(ctx, EventStream, jetstream.ConsumerConfig{
		Durable:       ProjectorConsumer,
		Description:   "builds the KV read models; shared by all telkeys instances",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		// An event takes milliseconds to apply. If the instance it was
		// delivered to dies, every projection waits for this long, so keep
		// it short; an apply that outlives it is redelivered and applied
		// idempotently (records are compare-and-swapped and carry their
		// sequence).
		AckWait:    2 * time.Second,
		MaxDeliver: -1,
		// One event in flight across every instance: the read models are
		// built in stream order, and each event by one instance at a time.
		MaxAckPending: 1,
		FilterSubject: EventSubjects,
		Replicas:      replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: projector consumer: %w", err)
	}
	return &h, nil
}

// kvBucket creates the stream behind a KV bucket with the layout nats.go
// expects, but with AllowDirect off: on replicated buckets Direct Get can
// answer from a lagging follower, which would break read-your-writes.
func kvBucket(ctx context.Context, js jetstream.JetStream, name, desc string, replicas int) (jetstream.KeyValue, error) {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              "KV_" + name,
		Description:       desc,
		Subjects:          []string{"$KV." + name + ".>"},
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		MaxMsgs:           -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		Discard:           jetstream.DiscardNew,
		AllowDirect:       false,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: bucket %s: %w", name, err)
	}
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("bus: bucket %s: %w", name, err)
	}
	return kv, nil
}
