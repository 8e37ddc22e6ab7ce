// Package walk visits a directory tree in a fixed order while reading it
// ahead in parallel.
//
// The order is the one resync's merge needs on both sides (and the one
// filepath.WalkDir and wire.ComparePaths define): a directory before its
// children, the names of a directory in byte order, depth first.
//
// Why parallel: an unchanged resync is a walk of the master's spool and of
// the replica's tree, and on a cold cache each walk waits for one directory
// block or inode table block at a time. Reading several directories at once
// keeps the disk's queue full: measured on 55,800 entries with cold caches,
// 0.55 s one directory at a time, 0.25 s with 8 readers.
//
// How: a directory is a node. Reading a node opens it, lists its names and
// stats every entry (fstatat, relative to the open directory); the
// subdirectories found become queued nodes. Workers read queued nodes
// smallest path first — the visitor needs them in that order — while at
// most Ahead nodes are read and not yet visited, which bounds memory and
// open descriptors. The visitor takes the nodes in order; one no worker has
// started yet it reads itself, so the walk never waits on the bound. The
// per-entry work a caller needs (Options.Detail: xattrs, a GUID) is done by
// the reader too, so it runs in parallel with the rest.
//
// Invariants: fn sees every entry exactly once, in order; an entry that
// vanishes between listing and stat is left out, a directory that vanishes
// or is replaced before it is opened is visited as empty (the walks race a
// live spool: the change is the sync log's, or a later resync's); every
// descriptor the walk opened is closed when Tree returns.
package walk

import (
	"container/heap"
	"errors"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"spoolsync/wire"
)

// Entry is one entry of the tree.
type Entry[T any] struct {
	Path string // relative to the tree's root, slash-separated
	Name string // the final component of Path
	// Dir is the open directory holding the entry, for *at calls; it is
	// valid only during the calls to Detail and fn.
	Dir  int
	Stat unix.Stat_t
	// Detail is what Options.Detail returned for the entry, with its error.
	Detail    T
	DetailErr error
}

// Options tune a walk; Open is required.
type Options[T any] struct {
	// Open opens a directory of the tree ("." for the root) as an
	// O_RDONLY|O_DIRECTORY descriptor, never following a symlink.
	Open func(dir string) (int, error)
	// Skip, when set, leaves out the entries for which it is true, with
	// their subtrees.
	Skip func(path string) bool
	// Detail, when set, is called for every entry (not skipped, not
	// vanished) by the goroutine that read its directory, so that the
	// per-entry work a caller needs (xattrs, a GUID) runs in parallel
	// too. It must be safe for concurrent use; its result reaches fn.
	Detail func(e *Entry[T]) (T, error)
	// Prepare, when set, is called for the entries of a directory, up to
	// prepareChunk at a time, once they are stat'ed and before Detail is
	// called for any of them. It may fill in e.Detail, which Detail then
	// finds there, and start what Detail would otherwise wait for, such as
	// the reading of a file it hashes (guid.Readahead): those waits then
	// overlap, and the disk gets a run of requests instead of one at a
	// time. Same rules as Detail.
	Prepare func(e *Entry[T])
	// Workers is how many directories are read at once (default 8).
	Workers int
	// Ahead is how many directories may be read and not yet visited
	// (default 64).
	Ahead int
}

// bigDir is the number of entries above which a directory's entries are
// stat'ed by several goroutines: a maildir's cur/ can hold 100,000 messages.
const bigDir = 1024

// prepareChunk bounds what one Prepare call ahead of Detail may start: a
// read ahead of 64 files, not of a whole 100,000-message cur/.
const prepareChunk = 64

// Tree calls fn for every entry below dir (a directory of the tree, "." for
// its root; dir itself is not reported), in order. An error from fn, or
// from reading a directory other than its vanishing, stops the walk and is
// returned.
func Tree[T any](dir string, o Options[T], fn func(*Entry[T]) error) error {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Ahead <= 0 {
		o.Ahead = 64
	}
	w := &walker[T]{o: o, open: map[*node[T]]bool{}}
	w.cond = sync.NewCond(&w.mu)
	root := &node[T]{path: dir, done: make(chan struct{})}
	w.wg.Add(o.Workers)
	for range o.Workers {
		go w.work()
	}
	err := w.visit(root, fn)
	w.stop()
	return err
}

const (
	queued = iota
	reading
	taken // by the visitor
)

type node[T any] struct {
	path    string
	state   int
	fd      int // open from read until visited
	entries []Entry[T]
	subs    []*node[T] // per entry: the directory's node, for a directory
	err     error
	done    chan struct{} // closed once read
}

type walker[T any] struct {
	o     Options[T]
	mu    sync.Mutex
	cond  *sync.Cond // queue or ahead changed, or stopped
	queue queue[T]
	ahead int               // nodes read or being read by workers, not yet taken
	open  map[*node[T]]bool // nodes holding an open fd
	done  bool
	wg    sync.WaitGroup
}

func (w *walker[T]) work() {
	defer w.wg.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for !w.done && (w.queue.Len() == 0 || w.ahead >= w.o.Ahead) {
			w.cond.Wait()
		}
		if w.done {
			return
		}
		n := heap.Pop(&w.queue).(*node[T])
		if n.state != queued {
			continue // the visitor took it
		}
		n.state = reading
		w.ahead++
		w.mu.Unlock()
		w.read(n)
		w.mu.Lock()
	}
}

