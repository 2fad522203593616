package decode

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

var (
	errNotObject = errors.New("not a JSON object")
	errRange     = errors.New("number out of range")
)

// plain marks the bytes a string can hold as they are: everything but the
// quote, the backslash, control characters and the bytes of multi-byte UTF-8
// sequences, which all need a closer look. Scanning the common ASCII case is
// then one table lookup per byte.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

func skipSpace(v []byte, i int) int {
	for i < len(v) && v[i] <= ' ' && isSpace(v[i]) {
		i++
	}
	return i
}

// syntaxError says what was wanted at v[i] and what is there instead.
func syntaxError(v []byte, i int, want string) error {
	return fmt.Errorf("invalid JSON at byte %d: want %s, got %s", i, want, describeByte(v, i))
}

func describeByte(v []byte, i int) string {
	if i >= len(v) {
		return "end of input"
	}
	if c := v[i]; c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("%q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", v[i])
}

// maxToken bounds how much of a bad value an error quotes, so that a huge
// record does not become a huge dead-letter reason.
const maxToken = 40

// token quotes the well-formed JSON value v[i:end] for an error message.
func token(v []byte, i, end int) string {
	t := v[i:end]
	if len(t) <= maxToken {
		return string(t)
	}
	n := maxToken
	for n > 0 && !utf8.RuneStart(t[n]) {
		n--
	}
	return string(t[:n]) + "..."
}

// skipString checks the string whose body starts at v[i], just after the
// opening quote, and returns the index after its closing quote and whether
// it has escapes.
func skipString(v []byte, i int) (end int, escaped bool, err error) {
	for {
		i = scanPlain(v, i)
		if i >= len(v) {
			return 0, false, errUnterminated(v)
		}
		switch c := v[i]; {
		case c == '"':
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(v) {
				return 0, false, errUnterminated(v)
			}
			switch v[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if _, ok := hex4(v, i+2); !ok {
					return 0, false, errEscape(v, i)
				}
				i += 6
			default:
				return 0, false, errEscape(v, i)
			}
		case c < 0x20:
			return 0, false, errControl(v, i)
		default:
			r, n := utf8.DecodeRune(v[i:])
			if r == utf8.RuneError && n <= 1 {
				return 0, false, errUTF8(i)
			}
			i += n
		}
	}
}

// appendString appends the unescaped body of the string that starts at v[i],
// just after the opening quote, to dst, and returns the index after the
// closing quote.
func appendString(dst, v []byte, i int) ([]byte, int, error) {
	for {
		start := i
		i = scanPlain(v, i)
		dst = append(dst, v[start:i]...)
		if i >= len(v) {
			return dst, 0, errUnterminated(v)
		}
		switch c := v[i]; {
		case c == '"':
			return dst, i + 1, nil
		case c == '\\':
			if i+1 >= len(v) {
				return dst, 0, errUnterminated(v)
			}
			e := v[i+1]
			switch e {
			case '"', '\\', '/':
				dst = append(dst, e)
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r, ok := hex4(v, i+2)
				if !ok {
					return dst, 0, errEscape(v, i)
				}
				i += 6
				if r >= 0xD800 && r < 0xE000 {
					// A high surrogate followed by an escaped low one is
					// one character; any other surrogate is U+FFFD.
					if r < 0xDC00 && i+1 < len(v) && v[i] == '\\' && v[i+1] == 'u' {
						if r2, ok := hex4(v, i+2); ok && r2 >= 0xDC00 && r2 < 0xE000 {
							r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
							i += 6
							dst = utf8.AppendRune(dst, r)
							continue
						}
					}
					r = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, r)
				continue
			default:
				return dst, 0, errEscape(v, i)
			}
			i += 2
		case c < 0x20:
			return dst, 0, errControl(v, i)
		default:
			r, n := utf8.DecodeRune(v[i:])
			if r == utf8.RuneError && n <= 1 {
				return dst, 0, errUTF8(i)
			}
			dst = append(dst, v[i:i+n]...)
			i += n
		}
	}
}

