package fs

import "golang.org/x/sys/unix"

const (
	renameNoReplace = unix.RENAME_NOREPLACE
	renameExchange  = unix.RENAME_EXCHANGE
)

func renameat2(from, to string, flags uint) error {
	return unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, flags)
}

func copyFileRange(in int, offIn *int64, out int, offOut *int64, n int) (int, error) {
	return unix.CopyFileRange(in, offIn, out, offOut, n, 0)
}
