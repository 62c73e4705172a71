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
	"errors"
	"fmt"
	"strings"
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
	// ProjectorGroup is its priority group: the server pins it to one
	// instance at a time and fails over when that instance stops pulling.
	ProjectorGroup = "projector"
	// ProjectedSubject carries, on core NATS, the stream sequence up to which
	// the read models are built. It is a hint that wakes waiters early; the
	// checkpoint in the read-model bucket is the truth.
	ProjectedSubject = "telkeys.projected"

	// BucketReadModel holds every read model, so that its writes are stored
	// in one order and its checkpoint, written last, describes a prefix:
	//   team.<team>      TeamRecord: access config and active key count
	//   teamkeys.<team>  TeamKeysRecord: the team's active keys
	//   key.<sha256hex>  KeyRecord: one active key, what validators need
	//   flag.<name>      FlagRecord: a platform flag
	//   chain.<agg>      ChainRecord: the last valid event of an aggregate
	//   quarantine.<seq> QuarantineRecord: a message that is not a valid event
	//   checkpoint       the stream sequence every record above reflects
	BucketReadModel = "telkeys_readmodel"
	// BucketSnapshots holds write-model snapshots, by aggregate.
	BucketSnapshots = "telkeys_snapshots"

	// NodesAppliedPrefix + <credentials name>.<node name> carries, on core
	// NATS, the last event sequence a node has applied: at every heartbeat,
	// and at once after an event that takes access away. telkeys waits for
	// it before it answers such a command (the revocation barrier). A node
	// that stops, and therefore refuses every key from then on, sends
	// NodeLeaving instead, so that telkeys stops waiting for it at once.
	NodesAppliedPrefix = "telkeys.nodes.applied."
	NodeLeaving        = "leaving"

	// HeartbeatSubject carries, on core NATS, telkeys' heartbeat: the last
	// stored event sequence, about every second, signed and dated
	// (events.Signer.SignHeartbeat). Validators that hear nothing they
	// may count for too long stop answering VALID.
	HeartbeatSubject = "telkeys.heartbeat"

	// UsageStream counts successful verifications per team per UTC day:
	// one counter subject, UsageSubjectPrefix + <team>.<yyyymmdd>.
	UsageStream        = "TELKEYS_USAGE"
	UsageSubjectPrefix = "telkeys.usage."
	// UsageRetention is how long day counters are kept (the stream's
	// MaxAge; counter streams cannot use per-message TTLs).
	UsageRetention = 35 * 24 * time.Hour

	// QuotaStream holds, for teams with a daily limit, how many requests
	// the nodes have reserved the right to admit: one counter subject,
	// QuotaSubjectPrefix + <team>.<yyyymmdd>. A node admits a limited
	// team's request only from a block it reserved here (see keyauth).
	QuotaStream        = "TELKEYS_QUOTA"
	QuotaSubjectPrefix = "telkeys.quota."

	// LastUsedStream holds when each key was last used, in unix seconds:
	// one message per key, on LastUsedSubject(team, key id). Nodes write
	// it as they write usage counts; it is not a KV bucket, which nodes
	// may not write.
	LastUsedStream        = "TELKEYS_LASTUSED"
	LastUsedSubjectPrefix = "telkeys.lastused."
	// BucketKeyIndex is an object store holding one object, KeyIndexObject:
	// every key, team and flag a validator needs, at one event sequence.
	// Validators start from it instead of reading a million KV records.
	BucketKeyIndex = "telkeys_keyindex"
	KeyIndexObject = "keyindex"
)

// UsageSubject returns the counter subject of a team on a UTC day.
func UsageSubject(team string, day time.Time) string {
	return UsageSubjectPrefix + team + "." + day.UTC().Format("20060102")
}

// QuotaSubject returns the reservation counter subject of a team on a UTC
// day.
func QuotaSubject(team string, day time.Time) string {
	return QuotaSubjectPrefix + team + "." + day.UTC().Format("20060102")
}

