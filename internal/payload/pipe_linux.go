package payload

import (
	"os"

	"golang.org/x/sys/unix"
)

// pipeSize is the pipe's buffer toward zstd: Linux's default 64 KiB holds
// less than one of our writes, so zstd would wait while the next one is
// hashed; 1 MiB (the default pipe-max-size) lets the two overlap.
const pipeSize = 1 << 20

// growPipe asks for a pipeSize buffer; where the system refuses, the pipe
// keeps its size.
func growPipe(w *os.File) {
	if sc, err := w.SyscallConn(); err == nil {
		_ = sc.Control(func(fd uintptr) {
			_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize)
		})
	}
}
