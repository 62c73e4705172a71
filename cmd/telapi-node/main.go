// Command telapi-node is a small TelAPI node that verifies API keys with
// keyauth; see package node. Run it beside `make run`:
//
//	bin/telapi-node --nats-url nats://127.0.0.1:4222 --http-addr :8081
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/telapi/telkeys/cmd/telapi-node/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(node.Run(ctx, os.Args[1:], os.Stderr))
}
