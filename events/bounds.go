package events

import (
	"errors"
)

var errLength = errors.New("a length exceeds the input")

// checkLengths walks the first msgpack value in b and refuses any header
// that claims more bytes or items than the rest of b can hold, so that the
// decoder never allocates what a hostile header claims.
func checkLengths(b []byte) error {
	_, err := skipValue(b, 0)
	return err
}

func skipValue(b []byte, depth int) ([]byte, error) {
	if depth > 100 {
		return nil, errors.New("nesting too deep")
	}
	if len(b) == 0 {
		return nil, errLength
	}
	c, b := b[0], b[1:]
	size := func(k int) (uint64, []byte, error) { // a big-endian k-byte length
		if len(b) < k {
			return 0, nil, errLength
		}
		var n uint64
		for _, x := range b[:k] {
			n = n<<8 | uint64(x)
		}
		return n, b[k:], nil
	}
	skip := func(n uint64, b []byte) ([]byte, error) {
		if n > uint64(len(b)) {
			return nil, errLength
		}
		return b[n:], nil
	}
	items := func(n uint64, b []byte) ([]byte, error) {
		if n > uint64(len(b)) { // every item takes at least one byte
			return nil, errLength
		}
		var err error
		for range n {
			if b, err = skipValue(b, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3: // fixint, nil, bool
		return b, nil
	case c <= 0x8f: // fixmap
		return items(2*uint64(c&0x0f), b)
	case c <= 0x9f: // fixarray
		return items(uint64(c&0x0f), b)
	case c <= 0xbf: // fixstr
		return skip(uint64(c&0x1f), b)
	}
	var k int // width of the length field
	switch c {
	case 0xca, 0xce, 0xd2: // float32, uint32, int32
		return skip(4, b)
	case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
		return skip(8, b)
	case 0xcc, 0xd0:
		return skip(1, b)
	case 0xcd, 0xd1:
		return skip(2, b)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext: type + 1, 2, 4, 8, 16 bytes
		return skip(1+uint64(1)<<(c-0xd4), b)
	case 0xc4, 0xd9, 0xc7, 0xdc, 0xde: // bin8, str8, ext8 | array16, map16 below
		k = 1
	case 0xc5, 0xda, 0xc8:
		k = 2
	case 0xc6, 0xdb, 0xc9, 0xdd, 0xdf:
		k = 4
	default: // 0xc1, never used
		return nil, errors.New("invalid msgpack code")
	}
	if c == 0xdc || c == 0xde {
		k = 2
	}
	n, b, err := size(k)
	if err != nil {
		return nil, err
	}
	switch c {
	case 0xc7, 0xc8, 0xc9: // ext: type byte + data
		return skip(n+1, b)
	case 0xdc, 0xdd:
		return items(n, b)
	case 0xde, 0xdf:
		return items(2*n, b)
	}
	return skip(n, b)
}
