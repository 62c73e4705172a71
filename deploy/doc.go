// Package deploy holds deployment files: the NATS server configurations of
// a three-node JetStream cluster behind any number of telkeys instances,
// locked like the embedded server (telkeys' NATS authority, one role per
// client, TLS between machines). Its tests run the configurations as a
// real cluster on loopback and prove every role's permissions there.
package deploy
