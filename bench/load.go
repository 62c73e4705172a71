package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/telapi/telkeys/cli"
)

// LoadUsage explains telkeys bench load.
const LoadUsage = `Usage: telkeys bench load --addr HOST:PORT [--keys FILE] [--conns 64] [--duration 5s]

A closed-loop HTTP load: GET /api/v1/apps with an X-API-Key from --keys in
turn (one a line), on --conns keep-alive connections, for --duration; every
answer must be 200. It prints what it measured as JSON (requests, seconds,
p50 and p99 in ms). telkeys bench runs it as a process of its own in its
node-gate scenario, so that the load generator is not in the process under
test.
`

// LoadFigures is what telkeys bench load prints.
type LoadFigures struct {
	Requests int     `json:"requests"`
	Seconds  float64 `json:"seconds"`
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
}

// RunLoad is telkeys bench load: see LoadUsage.
func RunLoad(ctx context.Context, addr, keysFile string, conns int, duration time.Duration, stdout io.Writer) error {
	if addr == "" || conns < 1 || duration <= 0 {
		return cli.Usage(errors.New("--addr is required; --conns and --duration must be positive"))
	}
	keys := []string{"none"}
	if keysFile != "" {
		f, err := os.Open(keysFile)
		if err != nil {
			return err
		}
		defer f.Close()
		keys = keys[:0]
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k := strings.TrimSpace(sc.Text()); k != "" {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			return errors.New("no keys in " + keysFile)
		}
	}
	l := httpLoad{addr: addr, workers: conns, duration: duration, want: 200, build: func(w, i int, req *fasthttp.Request) {
		req.SetRequestURI("/api/v1/apps")
		req.Header.Set("X-API-Key", keys[(w*7919+i)%len(keys)])
	}}
	r, err := l.run(ctx)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(LoadFigures{Requests: r.requests, Seconds: r.elapsed.Seconds(), P50MS: ms(r.lat.at(0.5)), P99MS: ms(r.lat.at(0.99))})
}
