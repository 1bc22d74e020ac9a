// Package remotecmdtest has a packersdk.Communicator for tests that runs commands
// in a real local shell: the "host" is this machine.
package remotecmdtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// Local is a packersdk.Communicator that runs commands with a real local
// `bash -c` and copies files locally: the host is this machine.
type Local struct {
	// env is added to the commands' environment (for example a PATH with
	// fake tools first).
	Env []string
	// stdout, when set, wraps a command's standard output.
	Stdout func(command string, w io.Writer) io.Writer
	// before, when set, runs before a command starts.
	Before func(command string)

	mu       sync.Mutex
	commands []string
	running  atomic.Int64
	peak     atomic.Int64
}

var _ packersdk.Communicator = (*Local)(nil)

func (c *Local) Start(ctx context.Context, rc *packersdk.RemoteCmd) error {
	c.mu.Lock()
	c.commands = append(c.commands, rc.Command)
	c.mu.Unlock()
	if c.Before != nil {
		c.Before(rc.Command)
	}
	cmd := exec.Command("bash", "-c", rc.Command)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = rc.Stdin, rc.Stdout, rc.Stderr
	if cmd.Stdout == nil {
		cmd.Stdout = io.Discard
	}
	if cmd.Stderr == nil {
		cmd.Stderr = io.Discard
	}
	if c.Stdout != nil {
		cmd.Stdout = c.Stdout(rc.Command, cmd.Stdout)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	if n := c.running.Add(1); n > c.peak.Load() {
		c.peak.Store(n)
	}
	go func() {
		err := cmd.Wait()
		c.running.Add(-1)
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
			if code < 0 { // killed by a signal
				code = 128 + 15
			}
		} else if err != nil {
			code = 1
		}
		rc.SetExited(code)
	}()
	return nil
}

// Commands lists the commands started so far.
func (c *Local) Commands() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.commands...)
}

func (c *Local) Upload(dst string, r io.Reader, _ *os.FileInfo) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// UploadDir copies src into dst, or only its contents with a trailing slash,
// as Packer's communicators do.
func (c *Local) UploadDir(dst, src string, exclude []string) error {
	if !strings.HasSuffix(src, "/") {
		dst = filepath.Join(dst, filepath.Base(src))
	}
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		return c.Upload(target, in, &fi)
	})
}

func (c *Local) Download(src string, w io.Writer) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

func (c *Local) DownloadDir(src, dst string, exclude []string) error {
	return fmt.Errorf("remotecmdtest.Local: DownloadDir is not implemented")
}

// Peak is the most commands that ran at once.
func (c *Local) Peak() int64 { return c.peak.Load() }
