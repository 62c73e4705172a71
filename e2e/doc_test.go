// Package e2e holds the end-to-end tests: real telkeys and telapi-node
// (in-process through their packages, or as the built binaries), a real
// embedded JetStream, real HTTP, and a real browser for the web UI.
//
// They test only what can be seen from outside: HTTP answers, the event
// stream, logs, files and exit codes. Each package's own tests cover its
// internals; these check that the parts hold together.
//
//   - harness_test.go: TestMain, an in-process telkeys and its HTTP and
//     JetStream helpers.
//   - nodes_test.go: TelAPI nodes and processes: node HTTP clients,
//     polling for an outcome, log watching, binaries run as processes.
//   - cutproxy_test.go: a TCP proxy that cuts a client off from NATS.
//   - the other files test one concern each, as their names say.
package e2e
