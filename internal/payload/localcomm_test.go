package payload

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

// localComm is a packersdk.Communicator that runs commands with a real local
// `bash -c` and copies files locally: the host is this machine.
type localComm struct {
	// env is added to the commands' environment (for example a PATH with
	// fake tools first).
	env []string
	// stdout, when set, wraps a command's standard output.
	stdout func(command string, w io.Writer) io.Writer
	// before, when set, runs before a command starts.
	before func(command string)

	mu       sync.Mutex
	commands []string
	running  atomic.Int64
	peak     atomic.Int64
}

var _ packersdk.Communicator = (*localComm)(nil)

func (c *localComm) Start(ctx context.Context, rc *packersdk.RemoteCmd) error {
	c.mu.Lock()
	c.commands = append(c.commands, rc.Command)
	c.mu.Unlock()
	if c.before != nil {
		c.before(rc.Command)
	}
	cmd := exec.Command("bash", "-c", rc.Command)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = rc.Stdout, rc.Stderr
	if cmd.Stdout == nil {
		cmd.Stdout = io.Discard
	}
	if cmd.Stderr == nil {
		cmd.Stderr = io.Discard
	}
	if c.stdout != nil {
		cmd.Stdout = c.stdout(rc.Command, cmd.Stdout)
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

func (c *localComm) Commands() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.commands...)
}

func (c *localComm) Upload(dst string, r io.Reader, _ *os.FileInfo) error {
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
func (c *localComm) UploadDir(dst, src string, exclude []string) error {
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

func (c *localComm) Download(src string, w io.Writer) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

func (c *localComm) DownloadDir(src, dst string, exclude []string) error {
	return fmt.Errorf("DownloadDir is not used by the payload")
}

// testUi records what Run says.
type testUi struct {
	mu       sync.Mutex
	says     []string
	messages []string
	errors   []string
	tracked  atomic.Int64
	bars     atomic.Int64
}

func (u *testUi) Ask(string) (string, error) { return "", errors.New("no input") }
func (u *testUi) Askf(string, ...any) (string, error) {
	return "", errors.New("no input")
}
func (u *testUi) Say(s string) { u.mu.Lock(); u.says = append(u.says, s); u.mu.Unlock() }
func (u *testUi) Sayf(f string, a ...any) {
	u.Say(fmt.Sprintf(f, a...))
}
func (u *testUi) Message(s string) { u.mu.Lock(); u.messages = append(u.messages, s); u.mu.Unlock() }
func (u *testUi) Error(s string)   { u.mu.Lock(); u.errors = append(u.errors, s); u.mu.Unlock() }
func (u *testUi) Errorf(f string, a ...any) {
	u.Error(fmt.Sprintf(f, a...))
}
func (u *testUi) Machine(string, ...string) {}

// TrackProgress counts the bytes the progress reader reports.
func (u *testUi) TrackProgress(src string, cur, total int64, stream io.ReadCloser) io.ReadCloser {
	u.bars.Add(1)
	return &countingRC{rc: stream, n: &u.tracked}
}

func (u *testUi) all() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return strings.Join(u.says, "\n") + "\n" + strings.Join(u.messages, "\n") + "\n" + strings.Join(u.errors, "\n")
}

type countingRC struct {
	rc io.ReadCloser
	n  *atomic.Int64
}

func (c *countingRC) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.n.Add(int64(n))
	return n, err
}
func (c *countingRC) Close() error { return c.rc.Close() }

var _ packersdk.Ui = (*testUi)(nil)
