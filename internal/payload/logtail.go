package payload

import (
	"bytes"
	"io"
	"strings"
	"sync"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// logTail writes a remote command's output line by line to the build log,
// shows what its summary keeps through ui.Message, and remembers the last
// lines for error messages. Its Writer methods are safe for concurrent use by
// stdout and stderr.
type logTail struct {
	ui     packersdk.Ui
	prefix string
	keep   int
	log    *buildLog
	sum    *summary

	mu    sync.Mutex
	lines []string
	bufs  map[int]*bytes.Buffer
}

func newLogTail(ui packersdk.Ui, prefix string, keep int) *logTail {
	return &logTail{ui: ui, prefix: prefix, keep: keep, bufs: map[int]*bytes.Buffer{}}
}

// into sends the whole output to log and shows only what sum keeps (nil:
// everything).
func (t *logTail) into(log *buildLog, sum *summary) *logTail {
	t.log, t.sum = log, sum
	return t
}

// Writer returns the writer for one stream (0 stdout, 1 stderr): each stream
// has its own partial line.
func (t *logTail) Writer(stream int) io.Writer {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bufs[stream] = &bytes.Buffer{}
	return &logStream{t: t, id: stream}
}

type logStream struct {
	t  *logTail
	id int
}

func (s *logStream) Write(p []byte) (int, error) {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	b := s.t.bufs[s.id]
	b.Write(p)
	for {
		i := bytes.IndexByte(b.Bytes(), '\n')
		if i < 0 {
			break
		}
		line := string(b.Next(i + 1))
		s.t.emit(line)
	}
	// A line without an end that grows past 64 KiB is shown in pieces.
	if b.Len() > 64<<10 {
		s.t.emit(string(b.Next(b.Len())))
	}
	return len(p), nil
}

// Flush shows the unterminated last lines, and the summary's closing line.
func (t *logTail) Flush() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range t.bufs {
		if b.Len() > 0 {
			t.emit(string(b.Next(b.Len())))
		}
	}
	if d := t.sum.done(); d != "" {
		t.ui.Message(t.prefix + d)
	}
}

func (t *logTail) emit(line string) {
	line = strings.TrimRight(line, "\r\n \t")
	if i := strings.LastIndexByte(line, '\r'); i >= 0 {
		line = line[i+1:]
	}
	if strings.TrimSpace(line) == "" {
		return
	}
	t.log.line(line)
	if shown, ok := t.sum.show(line); ok {
		t.ui.Message(t.prefix + shown)
	}
	t.lines = append(t.lines, line)
	if len(t.lines) > t.keep {
		t.lines = append(t.lines[:0], t.lines[len(t.lines)-t.keep:]...)
	}
}

// Tail is the last lines seen, oldest first.
func (t *logTail) Tail() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}
