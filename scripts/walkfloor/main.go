// Command walkfloor walks directory trees at once, each with resync's
// parallel walker (internal/walk: stat and xattr listing of every entry,
// nothing else), and prints the seconds it took. bench-resync runs it on
// the spool and the replica after dropping the caches: the time no
// resync of those trees can beat on this machine, since a resync must at
// least look at every entry of both.
//
//	walkfloor DIR...
package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/internal/walk"
	"spoolsync/internal/xattr"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: walkfloor DIR...")
		os.Exit(2)
	}
	start := time.Now()
	var wg sync.WaitGroup
	counts := make([]int, len(os.Args)-1)
	errs := make([]error, len(os.Args)-1)
	for i, dir := range os.Args[1:] {
		wg.Go(func() { counts[i], errs[i] = walkTree(dir) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			fmt.Fprintf(os.Stderr, "walkfloor: %s: %v\n", os.Args[i+1], err)
			os.Exit(1)
		}
	}
	fmt.Printf("%.3f s, %v entries\n", time.Since(start).Seconds(), counts)
}

func walkTree(dir string) (int, error) {
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(root)
	opts := walk.Options[[]xattr.Attr]{
		Open: func(d string) (int, error) {
			return unix.Openat(root, d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		},
		Detail: func(e *walk.Entry[[]xattr.Attr]) ([]xattr.Attr, error) { return xattr.Read(e.Dir, e.Name) },
	}
	n := 0
	err = walk.Tree(".", opts, func(*walk.Entry[[]xattr.Attr]) error { n++; return nil })
	return n, err
}
