package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The plugin's user-facing messages: every error it constructs
// (fmt.Errorf, errors.New), every ui.Error, and every message build.sh dies
// with on the host. TestMessages checks that each names the option or the
// resource it is about and says what to do, and that docs/troubleshooting.md
// lists it (NIXOS_SD_UPDATE_TROUBLESHOOTING=1 rewrites the list).

// messageDirs are the plugin's sources (tests and the test bed excluded).
var messageDirs = []string{"builder", "datasource", "provisioner", "internal/awscommon", "internal/debianami", "internal/nixcache", "internal/payload", "internal/remotecmd"}

// message is one user-facing message as written in the source.
type message struct {
	file string
	line int
	text string // the format string, verbs and all
}

// collectMessages walks the sources for message constructors whose text is a
// string literal (or a sum of them).
func collectMessages(t *testing.T) []message {
	t.Helper()
	var msgs []message
	fset := token.NewFileSet()
	for _, dir := range messageDirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") || strings.HasSuffix(f, ".hcl2spec.go") {
				continue
			}
			af, err := parser.ParseFile(fset, f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(af, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				recv, _ := sel.X.(*ast.Ident)
				switch {
				case recv != nil && recv.Name == "fmt" && sel.Sel.Name == "Errorf",
					recv != nil && recv.Name == "errors" && sel.Sel.Name == "New",
					sel.Sel.Name == "Error" && len(call.Args) == 1:
				default:
					return true
				}
				if text, ok := literal(call.Args[0]); ok {
					msgs = append(msgs, message{f, fset.Position(call.Pos()).Line, text})
				} else if sel.Sel.Name == "Error" {
					// ui.Error(fmt.Sprintf("...", ...))
					if inner, ok := call.Args[0].(*ast.CallExpr); ok && len(inner.Args) > 0 {
						if text, ok := literal(inner.Args[0]); ok {
							msgs = append(msgs, message{f, fset.Position(call.Pos()).Line, text})
						}
					}
				}
				return true
			})
		}
	}
	// build.sh: die STATUS "message".
	script := filepath.Join("internal", "payload", "hostfiles", "build.sh")
	b, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	die := regexp.MustCompile(`\bdie [0-9"$][^ ]* "(.*)"\s*$`)
	for i, l := range strings.Split(string(b), "\n") {
		if m := die.FindStringSubmatch(l); m != nil {
			msgs = append(msgs, message{script, i + 1, m[1]})
		}
	}
	return msgs
}

// literal is the value of a string literal or a sum of them.
func literal(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.BinaryExpr:
		l, ok1 := literal(e.X)
		r, ok2 := literal(e.Y)
		return l + r, ok1 && ok2 && e.Op == token.ADD
	case *ast.ParenExpr:
		return literal(e.X)
	}
	return "", false
}

var (
	// verbsOnly is a message that only wraps another one ("%w", "%s: %w"),
	// whose own constructor is checked where it is written.
	verbsOnly = regexp.MustCompile(`^[\s%a-zA-Z.:;,()\-]*$`)
	verb      = regexp.MustCompile(`%[-+# 0-9.]*[a-zA-Z]`)
	// Words that say what to do about it.
	actions = regexp.MustCompile(`(?i)\b(set|use|remove|add|check|raise|lower|run|try|give|choose|delete|allow|point|rename|paste|fix|install|export|wait|increase|make sure|put|leave|name|look|request|upgrade|move|pass|preinstall|restart|ask|see|retry|free|grant|enable|open|keep|drop|pick|replace|write|investigate|change|list|rerun|delete|terminate|clean|start|unset)\b`)
	// Resources a message may be about, besides the options.
	resources = regexp.MustCompile(`(?i)\b(instance|instances|security group|launch template|fleet|AMI|subnet|VPC|region|zone|image|host|Nix|SSH|key|spot|quota|credentials|build|download|manifest|checksum|SHA-256|output|file|directory|flake|configuration|nixpkgs|channel|volume|tag|tags|EC2|AWS|sudo|apt-get|nix-bin|communicator|provisioner|data source|release|architecture|profile|role|endpoint|price|capacity|watchdog|heartbeat|connection|leftover|resources|lifetime|upload|zstd|sshd|MaxSessions)\b`)
)

