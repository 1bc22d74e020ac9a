package payload

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// BuildLogName is the file in output_directory that holds everything the
// build host printed, whatever the output level.
const BuildLogName = "nixos-sd-build.log"

// buildLog is the build host's whole output, line by line, with a header per
// command. Its methods are safe for concurrent use; a nil *buildLog writes
// nothing.
type buildLog struct {
	mu   sync.Mutex
	f    *os.File
	path string
	err  error
}

// openBuildLog creates (or empties) the log in dir.
func openBuildLog(dir string) (*buildLog, error) {
	p := filepath.Join(dir, BuildLogName)
	f, err := os.Create(p)
	if err != nil {
		return nil, fmt.Errorf("nixos-sd: creating the build log %s: %w; choose an output_directory you can write to", p, err)
	}
	return &buildLog{f: f, path: p}, nil
}

// section starts the output of one command.
func (l *buildLog) section(title string) {
	if l == nil {
		return
	}
	l.write(fmt.Sprintf("==> %s %s\n", time.Now().UTC().Format(time.RFC3339), title))
}

// line records one line the host printed.
func (l *buildLog) line(s string) {
	if l == nil {
		return
	}
	l.write(s + "\n")
}

func (l *buildLog) write(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		_, l.err = l.f.WriteString(s)
	}
}

// Path is the log file's path, "" for no log.
func (l *buildLog) Path() string {
	if l == nil {
		return ""
	}
	return l.path
}

// close closes the file.
func (l *buildLog) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Close()
}

// onlyBuildLog reports whether dir holds nothing but an earlier build's log
// (a failed build leaves it): a new build may use the directory.
func onlyBuildLog(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) == 1 && entries[0].Name() == BuildLogName && entries[0].Type().IsRegular()
}
