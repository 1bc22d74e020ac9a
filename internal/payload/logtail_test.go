package payload

import (
	"io"
	"strings"
	"testing"
)

func TestLogTail(t *testing.T) {
	ui := &testUi{}
	tail := newLogTail(ui, "nix: ", 3)
	out, errw := tail.Writer(0), tail.Writer(1)
	io.WriteString(out, "one\ntw")
	io.WriteString(errw, "err-a\n")
	io.WriteString(out, "o\n\nprogress 10%\rprogress 100%\nthr")
	io.WriteString(errw, "err-b\r\n")
	io.WriteString(out, "ee")
	tail.Flush()
	want := []string{"nix: one", "nix: err-a", "nix: two", "nix: progress 100%", "nix: err-b", "nix: three"}
	if strings.Join(ui.messages, "|") != strings.Join(want, "|") {
		t.Fatalf("messages %q, want %q", ui.messages, want)
	}
	if got := tail.Tail(); strings.Join(got, "|") != "progress 100%|err-b|three" {
		t.Fatalf("tail %q", got)
	}
	pe := &PhaseError{Phase: PhaseBuild, Err: io.ErrUnexpectedEOF, Log: tail.Tail()}
	if msg := pe.Error(); !strings.HasPrefix(msg, "nixos-sd build failed: unexpected EOF") || !strings.Contains(msg, "\n    three") {
		t.Fatalf("PhaseError: %q", msg)
	}
}
