package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	// maxFileLines and maxFuncLines bound every product Go file and
	// function (generated files aside).
	maxFileLines = 450
	maxFuncLines = 100
	modulePath   = "github.com/nixos-sd/packer-plugin-nixos-sd"
)

// productFile is one Go file the plugin binary is built from.
type productFile struct {
	path      string // relative to the module root, with slashes
	fset      *token.FileSet
	file      *ast.File
	generated bool
}

// productFiles parses the non-test Go files of main.go's package and of
// every package of this module it imports, directly or not.
func productFiles(t *testing.T) []productFile {
	t.Helper()
	var out []productFile
	seen := map[string]bool{}
	queue := []string{"."}
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		if seen[dir] {
			continue
		}
		seen[dir] = true
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			p := path.Join(dir, name)
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, productFile{path: p, fset: fset, file: f, generated: ast.IsGenerated(f)})
			for _, imp := range f.Imports {
				ip, _ := strconv.Unquote(imp.Path.Value)
				if rest, ok := strings.CutPrefix(ip, modulePath+"/"); ok {
					queue = append(queue, rest)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b productFile) int { return strings.Compare(a.path, b.path) })
	if len(out) < 20 {
		t.Fatalf("found only %d product files; the walk from main.go is broken", len(out))
	}
	return out
}

func TestProductSizes(t *testing.T) {
	for _, pf := range productFiles(t) {
		if pf.generated {
			continue
		}
		if n := pf.fset.File(pf.file.Pos()).LineCount(); n > maxFileLines {
			t.Errorf("%s has %d lines; split it by concern (at most %d)", pf.path, n, maxFileLines)
		}
		for _, decl := range pf.file.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok {
				continue
			}
			n := pf.fset.Position(fd.End()).Line - pf.fset.Position(fd.Pos()).Line + 1
			if n > maxFuncLines {
				t.Errorf("%s: %s has %d lines; split it into named parts (at most %d)", pf.path, fd.Name.Name, n, maxFuncLines)
			}
		}
	}
}

// TestPackageCommentsAttached fails when a comment before the package clause
// is cut off from it by a blank line: go doc then shows only the part after
// the cut.
func TestPackageCommentsAttached(t *testing.T) {
	for _, pf := range productFiles(t) {
		for _, cg := range pf.file.Comments {
			if cg.End() >= pf.file.Package {
				break
			}
			if cg != pf.file.Doc && !strings.HasPrefix(cg.Text(), "Code generated") && !strings.HasPrefix(cg.List[0].Text, "//go:") {
				t.Errorf("%s:%d: a comment before the package clause is not part of the package comment (a blank line splits it); join it with a // line",
					pf.path, pf.fset.Position(cg.Pos()).Line)
			}
		}
	}
}

// architectureFileLine is a line of docs/architecture.md's file list:
// "- `path`: what it holds".
var architectureFileLine = regexp.MustCompile("^- `([^`]+\\.go)`: \\S")

func TestArchitectureNamesEveryFile(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, list, ok := strings.Cut(string(doc), "\n## Every file of the plugin\n")
	if !ok {
		t.Fatal(`docs/architecture.md has no section "## Every file of the plugin"`)
	}
	list, _, _ = strings.Cut(list, "\n## ")
	listed := map[string]int{}
	for line := range strings.SplitSeq(list, "\n") {
		if m := architectureFileLine.FindStringSubmatch(line); m != nil {
			listed[m[1]]++
		}
	}
	product := map[string]bool{}
	for _, pf := range productFiles(t) {
		product[pf.path] = true
		switch listed[pf.path] {
		case 0:
			t.Errorf("docs/architecture.md, \"Every file of the plugin\": add a line \"- `%s`: what it holds\"", pf.path)
		case 1:
		default:
			t.Errorf("docs/architecture.md, \"Every file of the plugin\": %s has %d lines; keep one", pf.path, listed[pf.path])
		}
	}
	for p := range listed {
		if !product[p] {
			t.Errorf("docs/architecture.md, \"Every file of the plugin\": %s is not a file of the plugin; remove its line", p)
		}
	}
}
