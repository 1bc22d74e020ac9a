package payload

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd/remotecmdtest"
)

// localComm runs commands in a real local shell (remotecmdtest.Local).
type localComm = remotecmdtest.Local

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

// prepared returns a Config prepared as Packer would, with the given changes.
func prepared(t *testing.T, edit func(c *Config)) *Config {
	t.Helper()
	// No channel server answers (TCP port 1 refuses): Run uses channel:NAME
	// and asks Nix for the revision after the build (channel_test.go tests
	// the channel server's part).
	c := &Config{OutputDirectory: filepath.Join(t.TempDir(), "out"), NixpkgsChannelsURL: "http://127.0.0.1:1"}
	if edit != nil {
		edit(c)
	}
	if errs := c.Prepare("test", false); len(errs) > 0 {
		t.Fatalf("Prepare: %v", errs)
	}
	if c.RemoteDirectory == "" {
		// What Run sets once it made its working directory.
		c.RemoteDirectory = "/tmp/nixos-sd"
	}
	return c
}
