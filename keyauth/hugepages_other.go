//go:build !linux

package keyauth

import "unsafe"

// adviseHugePages is Linux's only (see hugepages_linux.go).
func adviseHugePages(unsafe.Pointer, uintptr) {}
