package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/commands"
)

func tokenCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	role := fs.String("role", "", "role of the token: superadmin, auditor, member or node (required)")
	team := fs.String("team", "", "team id, required for members and refused for other roles")
	sub := fs.String("sub", "", "subject (who holds the token); defaults to \"<role>-cli\"")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid, e.g. 30m or 24h")
	dataDir := fs.String("data-dir", "./data", "data directory of the service, where its generated secret is kept")
	secret := fs.String("auth-secret", "", "HS256 secret (at least 32 bytes); if empty, the one kept in --data-dir")
	intro := "Usage: telkeys token --role R [--team T] [--sub S] [--ttl D]\n\n" +
		"Prints a bearer token signed with the same secret that \"telkeys serve\" uses\n" +
		"(same --data-dir and --auth-secret), and nothing else.\n"
	if err := parseFlags(fs, args, stderr, intro); err != nil {
		return err
	}
	if *role == "" {
		return errors.New("--role is required")
	}
	if *sub == "" {
		*sub = *role + "-cli"
	}
	key, err := auth.ResolveSecret(*secret, *dataDir)
	if err != nil {
		return err
	}
	a, err := auth.New(key, commands.ValidTeamID)
	if err != nil {
		return err
	}
	tok, err := a.Mint(auth.Claims{Subject: *sub, Role: auth.Role(*role), Team: *team}, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
