//go:build unix

package listener

import "syscall"

// nofile is the soft RLIMIT_NOFILE, for the log (0 if unknown).
func nofile() uint64 {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return 0
	}
	return uint64(lim.Cur)
}