// Keys of the read-model bucket.
const (
	CheckpointKey  = "checkpoint"
	TeamPrefix     = "team."
	TeamKeysPrefix = "teamkeys."
	KeyPrefix      = "key."
	FlagPrefix     = "flag."
	// ChainPrefix + aggregate: the last valid event of the aggregate.
	ChainPrefix = "chain."
	// QuarantinePrefix + sequence: a stored message that is not a valid
	// event.
	QuarantinePrefix = "quarantine."
)

// KeyIndexLock, in the snapshots bucket, names the instance writing the
// key index.
const KeyIndexLock = "lock.keyindex"

// Headers.
const (
	// TypeHeader carries an event's type, so that tools can filter
	// without decoding.
	TypeHeader = "Telkeys-Type"
	// KVOperationHeader marks a KV message that deletes or purges its key
	// (nats.go's layout of KV buckets).
	KVOperationHeader = "KV-Operation"
	KVDelete          = "DEL"
	KVPurge           = "PURGE"
)

// KVStream is the stream behind a KV bucket.
func KVStream(bucket string) string { return "KV_" + bucket }

// KVSubject is the subject of a key in a KV bucket; key may end in a
// wildcard.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// ObjectStream is the stream behind an object store bucket, and
// ObjectSubjects every subject of it.
func ObjectStream(bucket string) string   { return "OBJ_" + bucket }
func ObjectSubjects(bucket string) string { return "$O." + bucket + ".>" }

// IsKVRemoval reports whether a KV message's operation header says that it
// deletes or purges its key.
func IsKVRemoval(op string) bool { return op == KVDelete || op == KVPurge }

// IsWrongLastSequence reports a failed expected-sequence check: 10071, or
// 10164 on replicated streams. (errors.Is(err, jetstream.ErrKeyExists)
// matches only the first.)
func IsWrongLastSequence(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && (ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// EventSubject returns the subject of an aggregate's events.
func EventSubject(aggregate string) string { return EventSubjectPrefix + aggregate }

// AggregateOf returns the aggregate whose subject an event is stored on.
func AggregateOf(subject string) string { return strings.TrimPrefix(subject, EventSubjectPrefix) }

// NodeAppliedSubject is where a node named node, holding credentials named
// creds, reports what it has applied. Node credentials may publish only
// under their own name, so a node can speak for the nodes that share its
// credentials and no other.
func NodeAppliedSubject(creds, node string) string { return NodesAppliedPrefix + creds + "." + node }

// LastUsedSubject is the subject of a key's last-used time; a team's
// match LastUsedSubject(team, ">").
func LastUsedSubject(team, keyID string) string { return LastUsedSubjectPrefix + team + "." + keyID }

// Handles are the opened streams and buckets.
type Handles struct {
	Events    jetstream.Stream
	Projector jetstream.Consumer
	ReadModel jetstream.KeyValue
	// ReadModelStream is the stream behind ReadModel, for reading a key's
	// history (a KV get cannot tell deleted from never written).
	ReadModelStream jetstream.Stream
	Snapshots       jetstream.KeyValue
	Usage           jetstream.Stream
	Quota           jetstream.Stream
	LastUsed        jetstream.Stream
	// KeyIndex is nil when a validator opens a deployment that has none.
	KeyIndex jetstream.ObjectStore
}

// EventStreamConfig is the event stream's configuration.
func EventStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
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
	}
}

