package remotecmd

import (
	"context"
	"io"
	"os"
	"sync"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// Serialized wraps Packer's SSH communicator so that sessions are opened one
// at a time. Its reconnect after a dropped connection is not safe for
// concurrent use: two goroutines opening sessions at once (a heartbeat and a
// command, say) race on its connection, and one handshakes on a nil
// connection and panics, killing the plugin before any cleanup. Commands
// still run concurrently: only starting them (and file transfers, which are
// sessions too) takes the lock.
func Serialized(c packersdk.Communicator) packersdk.Communicator {
	if s, ok := c.(*serialComm); ok {
		return s
	}
	return &serialComm{c: c}
}

type serialComm struct {
	mu sync.Mutex
	c  packersdk.Communicator
}

func (s *serialComm) Start(ctx context.Context, cmd *packersdk.RemoteCmd) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.Start(ctx, cmd)
}

func (s *serialComm) Upload(dst string, src io.Reader, fi *os.FileInfo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.Upload(dst, src, fi)
}

func (s *serialComm) UploadDir(dst, src string, exclude []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.UploadDir(dst, src, exclude)
}

func (s *serialComm) Download(src string, dst io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.Download(src, dst)
}

func (s *serialComm) DownloadDir(src, dst string, exclude []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.DownloadDir(src, dst, exclude)
}
