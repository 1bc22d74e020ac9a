package nixcache

import (
	"strings"
	"testing"
)

// TestToPushOrder: only locally built paths (ultimate, unsigned) are pushed,
// each after the references it has among them; both layouts of nix
// path-info --json are read.
func TestToPushOrder(t *testing.T) {
	const s = "/nix/store/"
	object := `{"` + s + `aaa-app":{"narHash":"sha256-x","narSize":10,"references":["` + s + `ccc-lib","` + s + `bbb-glibc","` + s + `aaa-app"],"ultimate":true,"signatures":[]},
"` + s + `bbb-glibc":{"narHash":"sha256-x","narSize":10,"references":[],"ultimate":false,"signatures":["cache.nixos.org-1:xyz"]},
"` + s + `missing":null}`
	array := `[{"path":"` + s + `ccc-lib","narHash":"sha256-x","narSize":10,"references":["` + s + `ddd-dep"],"ultimate":true},
{"path":"` + s + `ddd-dep","narHash":"sha256-x","narSize":10,"references":[],"ultimate":true}]`
	infos, err := parsePathInfos([]byte(object + "\n" + array))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 4 {
		t.Fatalf("read %d infos, want 4", len(infos))
	}
	var got []string
	for _, pi := range toPush(infos) {
		got = append(got, strings.TrimPrefix(pi.Path, s))
	}
	if strings.Join(got, " ") != "ddd-dep ccc-lib aaa-app" {
		t.Errorf("push order %q, want the dependency first and no fetched path", got)
	}
	if _, err := parsePathInfos([]byte("{")); err == nil {
		t.Error("broken JSON was read")
	}
}
