// Package deploy holds deployment files: NATS server configurations for a
// three-node JetStream cluster behind any number of telkeys instances. Its
// tests validate them with nats-server's own config parser, since they
// cannot be run here.
package deploy
