package bus

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// The bus is locked with NATS's decentralized JWT authentication: an
// operator signs the telkeys account, the account signs one user JWT per
// set of credentials, and each user JWT carries its role's permissions
// (the table in Grants). The server trusts the operator and nothing else,
// so an anonymous client, or one with credentials of another operator, is
// refused before it can publish anything.

// Role is what a NATS client of telkeys is, and so what it may do.
type Role string

// The roles.
const (
	// RoleService is telkeys serve: it owns every stream, bucket and
	// consumer.
	RoleService Role = "service"
	// RoleNode is a TelAPI node: it reads the events and the key index,
	// hears heartbeats and reports usage.
	RoleNode Role = "node"
	// RoleAuditor replays the event history and nothing else.
	RoleAuditor Role = "auditor"
)

// Grant is one role's row of the permission table: the subjects it may
// publish and subscribe to. Deny wins over Allow.
type Grant struct {
	PubAllow, PubDeny, SubAllow []string
}

// InboxPrefix is where a role's clients receive replies (nats.go's
// CustomInboxPrefix): a node or an auditor may subscribe to its own
// replies only, not to other clients'.
func InboxPrefix(r Role) string {
	if r == RoleService {
		return "_INBOX"
	}
	return "_INBOX." + string(r)
}

// readConsumers is what reading a stream through one's own consumers
// takes: the stream's info, creating (ordered) consumers, pulling from
// them, their info, and deleting them when done. Consumer names are
// random and the names of others cannot be listed.
func readConsumers(stream string) []string {
	api := ReadersAPIPrefix + "."
	return []string{
		api + "STREAM.INFO." + stream,
		api + "CONSUMER.CREATE." + stream + ".>",
		api + "CONSUMER.INFO." + stream + ".*",
		api + "CONSUMER.MSG.NEXT." + stream + ".*",
		api + "CONSUMER.DELETE." + stream + ".*",
	}
}

// notTheProjector keeps readers of the event stream away from the
// projector's durable consumer: pulling from it would steal its events,
// and recreating or deleting it would stop the read models.
func notTheProjector() []string {
	api, c := ReadersAPIPrefix+".", EventStream+"."+ProjectorConsumer
	return []string{
		api + "CONSUMER.CREATE." + c, api + "CONSUMER.CREATE." + c + ".>",
		api + "CONSUMER.MSG.NEXT." + c, api + "CONSUMER.DELETE." + c,
	}
}

// Grants is the permission table, for credentials of role r named name.
// Everything not allowed is refused.
func Grants(r Role, name string) (Grant, error) {
	switch r {
	case RoleService:
		return Grant{PubAllow: []string{">"}, SubAllow: []string{">"}}, nil
	case RoleNode:
		keyIndex := ObjectStream(BucketKeyIndex)
		pub := append(readConsumers(EventStream), readConsumers(UsageStream)...)
		pub = append(pub, readConsumers(QuotaStream)...)
		pub = append(pub, readConsumers(keyIndex)...)
		pub = append(pub,
			ReadersAPIPrefix+".DIRECT.GET."+keyIndex+".>", // the index's metadata
			ReadersAPIPrefix+".STREAM.MSG.GET."+keyIndex,
			"$JS.FC."+keyIndex+".>",                          // flow control of its chunks
			ReadersAPIPrefix+".DIRECT.GET."+UsageStream+".>", // a team's count today
			UsageSubjectPrefix+">",                           // usage increments
			ReadersAPIPrefix+".DIRECT.GET."+QuotaStream+".>", // a team's reservations today
			QuotaSubjectPrefix+">",                           // reservations under a daily limit
			ReadersAPIPrefix+".STREAM.INFO."+LastUsedStream,
			LastUsedSubjectPrefix+">",     // last-used times
			NodeAppliedSubject(name, "*"), // what it has applied, under its own name
		)
		return Grant{PubAllow: pub, PubDeny: notTheProjector(),
			SubAllow: []string{InboxPrefix(r) + ".>", HeartbeatSubject}}, nil
	case RoleAuditor:
		pub := append(readConsumers(EventStream), ReadersAPIPrefix+".STREAM.MSG.GET."+EventStream)
		return Grant{PubAllow: pub, PubDeny: notTheProjector(), SubAllow: []string{InboxPrefix(r) + ".>"}}, nil
	}
	return Grant{}, fmt.Errorf("bus: unknown role %q; want service, node or auditor", r)
}

// ReadersAPIPrefix is the JetStream API of the telkeys account as nodes
// and auditors see it from theirs (bus.JetStream uses it).
const ReadersAPIPrefix = "$JS.TELKEYS.API"

