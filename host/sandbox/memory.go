package sandbox

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

// ErrMemoryBudget is wrapped by Instantiate when the instance's memory cap
// would take the host past Options.MemoryBudget.
var ErrMemoryBudget = errors.New("sandbox: host memory budget exhausted")

// budget counts the linear memory reserved by live instances.
type budget struct {
	limit uint64
	used  atomic.Uint64
}

func (b *budget) reserve(n uint64) error {
	for {
		used := b.used.Load()
		if used+n > b.limit {
			return fmt.Errorf("%w: an instance reserves %d MiB, %d MiB of %d MiB are reserved by running instances (raise sandbox.memory_budget, lower sandbox.memory_pages, or run fewer partitions on this host)",
				ErrMemoryBudget, n>>20, used>>20, b.limit>>20)
		}
		if b.used.CompareAndSwap(used, used+n) {
			return nil
		}
	}
}

func (b *budget) release(n uint64) { b.used.Add(-n) }

// mmapMemory is a linear memory backed by an anonymous mapping of its whole
// cap, made at Allocate with no access. Growing makes more of it readable and
// writable in place, so growth never copies and the address never moves;
// pages the guest has not touched cost no RSS; Free unmaps it all, so a
// closed instance gives its memory back to the system at once instead of
// leaving it to the Go heap. The mapping is outside the Go heap, which is
// what wazero's compiled code expects of a buffer it holds a raw pointer to.
type mmapMemory struct {
	mem      []byte // the whole reservation
	writable uint64 // bytes with read and write access
	b        *budget
	reserved uint64 // what this memory holds of the budget
}

// allocator returns the memory allocator of one instantiation: the memory
// it creates holds res bytes of b, which Free gives back. A mapping that
// fails is reported as a failed growth (nil), which wazero turns into an
// instantiation error or a failed memory.grow.
type allocator struct {
	b        *budget
	reserved uint64
	made     *mmapMemory
}

func (a *allocator) Allocate(_, max uint64) experimental.LinearMemory {
	m := &mmapMemory{b: a.b, reserved: a.reserved}
	a.made = m
	a.reserved = 0 // the memory owns it now
	if max == 0 {
		return m
	}
	mem, err := reserve(int(max))
	if err != nil {
		return m
	}
	m.mem = mem
	return m
}

const pageSize = 64 << 10

func (m *mmapMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.mem)) {
		return nil
	}
	if size > m.writable {
		// Round to whole Wasm pages (size always is one) so mprotect sees
		// whole system pages.
		end := (size + pageSize - 1) &^ (pageSize - 1)
		end = min(end, uint64(len(m.mem)))
		if err := commit(m.mem[m.writable:end]); err != nil {
			return nil
		}
		m.writable = end
	}
	return m.mem[:size:size]
}

func (m *mmapMemory) Free() {
	if m.mem != nil {
		_ = unmap(m.mem)
		m.mem = nil
	}
	if m.reserved > 0 {
		m.b.release(m.reserved)
		m.reserved = 0
	}
}