// hex4 decodes the four hex digits at v[i:].
func hex4(v []byte, i int) (rune, bool) {
	if i+4 > len(v) {
		return 0, false
	}
	var r rune
	for _, c := range v[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func errUnterminated(v []byte) error {
	return fmt.Errorf("invalid JSON at byte %d: unterminated string", len(v))
}

func errEscape(v []byte, i int) error {
	end := min(i+2, len(v))
	if end == i+2 && v[i+1] == 'u' {
		end = min(i+6, len(v))
	}
	for end > i+2 && !utf8.Valid(v[i:end]) {
		end--
	}
	return fmt.Errorf("invalid JSON at byte %d: invalid escape %q", i, v[i:end])
}

func errControl(v []byte, i int) error {
	return fmt.Errorf("invalid JSON at byte %d: control character 0x%02x in a string", i, v[i])
}

func errUTF8(i int) error {
	return fmt.Errorf("invalid JSON at byte %d: invalid UTF-8", i)
}

// skipValue checks the value at v[i] and returns the index after it. depth is
// the nesting depth of the container the value is in. It keeps no stack:
// bit k of arrays says whether the k-th container it opened is an array, so
// it cannot overflow whatever the input.
func skipValue(v []byte, i, depth int) (int, error) {
	var arrays uint64
	open := 0 // containers opened and not yet closed
	for {
		// A value starts at v[i].
		if i >= len(v) {
			return 0, syntaxError(v, i, "a value")
		}
		switch c := v[i]; c {
		case '"':
			end, _, err := skipString(v, i+1)
			if err != nil {
				return 0, err
			}
			i = end
		case '{', '[':
			if depth+open+1 > MaxDepth {
				return 0, fmt.Errorf("invalid JSON at byte %d: nested deeper than %d", i, MaxDepth)
			}
			arrays <<= 1
			open++
			i = skipSpace(v, i+1)
			if c == '[' {
				arrays |= 1
				if i < len(v) && v[i] == ']' {
					i++
					arrays >>= 1
					open--
					break
				}
				continue // to the first element
			}
			if i < len(v) && v[i] == '}' {
				i++
				arrays >>= 1
				open--
				break
			}
			var err error
			if i, err = skipKey(v, i); err != nil {
				return 0, err
			}
			continue // to the first member's value
		case 't':
			if !hasLiteral(v, i, "true") {
				return 0, syntaxError(v, i, "a value")
			}
			i += 4
		case 'f':
			if !hasLiteral(v, i, "false") {
				return 0, syntaxError(v, i, "a value")
			}
			i += 5
		case 'n':
			if !hasLiteral(v, i, "null") {
				return 0, syntaxError(v, i, "a value")
			}
			i += 4
		default:
			if c != '-' && (c < '0' || c > '9') {
				return 0, syntaxError(v, i, "a value")
			}
			var err error
			if i, err = skipNumber(v, i); err != nil {
				return 0, err
			}
		}
		// A value ended at v[i]: close containers until one goes on.
		for {
			if open == 0 {
				return i, nil
			}
			i = skipSpace(v, i)
			if i >= len(v) {
				return 0, syntaxError(v, i, "',' or a closing bracket")
			}
			if v[i] == ',' {
				i = skipSpace(v, i+1)
				if arrays&1 == 0 {
					var err error
					if i, err = skipKey(v, i); err != nil {
						return 0, err
					}
				}
				break
			}
			closer := byte('}')
			if arrays&1 == 1 {
				closer = ']'
			}
			if v[i] != closer {
				return 0, syntaxError(v, i, fmt.Sprintf("',' or '%c'", closer))
			}
			i++
			arrays >>= 1
			open--
		}
	}
}

// skipKey checks an object's key and colon at v[i] and returns the index of
// the value after them.
func skipKey(v []byte, i int) (int, error) {
	if i >= len(v) || v[i] != '"' {
		return 0, syntaxError(v, i, "a key")
	}
	i, _, err := skipString(v, i+1)
	if err != nil {
		return 0, err
	}
	i = skipSpace(v, i)
	if i >= len(v) || v[i] != ':' {
		return 0, syntaxError(v, i, "':' after a key")
	}
	return skipSpace(v, i+1), nil
}

func hasLiteral(v []byte, i int, lit string) bool {
	return len(v)-i >= len(lit) && string(v[i:i+len(lit)]) == lit
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// skipNumber checks the JSON number at v[i] and returns the index after it.
func skipNumber(v []byte, i int) (int, error) {
	if v[i] == '-' {
		i++
	}
	if i >= len(v) || !isDigit(v[i]) {
		return 0, syntaxError(v, i, "a digit")
	}
	if v[i] == '0' {
		i++
	} else {
		_, i = digits(v, i)
	}
	return skipFraction(v, i)
}

// skipFraction checks the optional fraction and exponent of a number at v[i].
func skipFraction(v []byte, i int) (int, error) {
	if i < len(v) && v[i] == '.' {
		i++
		if i >= len(v) || !isDigit(v[i]) {
			return 0, syntaxError(v, i, "a digit")
		}
		for i < len(v) && isDigit(v[i]) {
			i++
		}
	}
	if i < len(v) && (v[i] == 'e' || v[i] == 'E') {
		i++
		if i < len(v) && (v[i] == '+' || v[i] == '-') {
			i++
		}
		if i >= len(v) || !isDigit(v[i]) {
			return 0, syntaxError(v, i, "a digit")
		}
		for i < len(v) && isDigit(v[i]) {
			i++
		}
	}
	return i, nil
}

type intStatus uint8

const (
	intOK    intStatus = iota
	intRange           // an integer beyond int64
	intFrac            // a number with a fraction or an exponent
)

// parseInt reads the JSON number at v[i] as an int64 and returns the index
// after it; a number that is not an int64 comes back with its status so the
// caller can quote it.
func parseInt(v []byte, i int) (int64, int, intStatus, error) {
	neg := v[i] == '-'
	if neg {
		i++
	}
	if i >= len(v) || !isDigit(v[i]) {
		return 0, 0, 0, syntaxError(v, i, "a digit")
	}
	var u uint64
	st := intOK
	if v[i] == '0' {
		i++
	} else {
		d := i
		u, i = digits(v, i) // wraps past 19 digits, caught here
		if i-d > 19 || u > 1<<63 || (u == 1<<63 && !neg) {
			st = intRange
		}
	}
	if i < len(v) && (v[i] == '.' || v[i] == 'e' || v[i] == 'E') {
		end, err := skipFraction(v, i)
		return 0, end, intFrac, err
	}
	if neg {
		return -int64(u), i, st, nil
	}
	return int64(u), i, st, nil
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseFloat reads the JSON number at v[i] and returns it and the index after
// it. Numbers of at most 15 significant digits and a small exponent, which is
// nearly all of them, take the exact fast path (one multiplication or
// division of exact values rounds correctly); the rest go to strconv.
func parseFloat(v []byte, i int) (float64, int, error) {
	start := i
	neg := v[i] == '-'
	if neg {
		i++
	}
	if i >= len(v) || !isDigit(v[i]) {
		return 0, 0, syntaxError(v, i, "a digit")
	}
	var m uint64 // significant digits, at most 19 of them
	nd, exp := 0, 0
	exact := true
	if v[i] == '0' {
		i++
	} else {
		for ; i < len(v) && isDigit(v[i]); i++ {
			if nd < 19 {
				m = m*10 + uint64(v[i]-'0')
				nd++
			} else {
				exact = false
				exp++
			}
		}
	}
	if i < len(v) && v[i] == '.' {
		i++
		if i >= len(v) || !isDigit(v[i]) {
			return 0, 0, syntaxError(v, i, "a digit")
		}
		for ; i < len(v) && isDigit(v[i]); i++ {
			switch {
			case nd < 19:
				if m != 0 || v[i] != '0' {
					m = m*10 + uint64(v[i]-'0')
					nd++
				}
				exp--
			case v[i] != '0':
				exact = false
			}
		}
	}
	if i < len(v) && (v[i] == 'e' || v[i] == 'E') {
		i++
		eneg := false
		if i < len(v) && (v[i] == '+' || v[i] == '-') {
			eneg = v[i] == '-'
			i++
		}
		if i >= len(v) || !isDigit(v[i]) {
			return 0, 0, syntaxError(v, i, "a digit")
		}
		e := 0
		for ; i < len(v) && isDigit(v[i]); i++ {
			if e < 1e6 {
				e = e*10 + int(v[i]-'0')
			}
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	if exact && m <= 1<<53 && exp >= -22 && exp <= 22 {
		f := float64(m)
		if exp < 0 {
			f /= pow10[-exp]
		} else {
			f *= pow10[exp]
		}
		if neg {
			f = -f
		}
		return f, i, nil
	}
	f, err := strconv.ParseFloat(string(v[start:i]), 64)
	if err != nil {
		return 0, i, errRange // the syntax is JSON's, a subset of Go's
	}
	return f, i, nil
}
