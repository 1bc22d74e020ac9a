// Package remotecmd runs commands on a host through a Packer communicator. The
// payload (build and download) and the builder (the instance's watchdog) share
// it, so there is one way to run, quote and wait for remote commands.
package remotecmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// ErrDropped is returned by Run when the SSH connection dropped while the
// command ran; ErrStart when the command could not be started (the
// communicator could not open a session, even after reconnecting).
var (
	ErrDropped = errors.New("the SSH connection dropped while the command ran")
	ErrStart   = errors.New("starting remote command")
)

// Dropped reports whether err says the connection failed rather than the
// command: running it again may succeed.
func Dropped(err error) bool {
	return errors.Is(err, ErrDropped) || errors.Is(err, ErrStart)
}

// Run starts command on the host and waits for it to exit or for ctx to end.
// It returns the exit status. When ctx ends first it returns ctx's error and
// leaves the command running; the caller stops it if it must.
func Run(ctx context.Context, comm packersdk.Communicator, command string, stdout, stderr io.Writer) (int, error) {
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	cmd := &packersdk.RemoteCmd{Command: command, Stdout: stdout, Stderr: stderr}
	if err := comm.Start(ctx, cmd); err != nil {
		return -1, fmt.Errorf("%w: %w", ErrStart, err)
	}
	done := make(chan int, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case st := <-done:
		if st == packersdk.CmdDisconnect {
			return st, ErrDropped
		}
		return st, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// Output runs a short command and returns its standard output; a non-zero exit
// is an error carrying (the first 64 KiB of) its standard error.
func Output(ctx context.Context, comm packersdk.Communicator, command string) (string, error) {
	var out, errb bytes.Buffer
	st, err := Run(ctx, comm, command, &out, &LimitedBuffer{B: &errb, Max: 64 << 10})
	if err != nil {
		return "", err
	}
	if st != 0 {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = "no error output"
		}
		return out.String(), fmt.Errorf("remote command exited with status %d: %s", st, msg)
	}
	return out.String(), nil
}

// LimitedBuffer keeps the first Max bytes written to it and drops the rest
// (still reporting them written, so the remote command is not stalled).
type LimitedBuffer struct {
	B   *bytes.Buffer
	Max int
}

func (l *LimitedBuffer) Write(p []byte) (int, error) {
	if room := l.Max - l.B.Len(); room > 0 {
		if len(p) > room {
			l.B.Write(p[:room])
		} else {
			l.B.Write(p)
		}
	}
	return len(p), nil
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// Quote quotes s for a POSIX shell.
func Quote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Join quotes each argument and joins them with spaces.
func Join(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}
