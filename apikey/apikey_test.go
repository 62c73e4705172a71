package apikey

import (
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

func TestGenerateProducesParseableUniqueKeys(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		k, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != Len || !strings.HasPrefix(k, Prefix) {
			t.Fatalf("bad shape %d", len(k))
		}
		if err := Parse(k); err != nil {
			t.Fatalf("Parse(Generate()) = %v", err)
		}
		if seen[k] {
			t.Fatal("duplicate key")
		}
		seen[k] = true
	}
}

func TestGenerateUsesWholeAlphabet(t *testing.T) {
	counts := map[byte]int{}
	for range 2000 {
		k, _ := Generate()
		for i := range RandomLen {
			counts[Random(k)[i]]++
		}
	}
	if len(counts) != 62 {
		t.Fatalf("saw %d distinct characters, want 62", len(counts))
	}
	// 60000 draws over 62 symbols: each expected ≈968; a biased generator
	// (e.g. b%62 over all 256 bytes) skews the first 8 symbols by ~25%.
	for c, n := range counts {
		if n < 800 || n > 1150 {
			t.Errorf("character %q drawn %d times", c, n)
		}
	}
}

func TestParseRejects(t *testing.T) {
	good, _ := Generate()
	cases := map[string]struct {
		in   string
		want error
	}{
		"empty":        {"", ErrLength},
		"short":        {good[:Len-1], ErrLength},
		"long":         {good + "A", ErrLength},
		"prefix":       {"tx_" + good[3:], ErrPrefix},
		"alphabet":     {good[:10] + "-" + good[11:], ErrAlphabet},
		"unicode":      {good[:10] + "é" + good[12:], ErrAlphabet},
		"checksum":     {good[:Len-1] + flip(good[Len-1]), ErrChecksum},
		"random typo":  {good[:5] + flip(good[5]) + good[6:], ErrChecksum},
		"nul":          {good[:7] + "\x00" + good[8:], ErrAlphabet},
		"github token": {"ghp_" + strings.Repeat("a", Len-4), ErrPrefix},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if err := Parse(c.in); !errors.Is(err, c.want) {
				t.Fatalf("Parse = %v, want %v", err, c.want)
			}
		})
	}
}

// Every single-character substitution must fail: CRC-32 detects all bursts
// of 32 bits or less.
func TestEverySubstitutionFailsChecksum(t *testing.T) {
	k, _ := Generate()
	for i := len(Prefix); i < Len; i++ {
		for c := 0; c < 62; c++ {
			ch := "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[c]
			if ch == k[i] {
				continue
			}
			bad := k[:i] + string(ch) + k[i+1:]
			if Parse(bad) == nil {
				t.Fatalf("substitution at %d accepted", i)
			}
		}
	}
}

func TestHashMaskLast4(t *testing.T) {
	k, _ := Generate()
	h := HashOf(k)
	back, err := ParseHash(h.String())
	if err != nil || back != h {
		t.Fatalf("ParseHash round trip failed: %v", err)
	}
	if HashOf(k+"x") == h {
		t.Fatal("distinct keys, same hash")
	}
	if Last4(k) != k[Len-4:] {
		t.Fatal("Last4")
	}
	if got := Mask(Last4(k)); got != "tk_…"+k[Len-4:] {
		t.Fatalf("Mask = %q", got)
	}
	if strings.Contains(Mask(Last4(k)), Random(k)[:8]) {
		t.Fatal("mask reveals the random part")
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	k, _ := Generate()
	if n := testing.AllocsPerRun(100, func() { _ = Parse(k) }); n != 0 {
		t.Fatalf("Parse allocates %v times", n)
	}
}

func FuzzParse(f *testing.F) {
	k, _ := Generate()
	for _, s := range []string{"", "tk_", k, k[:Len-1], k + "0", "tk_" + strings.Repeat("0", RandomLen+ChecksumLen), "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := Parse(s)
		if err == nil {
			// Anything accepted must have the exact shape and a correct checksum.
			if len(s) != Len || !strings.HasPrefix(s, Prefix) {
				t.Fatalf("accepted malformed %q", s)
			}
			var sum [ChecksumLen]byte
			putChecksum(sum[:], crc32.ChecksumIEEE([]byte(s[:Len-ChecksumLen])))
			if string(sum[:]) != s[Len-ChecksumLen:] {
				t.Fatalf("accepted bad checksum %q", s)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	k, _ := Generate()
	b.ReportAllocs()
	for b.Loop() {
		_ = Parse(k)
	}
}

func BenchmarkHashOf(b *testing.B) {
	k, _ := Generate()
	b.ReportAllocs()
	for b.Loop() {
		_ = HashOf(k)
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}
