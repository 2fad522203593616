//go:build unix

package sandbox

import "syscall"

// reserve maps n bytes of address space with no access and no swap
// reservation: it costs no RSS until committed and touched.
func reserve(n int) ([]byte, error) {
	return syscall.Mmap(-1, 0, n, syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
}

// commit makes b readable and writable.
func commit(b []byte) error { return syscall.Mprotect(b, syscall.PROT_READ|syscall.PROT_WRITE) }

func unmap(b []byte) error { return syscall.Munmap(b) }
