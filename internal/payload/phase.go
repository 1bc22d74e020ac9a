package payload

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Phases of Run, as named in its errors and timings.
const (
	PhaseUpload     = "upload"
	PhaseInstallNix = "install nix"
	PhaseBuild      = "build"
	PhaseLocate     = "locate image"
	PhaseChecksum   = "checksum"
	PhaseDownload   = "download"
	PhaseVerify     = "verify"
	PhaseDecompress = "decompress"
)

// PhaseError is a failure of one phase of Run: "install nix", "upload",
// "build", "locate image", "checksum", "download", "verify" or "decompress".
type PhaseError struct {
	Phase string
	Err   error
	// Log is the last lines the remote command printed, if any.
	Log []string
	// LogFile is the file holding everything the host printed, if any.
	LogFile string
}

func (e *PhaseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nixos-sd %s failed: %v", e.Phase, e.Err)
	if len(e.Log) > 0 {
		b.WriteString("\nlast lines of the remote output:\n")
		for _, l := range e.Log {
			b.WriteString("    ")
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	if e.LogFile != "" {
		fmt.Fprintf(&b, "everything the build host printed is in %s\n", e.LogFile)
	}
	return strings.TrimRight(b.String(), "\n")
}

func (e *PhaseError) Unwrap() error { return e.Err }

func phaseErr(phase string, err error, log []string) error {
	if err == nil {
		return nil
	}
	var pe *PhaseError
	if errors.As(err, &pe) {
		return err
	}
	return &PhaseError{Phase: phase, Err: err, Log: log}
}

// timer records how long each phase took.
type timer struct {
	mu sync.Mutex
	d  map[string]time.Duration
	// onStart is called as a phase begins (RunOptions.Phase).
	onStart func(phase string)
}

func (t *timer) track(phase string) func() {
	if t.onStart != nil {
		t.onStart(phase)
	}
	start := time.Now()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.d == nil {
			t.d = map[string]time.Duration{}
		}
		t.d[phase] += time.Since(start)
	}
}

func (t *timer) snapshot() map[string]time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[string]time.Duration, len(t.d))
	for k, v := range t.d {
		m[k] = v
	}
	return m
}