// Setup creates or updates every stream, bucket and consumer. It is
// idempotent and safe to run from several instances at once.
func Setup(ctx context.Context, js jetstream.JetStream, replicas int) (*Handles, error) {
	if replicas < 1 {
		replicas = 1
	}
	var h Handles
	var err error
	h.Events, err = js.CreateOrUpdateStream(ctx, EventStreamConfig(replicas))
	if err != nil {
		return nil, fmt.Errorf("bus: event stream: %w", err)
	}
	if h.ReadModel, err = kvBucket(ctx, js, BucketReadModel, "read models: teams, keys by team, keys by hash, flags", replicas); err != nil {
		return nil, err
	}
	if h.ReadModelStream, err = js.Stream(ctx, KVStream(BucketReadModel)); err != nil {
		return nil, err
	}
	if h.Snapshots, err = kvBucket(ctx, js, BucketSnapshots, "write-model snapshots", replicas); err != nil {
		return nil, err
	}
	// Usage counts are advisory: flushed asynchronously, so a crash can
	// forget the last few increments; a flush retried after the 2-minute
	// dedup window can count twice.
	h.Usage, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              UsageStream,
		Description:       "successful verifications per team per UTC day (counters)",
		Subjects:          []string{UsageSubjectPrefix + ">"},
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowMsgCounter:   true,
		AllowDirect:       true,
		MaxMsgsPerSubject: 1,
		// Nodes write it: bounded like the last-used times. An increment
		// is a header and an empty body.
		MaxMsgSize:  1024,
		MaxBytes:    1 << 30,
		MaxAge:      UsageRetention,
		Duplicates:  2 * time.Minute,
		PersistMode: asyncPersist(replicas),
	})
	if err != nil {
		return nil, fmt.Errorf("bus: usage stream: %w", err)
	}
	// Reservations are what keeps a daily limit: unlike the counts, they
	// are stored as durably as the events, since a lost reservation would
	// let the nodes admit it again. A node writes one per block, not per
	// request.
	h.Quota, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              QuotaStream,
		Description:       "requests reserved per team per UTC day under a daily limit (counters)",
		Subjects:          []string{QuotaSubjectPrefix + ">"},
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowMsgCounter:   true,
		AllowDirect:       true,
		MaxMsgsPerSubject: 1,
		MaxMsgSize:        1024,
		MaxBytes:          1 << 30,
		MaxAge:            UsageRetention,
		Duplicates:        2 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: quota stream: %w", err)
	}
	if h.KeyIndex, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      BucketKeyIndex,
		Description: "validator snapshots: every key, team and flag at one event sequence",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}); err != nil {
		return nil, fmt.Errorf("bus: bucket %s: %w", BucketKeyIndex, err)
	}
	// Like the usage counts, last-used times are advisory and written
	// often: asynchronously persisted.
	if h.LastUsed, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              LastUsedStream,
		Description:       "when each key was last used (unix seconds), one message per key",
		Subjects:          []string{LastUsedSubjectPrefix + ">"},
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		MaxMsgsPerSubject: 1,
		// Nodes write it: bounded, so that no node can fill the disk the
		// events need. A time is a few digits; the oldest go first.
		MaxMsgSize:  256, // R3 counts more than the body
		MaxBytes:    1 << 30,
		Discard:     jetstream.DiscardOld,
		Duplicates:  100 * time.Millisecond,
		PersistMode: asyncPersist(replicas),
	}); err != nil {
		return nil, fmt.Errorf("bus: last-used stream: %w", err)
	}
	h.Projector, err = js.CreateOrUpdateConsumer(ctx, EventStream, jetstream.ConsumerConfig{
		Durable:       ProjectorConsumer,
		Description:   "builds the KV read models; shared by all telkeys instances",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		// An unresponsive instance loses the pin after this long, and
		// another one takes over from the checkpoint.
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{ProjectorGroup},
		PinnedTTL:      2 * time.Second,
		AckWait:        10 * time.Second,
		MaxDeliver:     -1,
		MaxAckPending:  4096,
		FilterSubject:  EventSubjects,
		Replicas:       replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: projector consumer: %w", err)
	}
	return &h, nil
}

