//go:build !unix

package listener

// nofile is the soft RLIMIT_NOFILE, for the log (0 if unknown).
func nofile() uint64 { return 0 }
