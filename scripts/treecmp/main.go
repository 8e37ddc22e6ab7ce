// Command treecmp compares a master's spool with its replica (content,
// type, mode, owner, mtime, symlinks, hard links, xattrs; the replica's
// .spoolsync directory is ignored) and prints every difference. Exit 0 when
// identical, 1 when not. Used by scripts/demo.
package main

import (
	"fmt"
	"os"

	"spoolsync/internal/treecmp"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: treecmp MASTER_DIR REPLICA_DIR")
		os.Exit(2)
	}
	diffs, err := treecmp.Diff(os.Args[1], os.Args[2], treecmp.Options{Skip: []string{".spoolsync"}, DirMtimes: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "treecmp:", err)
		os.Exit(2)
	}
	for _, d := range diffs {
		fmt.Println(d)
	}
	if len(diffs) > 0 {
		fmt.Printf("%d differences\n", len(diffs))
		os.Exit(1)
	}
	fmt.Println("identical: content, type, mode, owner, mtime, symlinks, hard links, xattrs")
}
