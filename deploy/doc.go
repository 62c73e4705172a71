// Package deploy holds deployment files: NATS server configurations for a
// three-node JetStream cluster behind any number of telkeys instances, and
// the accounts that give auditors read-only access to the event history.
// Its tests validate them with nats-server's own config parser, and run a
// server with the accounts to prove the auditor cannot write.
package deploy
