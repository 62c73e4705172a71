// Command telapi-node is a small TelAPI node that verifies API keys with
// keyauth; see package node. Run it beside `make run`:
//
//	bin/telapi-node --nats-url nats://127.0.0.1:4222 --nats-creds node.creds \
//	  --events-public-key events.pub --http-addr :8081
//
// This file only reads flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/telapi/telkeys/cli"
	"github.com/telapi/telkeys/node"
)

const usage = `Usage: telapi-node [flags]

A TelAPI node: POST /api/v1/call-tokens (CREATE_CALL_TOKEN),
GET /api/v1/call-tokens/{id} (READ_CALL_TOKEN) and GET /api/v1/apps
(READ_TEAM_APPS) take an API key in "Authorization: Bearer" or "X-API-Key",
verified in memory by keyauth. POST /api/v1/webhooks takes no API key: it
checks an HMAC-SHA256 of its body in "X-Telapi-Signature: sha256=<hex>".
"telapi-node --version" prints the version, commit and Go version of this build.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cli.ExitCode(run(ctx, os.Args[1:]), os.Stderr, "telapi-node"))
}

func run(ctx context.Context, args []string) error {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version") {
		fmt.Println(cli.Version("telapi-node"))
		return nil
	}
	fs := flag.NewFlagSet("telapi-node", flag.ContinueOnError)
	var c node.Config
	fs.StringVar(&c.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server(s) of telkeys, comma-separated")
	fs.StringVar(&c.NATSCreds, "nats-creds", "", "node credentials (telkeys credentials --role node); required")
	fs.StringVar(&c.NATSCA, "nats-ca", "", "CA (PEM) that signed the NATS servers' TLS certificates")
	fs.StringVar(&c.EventsPublicKey, "events-public-key", "", "telkeys' event-signing public key(s) (PEM, telkeys events-key --out FILE); required: only what they signed is believed")
	fs.StringVar(&c.HTTPAddr, "http-addr", ":8081", "address of the node's HTTP API")
	fs.StringVar(&c.Name, "name", "", "node name, unique among nodes ([A-Za-z0-9_-], default: <host>-<pid>)")
	fs.DurationVar(&c.MaxStaleness, "max-staleness", 10*time.Second, "answer 503 after hearing nothing from telkeys for this long")
	fs.BoolVar(&c.FailOpen, "fail-open", false, "keep answering from the last known state when stale (deleted keys may keep working while cut off)")
	fs.StringVar(&c.WebhookSecret, "webhook-secret", "", "HMAC secret of /api/v1/webhooks; empty: a random one (webhooks always refused)")
	floor := fs.String("bench-floor", "", "FOR telkeys bench ONLY: serve GET /api/v1/apps with key checking off (off) or from a bare Fiber route (bare), on a loopback --http-addr, without NATS")
	logCfg := cli.LogFlags(fs)
	if err := cli.Parse(fs, args, os.Stderr, "TELAPI_NODE", usage); err != nil {
		return err
	}
	if *floor != "" {
		log, err := logCfg.NewLogger(os.Stderr)
		if err != nil {
			return err
		}
		return node.ServeFloor(ctx, *floor, c.HTTPAddr, log)
	}
	if err := c.Validate(); err != nil {
		return cli.Usage(err)
	}
	log, err := logCfg.NewLogger(os.Stderr)
	if err != nil {
		return err
	}
	return node.Serve(ctx, c, log)
}
