package e2e

import (
	"net/url"
	"testing"

	"github.com/telapi/telkeys/bus/bustest"
)

// cutOffNATS is a proxy to s's NATS server, for a client to connect
// through and be cut off by.
func cutOffNATS(t testing.TB, s *testService) *bustest.CutProxy {
	t.Helper()
	u, err := url.Parse(s.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	return bustest.NewCutProxy(t, u.Host)
}
