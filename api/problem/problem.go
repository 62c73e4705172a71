// Package problem is the one error body of telkeys' HTTP APIs and of the
// TelAPI node: an RFC 9457 problem document (application/problem+json)
// with a stable machine code. Which error becomes which problem is decided
// by each API, in one place of its own; this package only writes them.
package problem

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/gofiber/fiber/v2"
)

// Problem is an RFC 9457 problem document with a stable machine code.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// New returns a problem with the status's standard title.
func New(status int, code, detail string) Problem {
	return Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Code: code}
}

// Write sends p. A 503 tells the client when to retry (1 s) unless the
// handler already set Retry-After.
func Write(c *fiber.Ctx, p Problem) error {
	if p.Status == fiber.StatusServiceUnavailable && len(c.Response().Header.Peek(fiber.HeaderRetryAfter)) == 0 {
		c.Set(fiber.HeaderRetryAfter, "1")
	}
	c.Status(p.Status)
	c.Set(fiber.HeaderContentType, "application/problem+json")
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // details show names as typed
	if err := enc.Encode(p); err != nil {
		return err
	}
	return c.Send(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}