// readerServices are the subjects nodes and auditors may publish, served
// by the telkeys account: the union of their rows of the table, but for
// the nodes' reports, which telkeys imports from the readers' account.
func readerServices() []string {
	var out []string
	for _, r := range []Role{RoleNode, RoleAuditor} {
		g, _ := Grants(r, "x")
		for _, s := range g.PubAllow {
			if !strings.HasPrefix(s, NodesAppliedPrefix) && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// Authority holds the keys that sign telkeys' NATS identities: the
// operator, the telkeys account and the system account. Their seeds live
// in one directory, readable by the owner only.
type Authority struct {
	operator, account, system, readers nkeys.KeyPair
}

// Names of the seed files in an authority's directory.
const (
	operatorSeed = "operator.nk"
	accountSeed  = "account.nk"
	systemSeed   = "system.nk"
	readersSeed  = "readers.nk"
)

// AuthDir is where telkeys serve keeps its authority, under its data dir.
func AuthDir(dataDir string) string { return filepath.Join(dataDir, "nats-auth") }

// LoadAuthority reads the authority in dir, creating it (mode 0700, seeds
// 0600) when create is set and dir holds none.
func LoadAuthority(dir string, create bool) (*Authority, error) {
	var a Authority
	for _, k := range []struct {
		file string
		kp   *nkeys.KeyPair
		make func() (nkeys.KeyPair, error)
	}{
		{operatorSeed, &a.operator, nkeys.CreateOperator},
		{accountSeed, &a.account, nkeys.CreateAccount},
		{systemSeed, &a.system, nkeys.CreateAccount},
		{readersSeed, &a.readers, nkeys.CreateAccount},
	} {
		path := filepath.Join(dir, k.file)
		seed, err := os.ReadFile(path)
		// The readers' account came after the others: an authority made
		// before it gets one.
		if errors.Is(err, os.ErrNotExist) && (create || k.file == readersSeed) {
			seed, err = newSeed(dir, path, k.make)
		}
		if err != nil {
			return nil, fmt.Errorf("bus: NATS authority: %w", err)
		}
		if *k.kp, err = nkeys.FromSeed(bytes.TrimSpace(seed)); err != nil {
			return nil, fmt.Errorf("bus: NATS authority: %s: %w", path, err)
		}
	}
	return &a, nil
}

func newSeed(dir, path string, make func() (nkeys.KeyPair, error)) ([]byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	kp, err := make()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(append(seed, '\n'))
	return seed, errors.Join(err, f.Close())
}

// ServerConfig is the nats-server configuration that makes a server trust
// this authority and only it: the operator, the system account, and the
// telkeys account (JetStream enabled) preloaded into a memory resolver.
// The embedded server and every node of a cluster use the same text.
func (a *Authority) ServerConfig() (string, error) {
	opPub, _ := a.operator.PublicKey()
	accPub, _ := a.account.PublicKey()
	sysPub, _ := a.system.PublicKey()
	op := jwt.NewOperatorClaims(opPub)
	op.Name = "telkeys"
	op.SystemAccount = sysPub
	opJWT, err := op.Encode(a.operator)
	if err != nil {
		return "", err
	}
	acc := jwt.NewAccountClaims(accPub)
	acc.Name = "TELKEYS"
	acc.Limits.JetStreamLimits = jwt.JetStreamLimits{
		MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit,
		MaxAckPending: jwt.NoLimit, MemoryMaxStreamBytes: jwt.NoLimit, DiskMaxStreamBytes: jwt.NoLimit,
	}
	accJWT, err := acc.Encode(a.operator)
	if err != nil {
		return "", err
	}
	readersPub, _ := a.readers.PublicKey()
	readers := jwt.NewAccountClaims(readersPub)
	readers.Name = "TELKEYS_READERS"
	// Nodes and auditors live in an account of their own, with no streams:
	// NATS checks the subject a client publishes to, not the reply subject
	// it names, and the server answers a JetStream request on that reply
	// subject in the requester's account. In the telkeys account a reply
	// subject could name an event or KV subject and have the answer stored
	// there; in the readers' account it reaches no stream. The readers
	// import exactly the API subjects of the permission table.
	for _, local := range readerServices() {
		s := local
		if rest, ok := strings.CutPrefix(local, ReadersAPIPrefix); ok {
			s = "$JS.API" + rest
		}
		acc.Exports.Add(&jwt.Export{Name: s, Subject: jwt.Subject(s), Type: jwt.Service, ResponseType: jwt.ResponseTypeStream})
		readers.Imports.Add(&jwt.Import{Name: s, Subject: jwt.Subject(s), LocalSubject: jwt.RenamingSubject(local), Account: accPub, Type: jwt.Service})
	}
	for _, s := range []string{HeartbeatSubject, InboxPrefix(RoleNode) + ".>", InboxPrefix(RoleAuditor) + ".>"} {
		acc.Exports.Add(&jwt.Export{Name: s, Subject: jwt.Subject(s), Type: jwt.Stream})
		readers.Imports.Add(&jwt.Import{Name: s, Subject: jwt.Subject(s), Account: accPub, Type: jwt.Stream})
	}
	applied := NodesAppliedPrefix + ">"
	readers.Exports.Add(&jwt.Export{Name: applied, Subject: jwt.Subject(applied), Type: jwt.Stream})
	acc.Imports.Add(&jwt.Import{Name: applied, Subject: jwt.Subject(applied), Account: readersPub, Type: jwt.Stream})
	accJWT, err = acc.Encode(a.operator)
	if err != nil {
		return "", err
	}
	readersJWT, err := readers.Encode(a.operator)
	if err != nil {
		return "", err
	}
	sys := jwt.NewAccountClaims(sysPub)
	sys.Name = "SYS"
	sysJWT, err := sys.Encode(a.operator)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`# Generated by telkeys from its NATS authority (%s): trust the telkeys
# operator only. Clients need credentials from "telkeys credentials".
operator: %s
system_account: %s
resolver: MEMORY
resolver_preload: {
  %s: %s
  %s: %s
  %s: %s
}
`, opPub, opJWT, sysPub, accPub, accJWT, readersPub, readersJWT, sysPub, sysJWT), nil
}

// AccountID is the public key of the telkeys account: the name under
// which the server stores its streams.
func (a *Authority) AccountID() string {
	pub, _ := a.account.PublicKey()
	return pub
}

// Credentials mints a user of role r, named name, valid for ttl (0: no
// expiry), and returns it as a standard .creds file (the nats CLI's
// --creds).
func (a *Authority) Credentials(r Role, name string, ttl time.Duration) ([]byte, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("bus: credentials name %q: want 1-64 characters of A-Z a-z 0-9 _ -", name)
	}
	g, err := Grants(r, name)
	if err != nil {
		return nil, err
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	pub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	uc.Tags.Add("role:" + string(r))
	uc.Permissions.Pub.Allow.Add(g.PubAllow...)
	uc.Permissions.Pub.Deny.Add(g.PubDeny...)
	uc.Permissions.Sub.Allow.Add(g.SubAllow...)
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	issuer := a.readers
	if r == RoleService {
		issuer = a.account
	}
	token, err := uc.Encode(issuer)
	if err != nil {
		return nil, err
	}
	seed, err := user.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(token, seed)
}

// ValidName reports whether s can name credentials or a node: one NATS
// subject token of 1-64 characters of [A-Za-z0-9_-].
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ErrCredentials is a credentials file that cannot be used.
var ErrCredentials = errors.New("bus: unusable NATS credentials")

// CheckCredentials reads a .creds file and says why it cannot be used:
// missing, unreadable, malformed, or expired. It returns the role and the
// name the credentials carry.
func CheckCredentials(path string) (Role, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("%w: %s: %v", ErrCredentials, path, errors.Unwrap(err))
	}
	return checkCredentials(data, path)
}

func checkCredentials(data []byte, source string) (Role, string, error) {
	fail := func(why string, args ...any) (Role, string, error) {
		return "", "", fmt.Errorf("%w: %s: %s", ErrCredentials, source, fmt.Sprintf(why, args...))
	}
	token, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		return fail("no user JWT in it")
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return fail("its user JWT does not decode: %v", err)
	}
	if _, err := jwt.ParseDecoratedUserNKey(data); err != nil {
		return fail("no user seed in it")
	}
	if uc.Expires > 0 && time.Now().Unix() >= uc.Expires {
		return fail("expired at %s", time.Unix(uc.Expires, 0).UTC().Format(time.RFC3339))
	}
	for _, tag := range uc.Tags {
		if r, ok := strings.CutPrefix(tag, "role:"); ok {
			if _, err := Grants(Role(r), uc.Name); err == nil {
				return Role(r), uc.Name, nil
			}
		}
	}
	return fail("it names no telkeys role")
}

// WriteFile writes data readable by its owner only, replacing path.
// The temporary file is new (O_EXCL, so no planted link is followed) and
// synced before it takes path's place.
func WriteFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, nothing to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