// stop ends the workers and closes what they read that was not visited.
func (w *walker[T]) stop() {
	w.mu.Lock()
	w.done = true
	w.cond.Broadcast()
	w.mu.Unlock()
	w.wg.Wait()
	for n := range w.open {
		unix.Close(n.fd)
	}
}

// visit reports n's entries and visits its subdirectories.
func (w *walker[T]) visit(n *node[T], fn func(*Entry[T]) error) error {
	w.take(n)
	defer w.release(n)
	if n.err != nil {
		if gone(n.err) {
			return nil
		}
		return n.err
	}
	for i := range n.entries {
		if err := fn(&n.entries[i]); err != nil {
			return err
		}
		if sub := n.subs[i]; sub != nil {
			if err := w.visit(sub, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// take makes n read, by the visitor itself when no worker has started it.
func (w *walker[T]) take(n *node[T]) {
	w.mu.Lock()
	state := n.state
	n.state = taken
	if state == reading {
		w.ahead--
		w.cond.Broadcast()
	}
	w.mu.Unlock()
	if state == queued {
		w.read(n)
	}
	<-n.done
}

func (w *walker[T]) release(n *node[T]) {
	if n.err != nil {
		return
	}
	w.mu.Lock()
	delete(w.open, n)
	w.mu.Unlock()
	unix.Close(n.fd)
	n.entries, n.subs = nil, nil
}

// read opens, lists and stats n, details its entries, and queues its
// subdirectories.
func (w *walker[T]) read(n *node[T]) {
	defer close(n.done)
	fd, err := w.o.Open(n.path)
	if err != nil {
		n.err = err
		return
	}
	n.fd = fd
	w.mu.Lock()
	w.open[n] = true
	w.mu.Unlock()
	names, err := readNames(fd)
	if err != nil {
		n.err = err
		w.mu.Lock()
		delete(w.open, n)
		w.mu.Unlock()
		unix.Close(fd)
		return
	}
	slices.Sort(names)
	entries := make([]Entry[T], 0, len(names))
	for _, name := range names {
		if p := join(n.path, name); w.o.Skip == nil || !w.o.Skip(p) {
			entries = append(entries, Entry[T]{Path: p, Name: name, Dir: fd})
		}
	}
	vanished := w.stat(entries)
	n.entries = entries[:0]
	var subs []*node[T]
	for i := range entries {
		if vanished[i] {
			continue // its removal is the sync log's to report
		}
		var sub *node[T]
		if entries[i].Stat.Mode&unix.S_IFMT == unix.S_IFDIR {
			sub = &node[T]{path: entries[i].Path, done: make(chan struct{})}
			subs = append(subs, sub)
		}
		n.entries = append(n.entries, entries[i])
		n.subs = append(n.subs, sub)
	}
	if len(subs) > 0 {
		w.mu.Lock()
		for _, s := range subs {
			heap.Push(&w.queue, s)
		}
		w.cond.Broadcast()
		w.mu.Unlock()
	}
}

// stat fills in the entries' stats and details and reports which vanished;
// a big directory is split between goroutines.
func (w *walker[T]) stat(entries []Entry[T]) (vanished []bool) {
	vanished = make([]bool, len(entries))
	statRange := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			e := &entries[i]
			if unix.Fstatat(e.Dir, e.Name, &e.Stat, unix.AT_SYMLINK_NOFOLLOW) != nil {
				vanished[i] = true
			}
		}
		for clo := lo; clo < hi; clo += prepareChunk {
			chi := min(clo+prepareChunk, hi)
			for i := clo; i < chi && w.o.Prepare != nil; i++ {
				if !vanished[i] {
					w.o.Prepare(&entries[i])
				}
			}
			for i := clo; i < chi && w.o.Detail != nil; i++ {
				if e := &entries[i]; !vanished[i] {
					e.Detail, e.DetailErr = w.o.Detail(e)
				}
			}
		}
	}
	if len(entries) <= bigDir {
		statRange(0, len(entries))
		return vanished
	}
	var wg sync.WaitGroup
	chunk := (len(entries) + w.o.Workers - 1) / w.o.Workers
	for lo := 0; lo < len(entries); lo += chunk {
		wg.Go(func() { statRange(lo, min(lo+chunk, len(entries))) })
	}
	wg.Wait()
	return vanished
}

// direntBufs holds readNames' buffers: a fresh 64 KiB for each of a spool's
// thousands of directories was most of a walk's allocation.
var direntBufs = sync.Pool{New: func() any { return new([64 << 10]byte) }}

// readNames lists the directory open as fd, without "." and "..".
func readNames(fd int) ([]string, error) {
	b := direntBufs.Get().(*[64 << 10]byte)
	defer direntBufs.Put(b)
	buf := b[:]
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// Readlink returns the target of the symlink name in the directory open as
// dirfd, however long it is.
func Readlink(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// gone reports whether a directory vanished or was replaced before it
// could be opened.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP)
}

func join(dir, name string) string {
	if dir == "." || dir == "" {
		return name
	}
	return dir + "/" + name
}

// queue is a min-heap of nodes by path in walk order.
type queue[T any] []*node[T]

func (q queue[T]) Len() int           { return len(q) }
func (q queue[T]) Less(i, j int) bool { return wire.ComparePaths(q[i].path, q[j].path) < 0 }
func (q queue[T]) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *queue[T]) Push(x any)        { *q = append(*q, x.(*node[T])) }
func (q *queue[T]) Pop() any {
	old := *q
	n := old[len(old)-1]
	*q = old[:len(old)-1]
	return n
}
