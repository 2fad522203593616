//go:build !unix

package sandbox

import "errors"

// The host runs on Unix; elsewhere (the package is compiled for wasip1 when
// guest tests are vetted) instances cannot reserve memory.
var errNoMmap = errors.New("sandbox: linear memory needs mmap (a Unix host)")

func reserve(int) ([]byte, error) { return nil, errNoMmap }
func commit([]byte) error         { return errNoMmap }
func unmap([]byte) error          { return nil }