// Open opens the streams and buckets a validator uses, without creating
// or changing anything: TelAPI nodes need no management rights. It leaves
// the read models and snapshots closed: nodes do not read them.
func Open(ctx context.Context, js jetstream.JetStream) (*Handles, error) {
	var h Handles
	var err error
	if h.Events, err = js.Stream(ctx, EventStream); err != nil {
		return nil, fmt.Errorf("bus: %s: %w (is telkeys serve running?)", EventStream, err)
	}
	if h.Usage, err = js.Stream(ctx, UsageStream); err != nil {
		return nil, fmt.Errorf("bus: %s: %w", UsageStream, err)
	}
	if h.Quota, err = js.Stream(ctx, QuotaStream); err != nil {
		return nil, fmt.Errorf("bus: %s: %w", QuotaStream, err)
	}
	if h.LastUsed, err = js.Stream(ctx, LastUsedStream); err != nil {
		return nil, fmt.Errorf("bus: %s: %w", LastUsedStream, err)
	}
	if h.KeyIndex, err = js.ObjectStore(ctx, BucketKeyIndex); errors.Is(err, jetstream.ErrBucketNotFound) {
		err = nil // made by older telkeys: validators then replay the events
	}
	if err != nil {
		return nil, fmt.Errorf("bus: %s: %w", BucketKeyIndex, err)
	}
	return &h, nil
}

// kvBucket creates the stream behind a KV bucket with the layout nats.go
// expects, but with AllowDirect off: on replicated buckets Direct Get can
// answer from a lagging follower, which would break read-your-writes.
//
// Buckets hold only what can be rebuilt from the event stream, so they are
// flushed asynchronously instead of fsynced per write (an fsync costs ~1.3
// ms on our disks, and projecting an event takes three writes). A crash can
// lose a suffix of recent writes; the projector then finds the read-model
// checkpoint behind the consumer and re-applies from it.
func kvBucket(ctx context.Context, js jetstream.JetStream, name, desc string, replicas int) (jetstream.KeyValue, error) {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              KVStream(name),
		Description:       desc,
		Subjects:          []string{KVSubject(name, ">")},
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		MaxMsgs:           -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		// No write to a bucket carries a message id (they are
		// compare-and-swaps), and a restart reads every message inside the
		// window to rebuild it: after a burst of writes, seconds of startup
		// for nothing. 100 ms is the server's smallest window.
		Duplicates:  100 * time.Millisecond,
		Discard:     jetstream.DiscardNew,
		AllowDirect: false,
		PersistMode: asyncPersist(replicas),
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

// asyncPersist is how derived and advisory data is stored: acknowledged
// before it is flushed on a single server; replicated streams cannot do
// that (error 10052) and are made durable by their replicas instead.
func asyncPersist(replicas int) jetstream.PersistModeType {
	if replicas > 1 {
		return jetstream.DefaultPersistMode
	}
	return jetstream.AsyncPersistMode
}

// ScanTimeout bounds a JetStream API request that makes the server count
// or scan a whole stream: creating a consumer from the start of ten million
// events, or its info, took more than the client's default 5 s on two busy
// cores.
const ScanTimeout = time.Minute

// ErrStop ends ReadPending early without an error.
var ErrStop = errors.New("bus: stop reading")

// ReadPending calls fn for every message pending on cons when it is called,
// in order, through one pull subscription. An ordered consumer's Fetch
// recreates the consumer every time, and the server then counts its pending
// messages again, which takes time linear in the stream's subjects: reading
// a million-key bucket in batches that way was quadratic.
func ReadPending(ctx context.Context, cons jetstream.Consumer, fn func(jetstream.Msg, *jetstream.MsgMetadata) error) error {
	ictx, cancel := context.WithTimeout(ctx, ScanTimeout)
	info, err := cons.Info(ictx)
	cancel()
	if err != nil {
		return fmt.Errorf("bus: consumer info: %w", err)
	}
	remaining := info.NumPending
	if remaining == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return err
	}
	defer it.Stop()
	for remaining > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			return fmt.Errorf("bus: reading %s (%d messages left): %w", info.Stream, remaining, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		remaining = md.NumPending
		if err := fn(m, md); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}