// optionNames are the names of every option (the mapstructure tags).
func optionNames(t *testing.T) []string {
	t.Helper()
	tag := regexp.MustCompile("mapstructure:\"([a-z0-9_]+)")
	var names []string
	for _, dir := range messageDirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") || strings.HasSuffix(f, ".hcl2spec.go") {
				continue
			}
			b, _ := os.ReadFile(f)
			for _, m := range tag.FindAllStringSubmatch(string(b), -1) {
				names = append(names, m[1])
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// optionPrefix is a wrapper that only names the option ("debian_release: %w"):
// the wrapped message, checked where it is written, says the rest.
var optionPrefix = regexp.MustCompile(`^[a-z_.]+: %w$`)

// userFacing tells the messages a user can act on from programming errors
// ("internal error", build.sh's usage), pure wrappers, and fragments that
// complete another message ("it has no MBR partition table" completes "the
// built file ... is not an SD card image: %w; ...").
func userFacing(m message) bool {
	text := strings.TrimPrefix(m.text, "nixos-sd: ")
	switch {
	case strings.HasPrefix(text, "internal error"), strings.Contains(m.text, ": internal error"), strings.HasPrefix(text, "usage: "),
		strings.HasPrefix(text, "it "), strings.HasPrefix(text, "its "), optionPrefix.MatchString(text):
		return false
	}
	return !verbsOnly.MatchString(verb.ReplaceAllString(text, ""))
}

func TestMessages(t *testing.T) {
	msgs := collectMessages(t)
	if len(msgs) < 100 {
		t.Fatalf("found only %d messages; the scan is broken", len(msgs))
	}
	opts := optionNames(t)
	if len(opts) < 50 {
		t.Fatalf("found only %d options; the scan is broken", len(opts))
	}
	var checked []message
	for _, m := range msgs {
		if !userFacing(m) {
			continue
		}
		checked = append(checked, m)
		names := resources.MatchString(m.text)
		for _, o := range opts {
			names = names || regexp.MustCompile(`\b`+o+`\b`).MatchString(m.text)
		}
		if !names {
			t.Errorf("%s:%d: %q names no option or resource", m.file, m.line, m.text)
		}
		if !actions.MatchString(m.text) {
			t.Errorf("%s:%d: %q does not say what to do", m.file, m.line, m.text)
		}
	}
	t.Logf("%d messages, %d user-facing checked", len(msgs), len(checked))
	checkTroubleshooting(t, checked)
}

// troubleshootingFile lists every message; its part after marker is generated.
const (
	troubleshootingFile = "docs/troubleshooting.md"
	troubleshootingMark = "<!-- The list below is generated from the source by messages_test.go; do not edit it. -->"
)

func checkTroubleshooting(t *testing.T, msgs []message) {
	t.Helper()
	b, err := os.ReadFile(troubleshootingFile)
	if err != nil {
		t.Fatal(err)
	}
	head, _, ok := strings.Cut(string(b), troubleshootingMark)
	if !ok {
		t.Fatalf("%s lacks the line %q", troubleshootingFile, troubleshootingMark)
	}
	var list strings.Builder
	list.WriteString(troubleshootingMark + "\n")
	byFile := map[string][]message{}
	var files []string
	for _, m := range msgs {
		if _, seen := byFile[m.file]; !seen {
			files = append(files, m.file)
		}
		byFile[m.file] = append(byFile[m.file], m)
	}
	slices.Sort(files)
	for _, f := range files {
		fmt.Fprintf(&list, "\n### `%s`\n\n", f)
		seen := map[string]bool{}
		for _, m := range byFile[f] {
			text := verb.ReplaceAllString(m.text, "…")
			text = strings.ReplaceAll(text, "\n", " ")
			if seen[text] {
				continue
			}
			seen[text] = true
			fmt.Fprintf(&list, "- %s\n", strings.ReplaceAll(text, "<", "&lt;"))
		}
	}
	want := head + list.String()
	if os.Getenv("NIXOS_SD_UPDATE_TROUBLESHOOTING") == "1" {
		if err := os.WriteFile(troubleshootingFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if string(b) != want {
		t.Errorf("%s does not list the messages as they are in the source; run NIXOS_SD_UPDATE_TROUBLESHOOTING=1 go test -run TestMessages . and commit it", troubleshootingFile)
	}
}
