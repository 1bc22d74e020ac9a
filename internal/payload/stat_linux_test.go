package payload

import "syscall"

type syscallStat = syscall.Stat_t

func statFile(path string, st *syscallStat) error { return syscall.Stat(path, st) }
