package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Issuer is the platform's own identity provider, whose tokens telkeys
// accepts besides its own HS256 ones: signed RS256, ES256 or EdDSA by a
// key of the JWKS at JWKSURL, from Issuer, for Audience, with the role and
// team in the claims named RoleClaim and TeamClaim.
type Issuer struct {
	JWKSURL   string
	Issuer    string
	Audience  string
	RoleClaim string // default "role"
	TeamClaim string // default "team"
	// Refresh is how often the key set is fetched again (default 1 h); a
	// token with a kid the set lacks fetches it at most every
	// UnknownKIDEvery (default 1 min). Keys already fetched keep working
	// while the provider is unreachable.
	Refresh         time.Duration
	UnknownKIDEvery time.Duration
	Log             *slog.Logger
}

// issuerAlgs are the algorithms accepted from the issuer.
var issuerAlgs = []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg()}

// Validate reports every problem at once.
func (c Issuer) Validate() error {
	var errs []error
	if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--jwks-url %q: want an http(s) URL", c.JWKSURL))
	}
	if c.Issuer == "" {
		errs = append(errs, errors.New("--jwt-issuer is required with --jwks-url: tokens of any other issuer are refused"))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("--jwt-audience is required with --jwks-url: tokens meant for another service are refused"))
	}
	return errors.Join(errs...)
}

type issuer struct {
	cfg  Issuer
	keys keyfunc.Keyfunc
}

// TrustIssuer makes a accept the issuer's tokens too. The key set is
// fetched now and refreshed in the background until ctx ends; a provider
// unreachable now is not an error (its tokens fail until it answers).
func (a *Authority) TrustIssuer(ctx context.Context, c Issuer) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.RoleClaim == "" {
		c.RoleClaim = "role"
	}
	if c.TeamClaim == "" {
		c.TeamClaim = "team"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	unknown := c.UnknownKIDEvery
	if unknown <= 0 {
		unknown = time.Minute
	}
	k, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{c.JWKSURL}, keyfunc.Override{
		RefreshInterval:   c.Refresh,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(unknown), 1),
		RateLimitWaitMax:  time.Millisecond, // an unknown kid never holds a request
		HTTPTimeout:       5 * time.Second,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				c.Log.Warn("auth: the identity provider's key set could not be fetched; keys fetched before still work", "url", u, "err", err)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("auth: --jwks-url: %w", err)
	}
	a.issuer = &issuer{cfg: c, keys: k}
	return nil
}

// verifyIssued checks a token that is not HS256 against the issuer.
func (a *Authority) verifyIssued(token string) (Claims, error) {
	if a.issuer == nil {
		return Claims{}, fmt.Errorf("%w: bad signature or algorithm", ErrUnauthorized)
	}
	c := a.issuer.cfg
	mc := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, mc, a.issuer.keys.Keyfunc,
		jwt.WithValidMethods(issuerAlgs),
		jwt.WithIssuer(c.Issuer),
		jwt.WithAudience(c.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(a.now),
	)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %s", ErrUnauthorized, reason(err))
	}
	sub, _ := mc.GetSubject()
	exp, _ := mc.GetExpirationTime()
	role, _ := mc[c.RoleClaim].(string)
	team, _ := mc[c.TeamClaim].(string)
	cl := Claims{Subject: sub, Role: Role(role), Team: team, Expires: exp.Time}
	// A role that is not one of ours is refused, never mapped to a default.
	if err := a.check(cl); err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrUnauthorized, err)
	}
	return cl, nil
}

// isHS256 reports whether a token's header names HS256, without checking
// anything else.
func isHS256(token string) bool {
	t, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	return err == nil && t.Method != nil && t.Method.Alg() == jwt.SigningMethodHS256.Alg()
}
